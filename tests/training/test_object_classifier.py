"""Training the object filter: labels from the evaluation's rules, the threshold rule, refusing one-class data."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.candidates import FEATURES, find_candidates
from training.data.annotations import Box, BoxLabel
from training.evaluation.metrics import ObjectRules, Outcome
from training.objects.classifier import choose_threshold, fit_filter
from training.objects.samples import ObjectSamples, candidate_outcomes


def test_candidates_get_the_evaluations_verdicts() -> None:
    heat = np.zeros((80, 80), dtype=np.float32)
    heat[5:9, 5:30] = 0.9  # inside a single-bacillus box
    heat[40:45, 40:50] = 0.9  # inside an unclassified box
    heat[60:66, 5:15] = 0.9  # in no box
    boxes = (
        Box(BoxLabel.SINGLE_BACILLUS, 3, 3, 30, 8),
        Box(BoxLabel.UNCLASSIFIED, 38, 38, 15, 10),
    )
    candidates = find_candidates(heat, np.zeros((80, 80, 3), np.uint8))
    assert candidate_outcomes(candidates, boxes, ObjectRules()) == [
        Outcome.TRUE_POSITIVE,
        Outcome.IGNORED,
        Outcome.FALSE_POSITIVE,
    ]


def test_choose_threshold_keeps_the_target_share() -> None:
    scores = np.array([0.95, 0.9, 0.8, 0.5, 0.1, 0.3, 0.2])
    labels = np.array([1, 1, 1, 1, 0, 0, 0], dtype=np.int8)
    assert choose_threshold(scores, labels, 1.0) == 0.5  # every bacillus kept: cut at the lowest one
    assert choose_threshold(scores, labels, 0.75) == 0.8  # three of four kept


def test_one_class_is_refused() -> None:
    samples = ObjectSamples(
        np.zeros((4, len(FEATURES)), np.float32), np.ones(4, np.int8), np.array(list("abcd")), np.ones(4, bool)
    )
    with pytest.raises(ValueError, match="both bacillus and debris"):
        fit_filter(samples)
