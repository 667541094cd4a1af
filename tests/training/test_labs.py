"""Scoring another lab's slides, the negative-slide simulation, and the filter threshold that respects it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.data.split import DatasetSplit
from training.data.synthetic import write_synthetic_ufam
from training.evaluation.labs import Pair, evaluate_labs, negative_slide
from training.objects.classifier import choose_lab_threshold


def test_negative_slide_grades() -> None:
    clean = negative_slide(0.0)
    assert clean["grade_expected"] == "negative" and clean["probability"]["negative"] == 1.0
    few = negative_slide(0.05)  # 5 false bacilli expected in 100 fields
    assert few["grade_expected"] == "scanty" and few["poisson_95"][0] <= 5 <= few["poisson_95"][1]
    assert few["probability"]["1+"] < 0.05
    bad = negative_slide(1.1)  # the shipped model on UFAM negatives, as the issue measured it
    assert bad["grade_expected"] == "2+" and bad["probability"]["negative"] == 0.0
    assert abs(sum(bad["probability"].values()) - 1.0) < 1e-6


def test_the_threshold_rises_to_the_negative_field_budget_while_recall_allows() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.5, 1.0, 100), rng.uniform(0.0, 0.54, 200)])
    labels = np.concatenate([np.ones(100, np.int8), np.zeros(200, np.int8)])
    negative_field = np.asarray([""] * 100 + [f"n{i % 20}" for i in range(200)])
    first, _ = choose_lab_threshold(scores, labels, np.full(300, ""), 0, target_recall=0.95)
    threshold, rule = choose_lab_threshold(scores, labels, negative_field, 20, target_recall=0.95)
    assert threshold > first and "negative field" in rule
    kept = ((negative_field != "") & (scores >= threshold)).sum() / 20
    assert kept <= 0.05 and (scores[:100] >= threshold).mean() >= 0.9


def test_evaluate_labs_scores_every_pair_and_writes_the_section(
    tmp_path: Path, random_dense_onnx: Path, random_object_filter: Path
) -> None:
    ufam = write_synthetic_ufam(tmp_path / "ufam", slides=3)
    DatasetSplit("ufam", ("S01",), ("S02",), ("S03",)).save(tmp_path / "split.json")
    pairs = [Pair("random + filter", random_dense_onnx, random_object_filter), Pair("random", random_dense_onnx, None)]
    out = tmp_path / "eval"
    rows = evaluate_labs(out, pairs, ufam, tmp_path / "split.json", "test")
    with_filter, without = rows
    assert with_filter["slides"] == ["S03"] and with_filter["negative_fields"] == 1
    assert with_filter["positives"] == without["positives"] > 0
    assert with_filter["found_at_centre"] <= without["found_at_centre"]  # the filter only removes objects
    assert with_filter["false_bacilli_per_field"] <= without["false_bacilli_per_field"]
    assert json.loads((out / "report.json").read_text())["by_lab"]["ufam"][0]["name"] == "random + filter"
    text = (out / "report.md").read_text()
    assert "## By lab: ufam, test slides S03" in text and "100-field negative slide" in text
    assert (out / "gallery-ufam" / "missed_random.jpg").is_file()
