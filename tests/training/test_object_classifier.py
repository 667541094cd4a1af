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


def test_another_labs_candidates_are_labelled_and_grouped_by_slide(tmp_path, random_dense_onnx) -> None:
    """UFAM layout: every candidate of a negative field is debris, named with its field; a positive patch gives
    a bacillus only for the candidate at its centre; the cross-validation groups are slides."""
    from service.engine.model import OnnxModel
    from training.data.synthetic import write_synthetic_ufam
    from training.data.ufam import read_ufam
    from training.objects.samples import collect_ufam_samples

    part = read_ufam(write_synthetic_ufam(tmp_path / "ufam", slides=2))
    model = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    samples, negative_field = collect_ufam_samples(model, part, cache=tmp_path / "cache")
    assert len(samples) == len(negative_field) > 0
    assert set(samples.fields.tolist()) <= {"S01", "S02"}
    debris = samples.labels == 0
    assert (negative_field[debris] != "").all() and (negative_field[~debris] == "").all()
    assert set(negative_field[debris].tolist()) <= {n.field_id for n in part.negatives}
    assert samples.labels.sum() <= len(part.positives)  # at most one bacillus per patch's centre
