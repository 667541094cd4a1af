"""A field read at the model's scale (:mod:`service.engine.scale`) and its result mapped back to the uploaded pixels.

The field is resampled once, segmented exactly as any field (:meth:`Segmenter.segment
<service.engine.segmenter.Segmenter.segment>`: tiling, the object filter's features and its decisions all at the
model's scale), then the heatmap is resampled back (bilinear), the masks by nearest neighbour, and each object's box,
centroid, outline, area, length and width are divided by the factor, so every coordinate a client receives is in
the image it sent, and µm measurements (pixels × the uploaded field's pixel size) are the same as at the model's
scale. At factor 1 nothing is resampled: the result is the segmenter's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from service.engine.image_io import ResampledTooLarge
from service.engine.postprocess import DetectedObject
from service.engine.scale import FieldScale, ScaleSource, resample, resample_mask, resample_probabilities
from service.engine.scale_estimate import (
    EMPTY_PROBES,
    MIN_OBJECTS,
    PROBE_PIXELS,
    SlideScaleEvidence,
    estimate_and_read,
)
from service.engine.segmenter import Mode, Segmentation, Segmenter


def map_object(o: DetectedObject, factor: float, width: int, height: int) -> DetectedObject:
    """An object found at the model's scale, in the uploaded field's pixels (``factor``: model px per field px)."""
    x, y, w, h = o.bbox
    x0, y0 = math.floor(x / factor), math.floor(y / factor)
    x1, y1 = min(width, math.ceil((x + w) / factor)), min(height, math.ceil((y + h) / factor))
    outline = tuple((round(px / factor), round(py / factor)) for px, py in o.outline)
    return replace(
        o,
        bbox=(x0, y0, max(1, x1 - x0), max(1, y1 - y0)),
        centroid=(round(o.centroid[0] / factor, 3), round(o.centroid[1] / factor, 3)),
        area_px=max(1, round(o.area_px / factor**2)),
        length_px=round(o.length_px / factor, 3),
        width_px=round(o.width_px / factor, 3),
        outline=outline,
    )


def check_resampled_size(scale: FieldScale, width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The field's size at the model's scale.

    Raises:
        ResampledTooLarge: over ``max_pixels`` there.
    """
    size = scale.resampled_size(width, height)
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ResampledTooLarge(
            f"at {scale.microns_per_pixel:g} µm per pixel ({scale.source.value}) the {width}×{height} field is "
            f"{size[0]}×{size[1]} at the model's {scale.model_microns_per_pixel:g} µm per pixel (×{scale.factor:.3g}): "
            f"over the limit of {max_pixels} pixels; send a smaller field or check microns_per_pixel"
        )
    return size


def segment_at_scale(
    segmenter: Segmenter,
    rgb: npt.NDArray[np.uint8],
    scale: FieldScale,
    *,
    find_objects: bool = True,
    object_threshold: float | None = None,
    mode: Mode = Mode.EXACT,
    max_pixels: int | None = None,
    estimate: bool = False,
    slide: SlideScaleEvidence | None = None,
) -> Segmentation:
    """``rgb`` segmented at the model's scale, in the uploaded pixels (module docstring); ``scale`` is recorded on
    the result.

    When the scale is only assumed (nothing told it) and ``estimate`` is on, the model's reference object length
    is known and objects are asked for, the scale is estimated from the field's own kept objects
    (:mod:`service.engine.scale_estimate`) and the result records that estimate instead. With ``slide`` (the
    evidence of the slide the field belongs to, read by this model), the slide's earlier fields are used as that
    module says, and what this field shows is added to ``slide``.

    Raises:
        ResampledTooLarge: the field at the model's scale would be over ``max_pixels``.
        ModeUnavailable: as :meth:`Segmenter.segment`.
    """
    reference = segmenter.scale.object_length_px if segmenter.scale is not None else None
    if estimate and find_objects and scale.source is ScaleSource.ASSUMED and reference is not None:
        result = _estimated(segmenter, rgb, scale, reference, object_threshold, mode, max_pixels, slide)
        if slide is not None and result.scale is not None:
            slide.record(result.scale.own_estimate, result.scale.empty_probe)
        return result
    height, width = rgb.shape[:2]
    if scale.resampled:
        check_resampled_size(scale, width, height, max_pixels)
    result, _ = _read(segmenter, rgb, scale.factor, find_objects, object_threshold, mode)
    return replace(result, scale=scale)


def _read(
    segmenter: Segmenter,
    rgb: npt.NDArray[np.uint8],
    factor: float,
    find_objects: bool,
    object_threshold: float | None,
    mode: Mode,
) -> tuple[Segmentation, list[float]]:
    """The field read at ``factor`` and mapped back, with its kept objects' lengths at the scale it was read at."""
    if factor == 1.0:
        result = segmenter.segment(rgb, find_objects=find_objects, object_threshold=object_threshold, mode=mode)
        return result, [o.length_px for o in result.bacilli]
    height, width = rgb.shape[:2]
    size = max(1, round(width * factor)), max(1, round(height * factor))
    result = segmenter.segment(
        resample(rgb, size), find_objects=find_objects, object_threshold=object_threshold, mode=mode
    )
    applied = size[0] / width  # the factor actually applied (the size is rounded)
    mapped = replace(
        result,
        heatmap=resample_probabilities(result.heatmap, (width, height)),
        mask=resample_mask(result.mask, (width, height)),
        objects=resample_mask(result.objects, (width, height)),
        bacilli=tuple(map_object(o, applied, width, height) for o in result.bacilli),
        rejected=tuple(map_object(o, applied, width, height) for o in result.rejected),
    )
    return mapped, [o.length_px for o in result.bacilli]


def _estimated(
    segmenter: Segmenter,
    rgb: npt.NDArray[np.uint8],
    assumed: FieldScale,
    reference_px: float,
    object_threshold: float | None,
    mode: Mode,
    max_pixels: int | None,
    slide: SlideScaleEvidence | None,
) -> Segmentation:
    """The field read at the scale its own objects (or its slide's earlier fields) suggest
    (:func:`.scale_estimate.estimate_and_read`)."""
    height, width = rgb.shape[:2]
    largest = math.inf if max_pixels is None else math.sqrt(max_pixels / (width * height))
    capped: list[float] = []

    def read(factor: float) -> tuple[Segmentation, list[float]]:
        if factor > largest:
            capped.append(factor)
            factor = largest
        return _read(segmenter, rgb, factor, True, object_threshold, mode)

    def probe(factor: float) -> list[float]:
        share = min(1.0, math.sqrt(PROBE_PIXELS / (width * height * factor**2)))
        h, w = max(1, round(height * share)), max(1, round(width * share))
        y0, x0 = (height - h) // 2, (width - w) // 2
        crop = np.ascontiguousarray(rgb[y0 : y0 + h, x0 : x0 + w])
        return _read(segmenter, crop, factor, True, object_threshold, mode)[1]

    evidence = slide.snapshot() if slide is not None else None
    reading = estimate_and_read(read, reference_px, probe, evidence)
    model_um = assumed.model_microns_per_pixel
    found, pooled = reading.estimate, reading.pooled
    own = (round(found.factor, 4), found.objects) if found is not None else None
    capped_how = (
        f"; the field at ×{capped[-1]:.3g} would be over the pixel limit, read at the largest allowed" if capped else ""
    )
    if pooled is not None and model_um is not None:
        microns = pooled.factor * model_um
        said = (
            f"pixel size estimated from this slide's earlier fields: {pooled.fields} fields' {pooled.objects} kept "
            f"objects give {microns:.4g} µm per pixel (±{pooled.relative_error:.0%}); an estimate, give "
            "microns_per_pixel for a measured one"
        )
        how = (
            f"×{pooled.factor:.2f} lies within the range the model reads as uploaded: not resampled"
            if reading.factor == 1.0
            else f"read once at ×{reading.factor:.3g}"
        )
        how += capped_how
        slide_scale = FieldScale(
            microns, ScaleSource.SLIDE, reading.factor, model_um, (said, how), pooled.relative_error, own, slide=pooled
        )
        return replace(reading.result, scale=slide_scale)
    if found is None or model_um is None:
        objects = len(reading.result.bacilli)
        reason = (
            f"the scale could not be estimated from the field: {objects} kept object(s), at least {MIN_OBJECTS} "
            "are needed; give microns_per_pixel"
        )
        reasons = (*assumed.reasons, reason)
        if reading.probe_skipped and evidence is not None:
            reasons += (
                f"not read ×2 to look for smaller rods: {evidence.empty_probes} earlier fields of this slide (at "
                f"least {EMPTY_PROBES}) showed none that way, and none showed rods as uploaded",
            )
        return replace(reading.result, scale=replace(assumed, reasons=reasons, empty_probe=reading.empty_probe))
    microns = found.factor * model_um
    said = (
        f"pixel size estimated from the field: {found.objects} kept objects of median length "
        f"{found.median_length_px:.1f} px against the model's {reference_px:.1f} px give {microns:.4g} µm per pixel "
        f"(±{found.relative_error:.0%}); an estimate, give microns_per_pixel for a measured one"
    )
    if reading.factor == 1.0:
        how = f"×{found.factor:.2f} lies within the range the model reads as uploaded: not resampled"
    else:
        how = f"read at ×{reading.factor:.3g} ({reading.readings} readings of the field or a part of it)"
    how += capped_how
    scale = FieldScale(
        microns, ScaleSource.ESTIMATED, reading.factor, model_um, (said, how), round(found.relative_error, 4), own
    )
    return replace(reading.result, scale=scale)
