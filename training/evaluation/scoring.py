"""Scoring a method's masks against the ground truth: totals, per field and over a threshold sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from training.evaluation.metrics import ObjectCounts, ObjectMatch, ObjectRules, PixelCounts, match_objects, pixel_counts
from training.evaluation.report_schema import FieldScores, Scores
from training.evaluation.truth import FieldTruth

RULES_TEXT = (
    "A predicted object is an 8-connected component of the predicted mask with at least {min_object_px} pixels. "
    "A single-bacillus or bacilli-cluster box is found when at least {min_hit_px} predicted pixels lie inside it. "
    "An object is a true positive when at least {inside_share:.0%} of its pixels lie inside bacillus or cluster "
    "boxes; otherwise it is ignored when that share lies inside 'unclassified red structures' boxes; otherwise it "
    "is a false positive (inside 'artifacts' boxes included). Recall = found boxes / boxes; precision = true "
    "positives / (true + false positives); count error per field = counted objects − boxes (a cluster box counts "
    "once)."
)


def score_mask(
    predicted: npt.NDArray[np.bool_], truth: FieldTruth, rules: ObjectRules
) -> tuple[PixelCounts, ObjectMatch]:
    """Pixel counts and the bacillus-level match of one predicted mask."""
    return pixel_counts(predicted, truth.labels), match_objects(predicted, truth.boxes, rules)


@dataclass
class Tally:
    """What one method accumulates over the fields."""

    pixels: PixelCounts = field(default_factory=PixelCounts)
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    per_field: dict[str, FieldScores] = field(default_factory=dict)
    sweep_pixels: dict[float, PixelCounts] = field(default_factory=dict)
    sweep_objects: dict[float, ObjectCounts] = field(default_factory=dict)

    def add(self, fid: str, pixels: PixelCounts, objects: ObjectCounts) -> None:
        self.pixels, self.objects = self.pixels + pixels, self.objects + objects
        self.per_field[fid] = {
            "pixel": pixels.metrics(),
            "bacillus": objects.metrics(),
            "boxes": objects.boxes,
            "counted": objects.counted,
            "count_error": objects.counted - objects.boxes,
        }

    def add_sweep(self, threshold: float, pixels: PixelCounts, objects: ObjectCounts) -> None:
        self.sweep_pixels[threshold] = self.sweep_pixels.get(threshold, PixelCounts()) + pixels
        self.sweep_objects[threshold] = self.sweep_objects.get(threshold, ObjectCounts()) + objects

    def summary(self) -> Scores:
        errors = [abs(v["count_error"]) for v in self.per_field.values()]
        thresholds = sorted(self.sweep_pixels)
        return {
            "pixel": self.pixels.metrics(),
            "bacillus": self.objects.metrics(),
            "mean_abs_count_error": float(np.mean(errors)) if errors else float("nan"),
            "per_field": self.per_field,
            "sweep": {
                "thresholds": thresholds,
                "pixel": [self.sweep_pixels[t].metrics() for t in thresholds],
                "bacillus": [self.sweep_objects[t].metrics() for t in thresholds],
            },
        }
