"""The same model patch by patch: its dense heatmap beside a patch-by-patch scan on one crop per field.

The paper's Table 1 shows the two give the same numbers; this comparison shows it for every evaluated model,
with the largest probability difference and the mask pixels that differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.evaluation.report_schema import CropReport, CropScores, Scores
from training.evaluation.scoring import Tally
from training.evaluation.truth import FieldTruth


def crop_region(truth: FieldTruth, side: int) -> tuple[int, int, int, int]:
    """``(y0, x0, height, width)`` of a ``side``-pixel crop centred on the field's first bacillus box (row-major),
    else on the field's centre."""
    height, width = truth.labels.shape
    side_y, side_x = min(side, height), min(side, width)
    bacilli = sorted((b for b in truth.boxes if b.label.is_bacillus), key=lambda b: (b.y, b.x))
    if bacilli:
        cy, cx = bacilli[0].y + bacilli[0].height // 2, bacilli[0].x + bacilli[0].width // 2
    else:
        cy, cx = height // 2, width // 2
    y0 = int(np.clip(cy - side_y // 2, 0, height - side_y))
    x0 = int(np.clip(cx - side_x // 2, 0, width - side_x))
    return y0, x0, side_y, side_x


def _totals(scores: Scores) -> CropScores:
    return {
        "pixel": scores["pixel"],
        "bacillus": scores["bacillus"],
        "mean_abs_count_error": scores["mean_abs_count_error"],
    }


@dataclass
class CropComparison:
    """The first model's dense heatmap and its patch-by-patch scan on the same crops."""

    side: int
    regions: dict[str, list[int]] = field(default_factory=dict)
    dense: Tally = field(default_factory=Tally)
    patch: Tally = field(default_factory=Tally)
    max_abs_difference: float = 0.0
    mask_pixels_differing: int = 0
    patch_seconds: float = 0.0

    def report(self) -> CropReport:
        dense, patch = self.dense.summary(), self.patch.summary()
        pixels = sum(h * w for _, _, h, w in self.regions.values())
        return {
            "side_px": self.side,
            "regions_y0_x0_h_w": self.regions,
            "pixels": pixels,
            "dense_engine": _totals(dense),
            "patch_by_patch": _totals(patch),
            "max_abs_difference": self.max_abs_difference,
            "mask_pixels_differing": self.mask_pixels_differing,
            "identical_metrics": dense["pixel"] == patch["pixel"] and dense["bacillus"] == patch["bacillus"],
            "patch_by_patch_seconds": round(self.patch_seconds, 1),
            "patch_by_patch_seconds_per_megapixel": round(self.patch_seconds / (pixels / 1e6), 1) if pixels else None,
        }
