"""Metric definitions on hand-made masks and boxes with known answers."""

from __future__ import annotations

import math

import numpy as np

from training.data.annotations import Box, BoxLabel
from training.data.box_masks import PixelClass
from training.evaluation.baselines import fit_threshold, red_minus_green, value_histograms
from training.evaluation.metrics import (
    ObjectRules,
    Outcome,
    PixelCounts,
    boxes_from_mask,
    crop_boxes,
    match_objects,
    object_counts,
    pixel_counts,
)


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


def test_match_objects_gives_each_component_and_box_its_outcome() -> None:
    boxes = (
        Box(BoxLabel.SINGLE_BACILLUS, 0, 0, 10, 10),
        Box(BoxLabel.SINGLE_BACILLUS, 40, 40, 10, 10),  # nothing predicted inside: missed
        Box(BoxLabel.UNCLASSIFIED, 20, 0, 10, 10),
    )
    predicted = np.zeros((60, 60), dtype=bool)
    _rect(predicted, 2, 2, 5, 5)  # 25 px inside box 1: TP
    _rect(predicted, 2, 22, 5, 5)  # unclassified: ignored
    _rect(predicted, 30, 2, 5, 5)  # nowhere: FP
    _rect(predicted, 55, 55, 2, 2)  # 4 px: not an object
    match = match_objects(predicted, boxes, ObjectRules(min_object_px=20, min_hit_px=20))
    assert match.found == (True, False)
    outcomes = {
        int(match.components[y, x]): Outcome(match.outcomes[match.components[y, x]])
        for y, x in ((3, 3), (3, 23), (31, 3), (55, 55))
    }
    assert sorted(outcomes.values()) == [
        Outcome.NOT_AN_OBJECT,
        Outcome.TRUE_POSITIVE,
        Outcome.FALSE_POSITIVE,
        Outcome.IGNORED,
    ]
    assert match.mask_of(Outcome.FALSE_POSITIVE).sum() == 25 and match.mask_of(Outcome.FALSE_POSITIVE)[31, 3]
    assert match.counts() == object_counts(predicted, boxes, ObjectRules(min_object_px=20, min_hit_px=20))
    assert (match.counts().true_positives, match.counts().false_positives, match.counts().ignored) == (1, 1, 1)


def test_boxes_from_mask_and_crop_boxes() -> None:
    mask = np.zeros((30, 40), dtype=bool)
    mask[2:5, 3:10] = True  # 21 px
    mask[20, 30] = True  # 1 px
    assert boxes_from_mask(mask) == (
        Box(BoxLabel.SINGLE_BACILLUS, 3, 2, 7, 3),
        Box(BoxLabel.SINGLE_BACILLUS, 30, 20, 1, 1),
    )
    assert boxes_from_mask(mask, min_px=2) == (Box(BoxLabel.SINGLE_BACILLUS, 3, 2, 7, 3),)
    boxes = (
        Box(BoxLabel.SINGLE_BACILLUS, 3, 2, 7, 3),  # straddles the crop's left edge
        Box(BoxLabel.ARTIFACT, 12, 10, 4, 4),  # inside
        Box(BoxLabel.SINGLE_BACILLUS, 30, 20, 1, 1),  # outside
    )
    assert crop_boxes(boxes, y0=0, x0=5, height=15, width=15) == (
        Box(BoxLabel.SINGLE_BACILLUS, 0, 2, 5, 3),
        Box(BoxLabel.ARTIFACT, 7, 10, 4, 4),
    )


def test_colour_baseline_threshold_with_a_known_answer() -> None:
    image = np.zeros((1, 4, 3), dtype=np.uint8)
    image[0, :, 0] = [200, 10, 255, 0]
    image[0, :, 1] = [100, 20, 0, 255]
    assert red_minus_green(image).tolist() == [[100, -10, 255, -255]]
    # bacillus pixels all at R − G = 80; background: 100 at 20 and 5 at 90
    labels = np.array([PixelClass.BACILLUS] * 10 + [PixelClass.BACKGROUND] * 105 + [PixelClass.IGNORE] * 7, np.uint8)
    score = np.array([80.0] * 10 + [20.0] * 100 + [90.0] * 5 + [200.0] * 7, np.float32)
    fit = fit_threshold([value_histograms(score, labels)])
    # any cut in [20, 80) keeps all 10 bacillus pixels and the 5 background ones at 90: F1 = 0.8, the best there is
    assert fit.threshold == 20 and fit.recall == 1.0 and math.isclose(fit.precision, 10 / 15)
    assert math.isclose(fit.f1, 0.8) and fit.fields == 1
