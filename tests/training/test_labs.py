"""Scoring another lab's slides, the negative-slide simulation, and the filter threshold that respects it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import install_model
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


CARD = """# Model card: `x`

## Known limits

- Trained on 22 fields of one microscope and camera (ZNSM-iDB MS-2); other stains, cameras and magnifications are \
untested. Colour jitter widens, but does not replace, real variety.

## Fast mode

Fast networks.
"""


def test_labs_records_the_folders_own_row_in_its_card(
    tmp_path: Path, random_dense_onnx: Path, random_object_filter: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from service.engine.model_folder import CARD_MD, DENSE_ONNX, OBJECT_FILTER_ONNX
    from training.cli import main
    from training.evaluation.lab_card import BY_LAB_JSON, read_by_lab

    ufam = write_synthetic_ufam(tmp_path / "ufam", slides=3)
    split = tmp_path / "split.json"
    DatasetSplit("ufam", ("S01",), ("S02",), ("S03",)).save(split)
    folder = install_model(tmp_path / "models", random_dense_onnx, random_object_filter, card=CARD, name="m") / "m"
    common = ["labs", "--ufam", str(ufam), "--ufam-split", str(split), "--no-gallery", "--card", str(folder)]

    # the folder's own model without its filter is not the folder's row: refused before any scoring
    assert main([*common, "--pair", f"bare={folder / DENSE_ONNX}", "-o", str(tmp_path / "bare")]) == 2
    assert f"{folder}: no --pair is its own model" in caplog.text and not (tmp_path / "bare").exists()
    assert not (folder / BY_LAB_JSON).exists()

    own = f"own={folder / DENSE_ONNX}:{folder / OBJECT_FILTER_ONNX}"
    pairs = ["--pair", own, "--pair", f"bare={random_dense_onnx}"]
    for run in range(2):  # a second record replaces the first
        assert main([*common, *pairs, "-o", str(tmp_path / f"eval{run}")]) == 0
    row = read_by_lab(folder)
    assert row is not None and row["name"] == "own" and row["filter_id"] is not None and row["slides"] == ["S03"]
    card = (folder / CARD_MD).read_text()
    assert card.count("## By lab") == 1 and card.count("on another lab's microscope") == 1
    assert f"{row['found_at_centre']} of {row['positives']}" in card and row["negative_slide"]["grade_expected"] in card
    assert "are untested. Colour" in card  # only other stains, cameras and magnifications stay untested
    assert "## Fast mode\n\nFast networks." in card  # the other sections are kept
