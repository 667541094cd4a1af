"""Pixel sizes: the model's, a field's, and resampling a field to the model's scale.

A network with a 45 px receptive field learns rods of one size in pixels. Labs photograph at 40×, 60× or 100×,
with cameras of 0.5 to 24 megapixels, and store resized JPEGs: a bacillus 50 px long on the model's microscope is 12
px on another. So a model folder declares the pixel size of its training fields (``scale.json``, written by
``python -m training pixel-size``: :class:`ModelScale`), and each field is read at that scale:

1. its pixel size is, in this order (:func:`resolve_scale`): ``microns_per_pixel`` given with the request; the lab
   profile's; the image's own resolution metadata when it is credible for a microscope (:func:`metadata_microns`:
   a PNG pHYs, TIFF or JPEG density of at most :data:`CREDIBLE_UM` µm per pixel; 72 or 300 dpi, a screen's or a
   printer's, are not); else it is **assumed** to be the model's (said, with a reason);
2. the field is resampled once by ``factor = field µm / model µm`` (:func:`resample`: area averaging down, bicubic
   up; none within :data:`SAME_SCALE` of 1, so a field at the model's scale is read bit for bit as before);
3. it is segmented exactly as any field (the mosaic equals whole-field inference at the model's scale), and its
   heatmap, masks and objects are mapped back to the uploaded pixels (:mod:`service.engine.rescaled`).

The object filter measures candidates at the model's scale, so its size features mean the same on every
microscope.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.engine.errors import ModelContractError
from service.engine.scale_estimate import SlideEstimate

SCALE_JSON = "scale.json"
FORMAT = "tbseg-scale/1"
SAME_SCALE = 0.05  # a factor within 5% of 1 is read at the uploaded size (rods vary far more than that)
CREDIBLE_UM = (
    2.0  # metadata implying larger pixels than this (µm) is a screen's or printer's resolution, not a microscope's
)
SMALLEST_UM = 0.005
MICRONS_PER_INCH = 25_400.0


class ScaleSource(StrEnum):
    REQUEST = "request"  # microns_per_pixel given with the request
    LAB = "lab"  # the lab profile's pixel size
    METADATA = "metadata"  # the image's own resolution (PNG pHYs, TIFF, JPEG density)
    ESTIMATED = "estimated"  # from the lengths of the objects the model keeps on the field (scale_estimate.py)
    SLIDE = "slide"  # pooled from the estimates of the slide's earlier fields (scale_estimate.py)
    ASSUMED = "assumed"  # nothing known: the model's own scale is assumed
    NATIVE = "model-scale-unknown"  # the model folder declares no pixel size: the field is read as it is


@dataclass(frozen=True)
class ModelScale:
    """The pixel size of a model's training fields (``scale.json``).

    Attributes:
        model_id: the model it describes.
        pixel_size_um: µm per pixel of its training fields.
        how: how it was obtained, in words (e.g. from the length of the annotated single bacilli).
        evidence: the measurements behind it (for people).
        object_length_px: the median length of the objects the model keeps on its training fields, in its pixels:
            the reference a field's scale is estimated against (:mod:`service.engine.scale_estimate`); None: not
            measured, no field's scale is estimated.
    """

    model_id: str
    pixel_size_um: float
    how: str
    evidence: dict[str, Any]
    object_length_px: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def write(self, folder: Path) -> Path:
        path = folder / SCALE_JSON
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> ModelScale:
        """Read a ``scale.json``.

        Raises:
            ModelContractError: unreadable, another format, or a pixel size that is not a positive number.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ModelContractError(f"{path}: format {raw.get('format')!r}, expected {FORMAT}")
            length = raw.get("object_length_px")
            scale = cls(
                str(raw["model_id"]),
                float(raw["pixel_size_um"]),
                str(raw["how"]),
                dict(raw["evidence"]),
                None if length is None else float(length),
            )
        except ModelContractError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelContractError(f"{path}: not a readable scale file ({exc})") from exc
        if not (math.isfinite(scale.pixel_size_um) and scale.pixel_size_um > 0):
            raise ModelContractError(f"{path}: pixel_size_um must be a positive number, got {scale.pixel_size_um}")
        length = scale.object_length_px
        if length is not None and not (math.isfinite(length) and length > 0):
            raise ModelContractError(f"{path}: object_length_px must be a positive number, got {length}")
        return scale


@dataclass(frozen=True)
class FieldScale:
    """The scale a field is read at.

    Attributes:
        microns_per_pixel: the uploaded field's pixel size when known (None when assumed or unknown).
        source: where it came from (:class:`ScaleSource`).
        factor: how much the field is enlarged (> 1) or reduced (< 1) to reach the model's scale; 1: as uploaded.
        model_microns_per_pixel: the model's pixel size, when its folder declares one.
        reasons: what a person should know (an assumed scale, a factor snapped to 1).
        relative_error: an estimated pixel size's relative standard error (None unless ``source`` is estimated or
            slide).
        own_estimate: the field's own estimate ``(factor, objects)`` when it made one (a slide pools them).
        empty_probe: the field showed too few objects as uploaded and read ×2 (a slide counts them).
        slide: the slide's pooled estimate when ``source`` is slide.
    """

    microns_per_pixel: float | None
    source: ScaleSource
    factor: float
    model_microns_per_pixel: float | None
    reasons: tuple[str, ...] = ()
    relative_error: float | None = None
    own_estimate: tuple[float, int] | None = None
    empty_probe: bool = False
    slide: SlideEstimate | None = None

    @property
    def measured_microns(self) -> float | None:
        """The pixel size µm measurements may use: a given or recorded one, never an estimate."""
        estimated = self.source in (ScaleSource.ESTIMATED, ScaleSource.SLIDE)
        return None if estimated else self.microns_per_pixel

    @property
    def resampled(self) -> bool:
        return self.factor != 1.0

    def resampled_size(self, width: int, height: int) -> tuple[int, int]:
        """The field's size at the model's scale."""
        return max(1, round(width * self.factor)), max(1, round(height * self.factor))


def metadata_microns(info: Mapping[Any, Any]) -> float | None:
    """µm per pixel from a decoded image's resolution metadata (Pillow's ``info["dpi"]``: PNG pHYs, TIFF resolution,
    JPEG JFIF density), when it is credible for a microscope; None otherwise."""
    dpi = info.get("dpi")
    try:
        x, y = (float(dpi[0]), float(dpi[1])) if isinstance(dpi, tuple | list) and len(dpi) == 2 else (math.nan,) * 2
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and math.isfinite(y)) or x <= 0 or y <= 0 or abs(x - y) > 0.01 * max(x, y):
        return None  # missing, broken or non-square pixels: not a measurement to rely on
    microns = MICRONS_PER_INCH / x
    return microns if SMALLEST_UM <= microns <= CREDIBLE_UM else None


def resolve_scale(
    model: ModelScale | None,
    request: float | None = None,
    lab: float | None = None,
    metadata: float | None = None,
    lab_id: str | None = None,
) -> FieldScale:
    """The field's scale from what is known of it, in the order of the module docstring.

    Raises:
        ValueError: a given pixel size that is not a positive finite number.
    """
    for name, value in (("microns_per_pixel", request), ("the lab profile's pixel_size_um", lab)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of µm per pixel, got {value}")
    known = (
        (request, ScaleSource.REQUEST, "given with the request"),
        (lab, ScaleSource.LAB, f"lab profile {lab_id}'s" if lab_id else "the lab profile's"),
        (metadata, ScaleSource.METADATA, "the image's resolution metadata"),
    )
    found = next(((v, s, w) for v, s, w in known if v is not None), None)
    if model is None:
        said = () if found is None else ("the model declares no pixel size: the field is read as uploaded",)
        return FieldScale(found[0] if found else None, ScaleSource.NATIVE, 1.0, None, said)
    if found is None:
        reason = (
            f"pixel size unknown (no microns_per_pixel, lab profile or credible image resolution): read as if at the "
            f"model's {model.pixel_size_um:.4g} µm per pixel; on another microscope give microns_per_pixel"
        )
        return FieldScale(None, ScaleSource.ASSUMED, 1.0, model.pixel_size_um, (reason,))
    microns, source, words = found
    factor = microns / model.pixel_size_um
    reasons: tuple[str, ...] = ()
    if abs(factor - 1.0) <= SAME_SCALE:
        if factor != 1.0:
            reasons = (
                f"{microns:.4g} µm per pixel ({words}) is within {SAME_SCALE:.0%} of the model's: not resampled",
            )
        factor = 1.0
    return FieldScale(microns, source, factor, model.pixel_size_um, reasons)


def resample(rgb: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """``rgb`` at ``size`` (width, height): area averaging when reducing, bicubic when enlarging; the same array when
    the size is its own."""
    height, width = rgb.shape[:2]
    if (width, height) == size:
        return rgb
    method = Image.Resampling.BOX if size[0] < width else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(rgb).resize(size, method), dtype=np.uint8)


def resample_probabilities(heatmap: npt.NDArray[np.float32], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """A heatmap at ``size`` (width, height), bilinear (area averaging when reducing), within [0, 1]."""
    height, width = heatmap.shape
    if (width, height) == size:
        return heatmap
    method = Image.Resampling.BOX if size[0] < width else Image.Resampling.BILINEAR
    out = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize(size, method), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def resample_mask(mask: npt.NDArray[np.bool_], size: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """A mask at ``size`` (width, height), nearest neighbour."""
    height, width = mask.shape
    if (width, height) == size:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    return np.asarray(image) > 127
