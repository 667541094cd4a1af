"""``python -m training evaluate`` end to end on generated fields: every method, the patch-by-patch crops, the
report, the curve and the gallery, with boxes, with masks only, and with an override masks folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine.model import OnnxModel
from training.cli import main
from training.data.dataset import AnnotationKind
from training.data.split import DatasetSplit
from training.data.synthetic import synthetic_field, write_dataset, write_synthetic_ufam
from training.paths import SHIPPED_MODEL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def patch_keras(random_patch_cnn, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "model.keras"
    random_patch_cnn.save(path)
    return path


def _dataset(root: Path, kind: AnnotationKind, count: int = 4) -> Path:
    fields = [
        synthetic_field(i, height=96, width=128, background=("pink", "blue", "green")[i % 3]) for i in range(count)
    ]
    write_dataset(root, fields, kind)
    return root


def _run(args: list[str]) -> dict:
    """``evaluate`` on synthetic data; the by-lab rows on the real UFAM slides are left out unless asked for."""
    if "--ufam" not in args:
        args = [*args, "--no-ufam"]
    assert main(["evaluate", *args]) == 0
    out = Path(args[args.index("-o") + 1])
    return json.loads((out / "report.json").read_text())


def test_evaluate_everything_side_by_side(tmp_path: Path, random_dense_onnx: Path, patch_keras: Path) -> None:
    data = _dataset(tmp_path / "data", AnnotationKind.ZNSM_CSV, count=6)
    split = tmp_path / "split.json"
    assert main(["split", "--data", str(data), "-o", str(split), "--test-fraction", "0.34"]) == 0
    shipped = SHIPPED_MODEL
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["--data", str(data), "--split", str(split), "--cache", str(cache), "--crop", "40"]
    report = _run(
        [
            *common,
            "--model",
            str(random_dense_onnx),
            "--patch-model",
            str(patch_keras),
            "--variants",
            str(shipped),
            str(random_dense_onnx),
            "-o",
            str(out),
        ]
    )

    assert report["subset"] == "test" and len(report["fields"]) == 2
    names = [m["name"] for m in report["methods"]]
    shipped_recipe = OnnxModel(shipped, providers=("CPUExecutionProvider",)).meta.raw["recipe"]
    assert names == ["model under test", f"recipe {shipped_recipe}", "colour baseline (R − G)"]  # repeat skipped
    baseline = report["methods"][2]
    assert baseline["fit"]["fitted_on"] == "train split" and baseline["fit"]["fields"] == 3
    assert report["ground_truth"].startswith("pixel masks derived from boxes (approximate)")
    for method in report["methods"]:
        per_field = method["per_field"].values()
        for level in ("pixel", "bacillus"):
            keys = ("tp", "fp", "fn", "tn") if level == "pixel" else ("boxes", "found", "true_positives")
            for key in keys:  # the totals are the sums over the fields
                assert method[level][key] == sum(f[level][key] for f in per_field)
        sweep = method["sweep"]
        assert method["threshold"] in sweep["thresholds"]
        at_operating_point = sweep["bacillus"][sweep["thresholds"].index(method["threshold"])]
        assert at_operating_point == method["bacillus"]
        recalls = [m["recall"] for m in sweep["pixel"]]
        assert recalls == sorted(recalls, reverse=True)  # a higher cut never finds more

    crops = report["patch_by_patch_crops"]
    assert crops["identical_metrics"] is True and crops["max_abs_difference"] < 1e-5
    assert (
        crops["mask_pixels_differing"] == 0
        and crops["patch_by_patch"]["pixel"]["tp"] + crops["patch_by_patch"]["pixel"]["fn"] > 0
    )  # the crops hold bacillus pixels

    markdown = (out / "report.md").read_text()
    assert f"| recipe {shipped_recipe} (tbseg-{shipped_recipe}-" in markdown and "identical metrics: True" in markdown
    with Image.open(out / "pr_curve.png") as curve:
        assert curve.format == "PNG" and curve.width > 500
    for fid in report["fields"]:
        with Image.open(out / "gallery" / f"{fid}.jpg") as picture:
            assert picture.size == (64, 48)
    assert (out / "gallery" / "false_positives.jpg").is_file() and (out / "gallery" / "missed.jpg").is_file()

    # the by-lab rows: the same model on another lab's slides (a small synthetic set in the UFAM layout)
    ufam = write_synthetic_ufam(tmp_path / "ufam", slides=3)
    DatasetSplit("ufam", ("S01",), ("S02",), ("S03",)).save(tmp_path / "ufam.json")
    ufam_args = ["--ufam", str(ufam), "--ufam-split", str(tmp_path / "ufam.json")]
    by_lab = _run(
        [
            *common,
            "--model",
            str(random_dense_onnx),
            "--no-patch",
            "--no-gallery",
            *ufam_args,
            "-o",
            str(tmp_path / "o3"),
        ]
    )
    (row,) = by_lab["by_lab"]["ufam"]
    assert row["slides"] == ["S03"] and row["model_id"] == by_lab["model_id"] and row["negative_fields"] == 1
    assert "## By lab: ufam, test slides S03" in (tmp_path / "o3" / "report.md").read_text()

    # a second run reads every heatmap from the cache
    again = _run([*common, "--model", str(random_dense_onnx), "--no-patch", "--no-gallery", "-o", str(tmp_path / "o2")])
    assert again["inference"]["seconds"] == 0 and again["bacillus"] == report["bacillus"]


def test_evaluate_mask_only_data_and_an_override_masks_folder(tmp_path: Path, random_dense_onnx: Path) -> None:
    data = _dataset(tmp_path / "data", AnnotationKind.MASK_PNG, count=3)
    out = tmp_path / "out"
    args = ["--data", str(data), "--model", str(random_dense_onnx), "--no-patch", "--cache", str(tmp_path / "c")]
    report = _run([*args, "-o", str(out)])
    assert report["subset"] == "all"  # the shipped split does not name these fields
    assert report["ground_truth"] == "exact pixel masks; bacillus-level boxes are the bounding boxes of mask components"
    assert report["methods"][1]["fit"]["fitted_on"] == "the scored fields"
    assert report["bacillus"]["boxes"] > 0

    # an override folder where every mask is empty: no bacillus pixel, so pixel recall is undefined
    masks = tmp_path / "override"
    masks.mkdir()
    for fid in report["fields"]:
        Image.fromarray(np.zeros((96, 128), np.uint8)).save(masks / f"{fid}.png")
    empty = _run([*args, "--masks", str(masks), "--baseline-threshold", "40", "-o", str(tmp_path / "o2")])
    assert empty["ground_truth"].startswith("pixel masks from the --masks folder")
    assert empty["pixel"]["tp"] == 0 and empty["pixel"]["fn"] == 0
    assert empty["methods"][1]["threshold"] == 40


def test_evaluate_names_a_missing_override_mask(
    tmp_path: Path, random_dense_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _dataset(tmp_path / "data", AnnotationKind.ZNSM_CSV, count=1)
    (tmp_path / "masks").mkdir()
    args = ["--data", str(data), "--model", str(random_dense_onnx), "--no-patch", "--no-baseline"]
    code = main(
        [
            "evaluate",
            *args,
            "--masks",
            str(tmp_path / "masks"),
            "--cache",
            str(tmp_path / "c"),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "no synthetic-0.png or synthetic-0_mask.png for field synthetic-0" in caplog.text
