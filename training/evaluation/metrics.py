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
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from service.engine.defaults import MIN_OBJECT_PX
from training.data.annotations import Box, BoxLabel
from training.data.box_masks import PixelClass

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

    min_object_px: int = MIN_OBJECT_PX
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


class Outcome(IntEnum):
    """What the rules make of one predicted connected component."""

    NOT_AN_OBJECT = 0  # fewer than min_object_px pixels
    TRUE_POSITIVE = 1
    FALSE_POSITIVE = 2
    IGNORED = 3


@dataclass(frozen=True)
class ObjectMatch:
    """Per-object and per-box results of the bacillus-level rules on one field (for counts and pictures).

    Attributes:
        components: ``[y, x]`` int32 labels of the predicted mask's 8-connected components (0 = none).
        outcomes: :class:`Outcome` per component label (index 0 unused).
        bacillus_boxes: the field's ``single bacillus`` and ``bacilli cluster`` boxes.
        found: per bacillus box, whether it was found.
    """

    components: npt.NDArray[np.int32]
    outcomes: npt.NDArray[np.uint8]
    bacillus_boxes: tuple[Box, ...]
    found: tuple[bool, ...]

    def counts(self) -> ObjectCounts:
        return ObjectCounts(
            boxes=len(self.bacillus_boxes),
            found=sum(self.found),
            true_positives=int((self.outcomes == Outcome.TRUE_POSITIVE).sum()),
            false_positives=int((self.outcomes == Outcome.FALSE_POSITIVE).sum()),
            ignored=int((self.outcomes == Outcome.IGNORED).sum()),
        )

    def mask_of(self, outcome: Outcome) -> npt.NDArray[np.bool_]:
        """The pixels of the components with this outcome."""
        chosen: npt.NDArray[np.bool_] = (self.outcomes == outcome)[self.components]
        return chosen


def match_objects(
    predicted: npt.NDArray[np.bool_], boxes: tuple[Box, ...], rules: ObjectRules | None = None
) -> ObjectMatch:
    """Apply the bacillus-level rules (module docstring) to a predicted mask and a field's boxes."""
    rules = rules or ObjectRules()
    bacillus_boxes = tuple(b for b in boxes if b.label.is_bacillus)
    found = tuple(bool(int(predicted[b.slices].sum()) >= rules.min_hit_px) for b in bacillus_boxes)
    components, count = ndi.label(predicted, structure=EIGHT_CONNECTED)
    areas = np.bincount(components.ravel(), minlength=count + 1)
    inside_bacillus = np.bincount(components[_box_mask(predicted.shape, bacillus_boxes)].ravel(), minlength=count + 1)
    unclassified = _box_mask(predicted.shape, (b for b in boxes if b.label is BoxLabel.UNCLASSIFIED))
    inside_unclassified = np.bincount(components[unclassified].ravel(), minlength=count + 1)
    kept = areas >= rules.min_object_px
    kept[0] = False
    tp = kept & (inside_bacillus >= rules.inside_share * areas)
    ignored = kept & ~tp & (inside_unclassified >= rules.inside_share * areas)
    outcomes = np.full(count + 1, Outcome.NOT_AN_OBJECT, dtype=np.uint8)
    outcomes[kept] = Outcome.FALSE_POSITIVE
    outcomes[tp] = Outcome.TRUE_POSITIVE
    outcomes[ignored] = Outcome.IGNORED
    return ObjectMatch(components.astype(np.int32, copy=False), outcomes, bacillus_boxes, found)


def object_counts(
    predicted: npt.NDArray[np.bool_], boxes: tuple[Box, ...], rules: ObjectRules | None = None
) -> ObjectCounts:
    """Bacillus-level counts of a predicted mask against a field's boxes (rules in the module docstring)."""
    return match_objects(predicted, boxes, rules).counts()


def boxes_from_mask(mask: npt.NDArray[np.bool_], min_px: int = 1) -> tuple[Box, ...]:
    """Ground-truth boxes for a field known only by a pixel mask: one ``single bacillus`` box per 8-connected
    component of at least ``min_px`` pixels (its bounding box)."""
    components, _ = ndi.label(mask, structure=EIGHT_CONNECTED)
    boxes = []
    for index, found in enumerate(ndi.find_objects(components), start=1):
        if found is None or int((components[found] == index).sum()) < min_px:
            continue
        rows, cols = found
        width, height = cols.stop - cols.start, rows.stop - rows.start
        boxes.append(Box(BoxLabel.SINGLE_BACILLUS, cols.start, rows.start, width, height))
    return tuple(boxes)


def crop_boxes(boxes: Iterable[Box], y0: int, x0: int, height: int, width: int) -> tuple[Box, ...]:
    """The boxes as seen in the crop ``[y0, y0+height) × [x0, x0+width)``, in the crop's coordinates."""
    shifted = (Box(b.label, b.x - x0, b.y - y0, b.width, b.height).clipped(width, height) for b in boxes)
    return tuple(b for b in shifted if b is not None)
