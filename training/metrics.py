"""Segmentation metrics: pixel level (the paper's definitions) and bacillus level (what a microscopist counts).

Pixel level, over every pixel that is not IGNORE (``unclassified red structures`` boxes):
accuracy = (TP + TN) / all, recall = TP / (TP + FN), precision = TP / (TP + FP), F1 their harmonic mean.
When the ground truth was derived from boxes it is approximate, and reports say so.

Bacillus level, rules (:class:`ObjectRules`):

* a predicted object is an 8-connected component of the predicted mask with at least ``min_object_px``
  pixels (smaller ones are noise, the same rule for every model);
* a ground-truth ``single bacillus`` or ``bacilli cluster`` box is *found* when at least ``min_hit_px``
  predicted pixels lie inside it;
* a predicted object is a *true positive* when at least ``inside_share`` of its pixels lie inside bacillus or
  cluster boxes; otherwise it is *ignored* when that share of it lies inside ``unclassified red structures``
  boxes; otherwise it is a *false positive* (inside ``artifacts`` boxes included);
* recall = found boxes / boxes; precision = true-positive objects / (true-positive + false-positive objects);
  count error per field = counted objects (TP + FP) − bacillus and cluster boxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from training.annotations import Box, BoxLabel
from training.box_masks import PixelClass

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _f1(precision: float, recall: float) -> float:
    if np.isnan(precision) or np.isnan(recall) or precision + recall == 0:
        return float("nan") if np.isnan(precision) or np.isnan(recall) else 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class PixelCounts:
    """Confusion counts over pixels; add them across fields, then read the metrics."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def metrics(self) -> dict[str, float]:
        recall, precision = _ratio(self.tp, self.tp + self.fn), _ratio(self.tp, self.tp + self.fp)
        return {
            "accuracy": _ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn),
            "recall": recall,
            "precision": precision,
            "f1": _f1(precision, recall),
            **{k: float(v) for k, v in asdict(self).items()},
        }


def pixel_counts(predicted: npt.NDArray[np.bool_], labels: npt.NDArray[np.uint8]) -> PixelCounts:
    """Confusion counts of a predicted mask against a :class:`PixelClass` label map (IGNORE left out)."""
    scored = labels != PixelClass.IGNORE
    truth = labels == PixelClass.BACILLUS
    return PixelCounts(
        tp=int((predicted & truth).sum()),
        fp=int((predicted & ~truth & scored).sum()),
        fn=int((~predicted & truth).sum()),
        tn=int((~predicted & ~truth & scored).sum()),
    )


@dataclass(frozen=True)
class ObjectRules:
    """The bacillus-level matching rules (module docstring)."""

    min_object_px: int = 20
    min_hit_px: int = 20
    inside_share: float = 0.5


@dataclass(frozen=True)
class ObjectCounts:
    """Bacillus-level counts; add them across fields, then read the metrics."""

    boxes: int = 0
    found: int = 0
    true_positives: int = 0
    false_positives: int = 0
    ignored: int = 0

    def __add__(self, other: ObjectCounts) -> ObjectCounts:
        return ObjectCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    @property
    def counted(self) -> int:
        return self.true_positives + self.false_positives

    def metrics(self) -> dict[str, float]:
        recall = _ratio(self.found, self.boxes)
        precision = _ratio(self.true_positives, self.counted)
        return {
            "recall": recall,
            "precision": precision,
            "f1": _f1(precision, recall),
            **{k: float(v) for k, v in asdict(self).items()},
        }


def _box_mask(shape: tuple[int, int], boxes: Iterable[Box]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box.slices] = True
    return mask


def object_counts(
    predicted: npt.NDArray[np.bool_], boxes: tuple[Box, ...], rules: ObjectRules | None = None
) -> ObjectCounts:
    """Bacillus-level counts of a predicted mask against a field's boxes (rules in the module docstring)."""
    rules = rules or ObjectRules()
    bacillus_boxes = [b for b in boxes if b.label.is_bacillus]
    found = sum(int(predicted[b.slices].sum()) >= rules.min_hit_px for b in bacillus_boxes)
    components, count = ndi.label(predicted, structure=EIGHT_CONNECTED)
    if count == 0:
        return ObjectCounts(boxes=len(bacillus_boxes), found=found)
    areas = np.bincount(components.ravel(), minlength=count + 1)
    inside_bacillus = np.bincount(components[_box_mask(predicted.shape, bacillus_boxes)].ravel(), minlength=count + 1)
    unclassified = _box_mask(predicted.shape, (b for b in boxes if b.label is BoxLabel.UNCLASSIFIED))
    inside_unclassified = np.bincount(components[unclassified].ravel(), minlength=count + 1)
    kept = areas >= rules.min_object_px
    kept[0] = False
    tp = kept & (inside_bacillus >= rules.inside_share * areas)
    ignored = kept & ~tp & (inside_unclassified >= rules.inside_share * areas)
    fp = kept & ~tp & ~ignored
    return ObjectCounts(
        boxes=len(bacillus_boxes),
        found=found,
        true_positives=int(tp.sum()),
        false_positives=int(fp.sum()),
        ignored=int(ignored.sum()),
    )
