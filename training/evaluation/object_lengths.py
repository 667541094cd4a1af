"""The lengths of the objects a model keeps: the reference a field's scale is estimated against, and a lab's pixel
size estimated from its unannotated fields (``python -m training pixel-size``; :mod:`service.engine.scale_estimate`).

The reference is the median length of the objects the model keeps on its own training fields, read as the service
reads a field by default (fast mode when the folder has it). A lab's fields, pooled, give a far steadier median than
one field: :func:`estimate_lab` reads them at a factor, takes the pooled median length of their kept objects, and
reads them again at the factor that median implies until it moves by less than :data:`POOLED_TOLERANCE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.rescaled import segment_at_scale
from service.engine.scale import FieldScale, ScaleSource
from service.engine.scale_estimate import factor_from_lengths
from service.engine.segmenter import Mode, Segmenter

POOLED_TOLERANCE = 0.05
POOLED_ROUNDS = 4


def _mode(segmenter: Segmenter) -> Mode:
    return Mode.FAST if Mode.FAST in segmenter.modes else Mode.EXACT


def kept_lengths(segmenter: Segmenter, rgb: npt.NDArray[np.uint8], factor: float = 1.0) -> list[float]:
    """The lengths of the objects the model keeps on ``rgb`` read at ``factor``, in the pixels it was read at."""
    model_um = segmenter.scale.pixel_size_um if segmenter.scale is not None else 1.0
    scale = FieldScale(model_um * factor, ScaleSource.REQUEST, factor, model_um)
    result = segment_at_scale(segmenter, rgb, scale, mode=_mode(segmenter))
    return [o.length_px * factor for o in result.bacilli]


@dataclass(frozen=True)
class ReferenceLength:
    """The median kept-object length over a model's training fields."""

    fields: int
    objects: int
    median_px: float
    iqr_px: tuple[float, float]

    def evidence(self) -> dict[str, object]:
        return {
            "object_length_fields": self.fields,
            "object_length_objects": self.objects,
            "object_length_px_median": round(self.median_px, 2),
            "object_length_px_iqr": [round(v, 2) for v in self.iqr_px],
            "object_length_mode": "fast (the service's default) where the folder has it",
        }


def reference_length(segmenter: Segmenter, images: Sequence[npt.NDArray[np.uint8] | Path]) -> ReferenceLength:
    """The median length of the objects ``segmenter`` keeps on its training fields, read as uploaded.

    Raises:
        ValueError: no object kept on any field.
    """
    from training.data.dataset import read_rgb

    lengths: list[float] = []
    for image in tqdm(images, desc="object lengths", unit="field", leave=False):
        rgb = read_rgb(image) if isinstance(image, Path) else image
        lengths.extend(kept_lengths(segmenter, rgb))
    if not lengths:
        raise ValueError(f"the model keeps no object on the {len(images)} fields: no reference length")
    q1, q3 = np.percentile(lengths, [25, 75])
    return ReferenceLength(len(images), len(lengths), float(np.median(lengths)), (float(q1), float(q3)))


@dataclass(frozen=True)
class LabEstimate:
    """A lab's factor (field pixels × factor = the model's) from its fields pooled, each round's reading."""

    factor: float | None
    rounds: list[dict[str, float | int | None]]
    per_field: list[float | None]

    def microns(self, model_um: float) -> float | None:
        return None if self.factor is None else self.factor * model_um


def estimate_lab(segmenter: Segmenter, images: Sequence[Path], reference_px: float) -> LabEstimate:
    """The factor implied by the pooled kept-object lengths of a lab's fields (module docstring); per field too,
    from the last round's reading."""
    from training.data.dataset import read_rgb

    fields = [read_rgb(p) for p in images]
    factor, rounds = 1.0, []
    per_field: list[float | None] = []
    for _ in range(POOLED_ROUNDS):
        by_field = [kept_lengths(segmenter, rgb, factor) for rgb in tqdm(fields, desc=f"×{factor:.3g}", leave=False)]
        pooled = factor_from_lengths([v for f in by_field for v in f], factor, reference_px)
        per_field = [
            e.factor if (e := factor_from_lengths(f, factor, reference_px)) is not None else None for f in by_field
        ]
        rounds.append(
            {
                "read_at": round(factor, 4),
                "objects": sum(len(f) for f in by_field),
                "estimate": None if pooled is None else round(pooled.factor, 4),
                "relative_error": None if pooled is None else round(pooled.relative_error, 4),
            }
        )
        if pooled is None:
            return LabEstimate(None, rounds, per_field)
        if math.isclose(pooled.factor, factor, rel_tol=POOLED_TOLERANCE):
            return LabEstimate(pooled.factor, rounds, per_field)
        factor = pooled.factor
    return LabEstimate(factor, rounds, per_field)
