"""``python -m training finetune``: a lab's own model folder from a few annotated fields (synthetic, small)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from service.engine.model import OnnxModel
from service.engine.model_folder import DENSE_ONNX, PATCH_KERAS, open_folder
from service.engine.segmenter import Segmenter
from tests.conftest import install_model
from training.cli import main
from training.data.dataset import AnnotationKind
from training.data.synthetic import synthetic_field, write_dataset, write_synthetic_ufam
from training.fit.lab_data import read_lab, split_by_field


@pytest.fixture(scope="module")
def base_folder(random_patch_cnn, random_dense_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of the random model, with the patch CNN fine-tuning starts from."""
    models = install_model(tmp_path_factory.mktemp("base") / "models", random_dense_onnx, name="base")
    random_patch_cnn.save(models / "base" / PATCH_KERAS)
    return models / "base"


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The base lab's data (ZNSM layout) and its split."""
    root = tmp_path_factory.mktemp("replay")
    fields = [synthetic_field(i, height=96, width=128, background=("pink", "blue", "green")[i % 3]) for i in range(6)]
    data = write_dataset(root / "data", fields, AnnotationKind.ZNSM_CSV)
    split = root / "split.json"
    assert main(["split", "--data", str(data), "-o", str(split), "--test-fraction", "0.34"]) == 0
    return data, split


def _finetune(base: Path, data: Path, out: Path, replay: tuple[Path, Path], *more: str) -> int:
    return main(
        [
            "finetune",
            "--base",
            str(base),
            "--data",
            str(data),
            "--replay-data",
            str(replay[0]),
            "--replay-split",
            str(replay[1]),
            "--epochs",
            "1",
            "--cache",
            str(out.parent / "cache"),
            "-o",
            str(out),
            *more,
        ]
    )


def test_finetune_on_points_changes_the_weights_and_writes_a_servable_folder(
    tmp_path: Path, base_folder: Path, replay: tuple[Path, Path]
) -> None:
    fields = [synthetic_field(30 + i, height=96, width=128, background="blue") for i in range(5)]
    fields.append(synthetic_field(40, height=96, width=128, background="blue", rods=0, clusters=0, field_id="neg"))
    lab = write_dataset(tmp_path / "lab", fields, AnnotationKind.POINTS_CSV)
    out = tmp_path / "lab-model"
    assert _finetune(base_folder, lab, out, replay, "--pixel-calibration", "lab") == 0

    before = keras.models.load_model(base_folder / PATCH_KERAS).get_weights()
    after = keras.models.load_model(out / PATCH_KERAS).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))

    folder = open_folder(out)  # what the service opens: dense network, filter of that network
    base_id = open_folder(base_folder).model_id
    assert folder.model_id != base_id and folder.recipe == "finetuned"
    model = OnnxModel(out / DENSE_ONNX, providers=("CPUExecutionProvider",))
    assert model.meta.raw["base_model"] == base_id
    result = Segmenter(model, tile_px=64).segment(fields[0].image)
    assert result.heatmap.shape == fields[0].image.shape[:2]
    assert folder.fast_files("int8") is not None and "## Fast mode" in folder.card()  # it runs mode=fast too
    assert "of the lab's fine-tune fields" in folder.card()  # its int8 copies calibrated on the lab's fields too

    record = json.loads((out / "finetune.json").read_text())
    assert record["base_model_id"] == base_id and record["model_id"] == folder.model_id
    assert len(record["lab"]["held_out_fields"]) == 2 and len(record["lab"]["fine_tune_fields"]) == 4
    assert record["patches"]["replay"] > 0 and record["calibration"]["scale"] > 0
    assert set(record["comparison"]) == {"lab held-out", "znsm-test"}
    held = record["comparison"]["lab held-out"]
    assert [row["model_id"] for row in held] == [base_id, folder.model_id]
    assert all(0 <= row["recall"] <= 1 for row in held)
    assert set(record["wall_seconds"]) >= {"patches", "training", "calibration", "object filter", "coarse network"}
    # the fine-tuned folder reads its comparisons in fast mode (its coarse pass is written before them); the base
    # folder here has no coarse network, so it is read in exact mode; the cost was said before they started
    assert [row["mode"] for row in held] == ["exact", "fast"]
    estimate = record["comparison_estimate"]
    assert estimate["modes"] == {"base": "exact", "fine-tuned": "fast"}
    assert estimate["images"] == 2 + 2  # 2 held-out fields, 2 ZNSM test fields
    assert estimate["megapixels"] == round(4 * 96 * 128 / 1e6, 2) and estimate["estimated_inference_seconds"] > 0
    card = (out / "MODEL_CARD.md").read_text()
    assert folder.model_id in card and base_id in card and "python -m training finetune" in card
    assert "### lab held-out" in card and "### znsm-test" in card


def test_finetune_reads_a_ufam_style_lab_with_its_own_held_out_folder(
    tmp_path: Path, base_folder: Path, replay: tuple[Path, Path]
) -> None:
    lab = write_synthetic_ufam(tmp_path / "lab", slides=3)
    held = write_synthetic_ufam(tmp_path / "held", slides=2, seed=7)
    out = tmp_path / "ufam-model"
    assert _finetune(base_folder, lab, out, replay, "--held-out", str(held), "--no-znsm-test") == 0
    record = json.loads((out / "finetune.json").read_text())
    assert record["lab"]["kind"].startswith("negative fields + point-centred patches")
    assert record["lab"]["held_out_how"] == f"held-out fields from {held}" and record["calibration"] is None
    if record["filter"] is not None:  # the random model's candidates may hold one class only: then no filter
        assert "on the lab's 2 held-out negative fields" in record["filter"]["threshold_rule"]
    assert set(record["comparison"]) == {"lab held-out"}
    assert record["comparison"]["lab held-out"][0]["negative_fields"] == 2
    assert open_folder(out).model_id == record["model_id"]


def test_finetune_refuses_what_it_cannot_use(
    tmp_path: Path, random_dense_onnx: Path, base_folder: Path, replay: tuple[Path, Path], caplog
) -> None:
    bare = install_model(tmp_path / "models", random_dense_onnx, name="bare") / "bare"
    lab = write_dataset(tmp_path / "lab", [synthetic_field(50, height=96, width=128)], AnnotationKind.POINTS_CSV)
    assert _finetune(bare, lab, tmp_path / "a", replay) == 2
    assert "no patch CNN to fine-tune from" in caplog.text
    assert _finetune(base_folder, lab, tmp_path / "b", replay) == 2
    assert "fine-tuning needs at least 2" in caplog.text
    assert _finetune(tmp_path, lab, tmp_path / "c", replay) == 2
    assert "not a model folder" in caplog.text


def test_split_by_field_is_seeded_and_keeps_both_sides(tmp_path: Path) -> None:
    ids = tuple(f"f{i}" for i in range(10))
    train, held = split_by_field(ids, 0.3, seed=1)
    assert len(held) == 3 and set(train) | set(held) == set(ids) and not set(train) & set(held)
    assert split_by_field(ids, 0.3, seed=1) == (train, held)
    assert split_by_field(("a", "b"), 0.9, seed=0)[0]  # never everything held out
    lab = read_lab(write_synthetic_ufam(tmp_path / "u", slides=2))
    assert lab.part(lab.field_ids[:1]).field_ids == lab.field_ids[:1]


def test_the_held_out_threshold_keeps_the_negative_budget() -> None:
    from sklearn.ensemble import RandomForestClassifier

    from training.fit.finetune import held_out_threshold
    from training.objects.classifier import FilterFit
    from training.objects.samples import ObjectSamples

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int8)
    classifier = RandomForestClassifier(n_estimators=20, random_state=0).fit(features, labels)
    fit = FilterFit(classifier, 0.1, {"threshold_rule": "out of fold"}, 100.0)
    negative = np.where(labels == 0, np.asarray([f"n{i % 4}" for i in range(200)]), "")
    samples = ObjectSamples(features, labels, np.full(200, "f"), np.zeros(200, bool))
    tuned = held_out_threshold(fit, samples, negative.astype(str), budget=0.5)
    scores = classifier.predict_proba(features)[:, 1]
    kept = ((negative != "") & (scores >= tuned.threshold)).sum() / 4
    assert kept <= 0.5 and tuned.threshold > fit.threshold
    assert tuned.cross_validation["out_of_fold_threshold"] == 0.1
    lower = tuned.threshold - 0.01
    assert ((negative != "") & (scores >= lower)).sum() / 4 > 0.5  # the lowest such threshold
    assert held_out_threshold(fit, samples, np.full(200, ""), budget=0.5) is fit  # no negative field: unchanged


def test_without_negative_fields_the_filter_never_keeps_whatever_the_debris_costs() -> None:
    from sklearn.ensemble import RandomForestClassifier

    from training.fit.finetune import _no_negative_rule, held_out_threshold
    from training.objects.classifier import FilterFit
    from training.objects.samples import ObjectSamples

    rng = np.random.default_rng(1)
    features = rng.normal(size=(120, 3)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int8)
    classifier = RandomForestClassifier(n_estimators=20, random_state=0).fit(features, labels)
    fit = FilterFit(classifier, 0.05, {"threshold_rule": "highest keeping 95% of bacillus candidates"}, 100.0)
    raised = _no_negative_rule(fit, base_threshold=0.31)  # no negative field, not exhaustive: the base's threshold
    assert raised.threshold == 0.31 and raised.cross_validation["out_of_fold_threshold"] == 0.05
    assert "annotate negative fields" in raised.cross_validation["threshold_rule"]
    assert _no_negative_rule(fit, base_threshold=None).threshold == 0.05  # nothing better known: said so
    # exhaustively annotated: every candidate off a box on the 3 held-out fields is a false bacillus
    fields = np.asarray([f"h{i % 3}" for i in range(120)])
    samples = ObjectSamples(features, labels, fields, np.zeros(120, bool))
    off_box = np.where(labels == 0, fields, "").astype(str)
    tuned = held_out_threshold(fit, samples, off_box, 0.5, fields=3, which="fields (annotated exhaustively)")
    scores = classifier.predict_proba(features)[:, 1]
    assert ((labels == 0) & (scores >= tuned.threshold)).sum() / 3 <= 0.5 < ((labels == 0) & (scores >= 0.05)).sum()
    assert "3 held-out fields (annotated exhaustively)" in tuned.cross_validation["threshold_rule"]


def test_a_labs_fields_at_another_scale_are_fine_tuned_at_the_bases(
    tmp_path: Path, base_folder: Path, replay: tuple[Path, Path], caplog
) -> None:
    from service.engine.scale import ModelScale
    from training.data.dataset import discover_fields, read_annotation
    from training.data.rescale import rescaled_copy

    fields = [synthetic_field(60 + i, height=96, width=128) for i in range(4)]
    lab = write_dataset(tmp_path / "lab", fields, AnnotationKind.VOC_XML)
    copy = rescaled_copy(lab, 2.0, tmp_path / "cache")
    assert rescaled_copy(lab, 2.0, tmp_path / "cache") == copy and rescaled_copy(lab, 1.0, tmp_path) == lab
    (first,) = [f for f in discover_fields(copy) if f.field_id == fields[0].field_id]
    annotation = read_annotation(first)
    assert annotation.image_size == (256, 192)
    assert [(b.x, b.y) for b in annotation.boxes] == [(2 * b.x, 2 * b.y) for b in fields[0].boxes]
    with pytest.raises(ValueError, match="UFAM-style folder cannot be rescaled"):
        rescaled_copy(write_synthetic_ufam(tmp_path / "ufam", slides=1), 2.0, tmp_path / "cache")

    assert _finetune(base_folder, lab, tmp_path / "no-scale", replay, "--microns-per-pixel", "0.2") == 2
    assert "the base declares no pixel size" in caplog.text
    scaled_base = tmp_path / "scaled-base"
    scaled_base.mkdir()
    for f in base_folder.iterdir():
        (scaled_base / f.name).symlink_to(f.resolve())
    ModelScale(open_folder(base_folder).model_id, 0.1, "test", {}).write(scaled_base)
    out = tmp_path / "scaled-model"
    assert _finetune(scaled_base, lab, out, replay, "--microns-per-pixel", "0.2", "--no-znsm-test") == 0
    record = json.loads((out / "finetune.json").read_text())
    assert record["scale"] == {"lab_microns_per_pixel": 0.2, "factor": 2.0, "source": "request"}
    assert record["lab"]["root"].endswith(copy.name)  # trained on the fields at the base's scale
    inherited = ModelScale.load(out / "scale.json")
    assert inherited.model_id == record["model_id"] and inherited.pixel_size_um == 0.1
