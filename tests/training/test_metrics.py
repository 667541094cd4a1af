"""Metric definitions on hand-made masks and boxes with known answers."""

from __future__ import annotations

import math

import numpy as np

from training.annotations import Box, BoxLabel
from training.box_masks import PixelClass
from training.metrics import ObjectRules, PixelCounts, object_counts, pixel_counts


def test_pixel_counts_and_the_papers_formulas() -> None:
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[0:2, 0:5] = PixelClass.BACILLUS  # 10 truth pixels
    labels[9, :] = PixelClass.IGNORE  # 10 pixels left out
    predicted = np.zeros((10, 10), dtype=bool)
    predicted[0, 0:5] = True  # 5 TP
    predicted[5, 0:3] = True  # 3 FP
    predicted[9, 0:4] = True  # on IGNORE: not counted
    counts = pixel_counts(predicted, labels)
    assert counts == PixelCounts(tp=5, fp=3, fn=5, tn=77)
    m = counts.metrics()
    assert m["accuracy"] == (5 + 77) / 90
    assert m["recall"] == 0.5 and m["precision"] == 5 / 8
    assert math.isclose(m["f1"], 2 * 0.5 * 0.625 / 1.125)
    assert (counts + counts).tp == 10


def test_empty_prediction_has_undefined_precision() -> None:
    m = PixelCounts(tp=0, fp=0, fn=4, tn=10).metrics()
    assert m["recall"] == 0 and math.isnan(m["precision"]) and math.isnan(m["f1"])


def _rect(mask: np.ndarray, y: int, x: int, h: int, w: int) -> None:
    mask[y : y + h, x : x + w] = True


def test_object_rules_with_known_answers() -> None:
    boxes = (
        Box(BoxLabel.SINGLE_BACILLUS, 10, 10, 20, 10),  # found by object A
        Box(BoxLabel.BACILLI_CLUSTER, 50, 10, 30, 30),  # found by object B
        Box(BoxLabel.SINGLE_BACILLUS, 10, 60, 20, 10),  # missed: only 6 predicted pixels inside
        Box(BoxLabel.UNCLASSIFIED, 60, 60, 20, 20),
        Box(BoxLabel.ARTIFACT, 100, 100, 20, 20),
    )
    predicted = np.zeros((140, 140), dtype=bool)
    _rect(predicted, 12, 12, 5, 15)  # A: 75 px, all inside box 1 -> TP
    _rect(predicted, 20, 55, 4, 30)  # B: 120 px, 25 of them outside the cluster box: 79% inside -> TP
    _rect(predicted, 62, 12, 2, 3)  # 6 px in box 3: below min_object_px, and too few to find box 3
    _rect(predicted, 62, 62, 5, 10)  # in the unclassified box: ignored
    _rect(predicted, 102, 102, 6, 6)  # in the artifact box: FP
    _rect(predicted, 125, 5, 5, 10)  # in no box: FP
    _rect(predicted, 0, 130, 3, 3)  # 9 px speck: not an object
    counts = object_counts(predicted, boxes, ObjectRules(min_object_px=20, min_hit_px=20, inside_share=0.5))
    assert (counts.boxes, counts.found) == (3, 2)
    assert (counts.true_positives, counts.false_positives, counts.ignored) == (2, 2, 1)
    m = counts.metrics()
    assert m["recall"] == 2 / 3 and m["precision"] == 0.5
    assert counts.counted - counts.boxes == 1


def test_mostly_outside_is_a_false_positive_and_diagonals_connect() -> None:
    boxes = (Box(BoxLabel.SINGLE_BACILLUS, 0, 0, 10, 10),)
    predicted = np.zeros((40, 40), dtype=bool)
    _rect(predicted, 5, 5, 5, 5)  # 25 px inside
    _rect(predicted, 10, 10, 5, 10)  # 50 px outside, touching diagonally: one object, 1/3 inside
    counts = object_counts(predicted, boxes, ObjectRules(min_object_px=1, min_hit_px=20))
    assert (counts.found, counts.true_positives, counts.false_positives) == (1, 0, 1)
