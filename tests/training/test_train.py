"""Training end to end on a small synthetic data set: the run folder, the log, the chosen epoch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from training.data.dataset import AnnotationKind
from training.data.split import DatasetSplit
from training.data.synthetic import synthetic_field, write_dataset
from training.fit.recipes import RECIPES
from training.fit.runs import export_run
from training.fit.train import augment, train_recipe


def test_augment_keeps_the_centre_and_range() -> None:
    patches = np.random.default_rng(0).integers(0, 256, (8, 45, 45, 3), dtype=np.uint8)
    plain = augment(patches, np.random.default_rng(1), rotate_flip=False, colour_jitter=False)
    np.testing.assert_allclose(plain * 255, patches, atol=1e-4)
    turned = augment(patches, np.random.default_rng(1), rotate_flip=True, colour_jitter=False)
    np.testing.assert_allclose(turned[:, 22, 22], plain[:, 22, 22])
    jittered = augment(patches, np.random.default_rng(1), rotate_flip=True, colour_jitter=True)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not np.allclose(jittered, turned)


def test_train_and_export_a_small_run(tmp_path: Path) -> None:
    fields = [
        synthetic_field(s, height=96, width=128, background=("pink", "blue", "green")[s % 3], field_id=str(s))
        for s in range(5)
    ]
    data = write_dataset(tmp_path / "data", fields, AnnotationKind.ZNSM_CSV)
    split = DatasetSplit("synthetic", train=("0", "1", "2"), validation=("3",), test=("4",))
    split.save(tmp_path / "split.json")
    recipe = dataclasses.replace(RECIPES["augmented"], positives_per_field=40, negatives_per_field=40, epochs=3)
    record = train_recipe(data, tmp_path / "split.json", recipe, tmp_path / "run", seed=0)
    assert record["epochs_run"] == 3 and 1 <= record["best_epoch"] <= 3
    assert record["patches"] == {"train": 240, "validation": 80, "train_bacillus": 120, "validation_bacillus": 40}
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log["recipe"]["name"] == "augmented" and len(log["history"]["val_loss"]) == 3
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    onnx_path = export_run(tmp_path / "run")
    from training.model.export import read_metadata

    meta = read_metadata(onnx_path)
    assert meta["recipe"] == "augmented"
    assert json.loads(meta["validation_metrics"])["best_epoch"] == record["best_epoch"]


def test_a_small_multi_lab_run_normalises_mixes_labs_and_exports_the_normalisation(tmp_path: Path) -> None:
    from service.engine.model import OnnxModel
    from training.data.synthetic import write_synthetic_ufam

    fields = [
        synthetic_field(s, height=96, width=128, background=("pink", "blue", "green")[s % 3], field_id=str(s))
        for s in range(4)
    ]
    data = write_dataset(tmp_path / "data", fields, AnnotationKind.ZNSM_CSV)
    DatasetSplit("synthetic", train=("0", "1"), validation=("2",), test=("3",)).save(tmp_path / "split.json")
    ufam = write_synthetic_ufam(tmp_path / "ufam", slides=3)
    DatasetSplit("ufam", train=("S01",), validation=("S02",), test=("S03",)).save(tmp_path / "ufam.json")
    recipe = dataclasses.replace(
        RECIPES["multi-lab"], positives_per_field=20, negatives_per_field=20, ufam_negatives_per_field=20, epochs=2
    )
    record = train_recipe(
        data, tmp_path / "split.json", recipe, tmp_path / "run", ufam_data=ufam, ufam_split_path=tmp_path / "ufam.json"
    )
    assert record["ufam"]["train_slides"] == ["S01"] and record["ufam"]["train_patches"] > 20
    assert record["patches"]["train"] == 2 * 40 + record["ufam"]["train_patches"]
    norm = json.loads(record["input_normalisation"])
    assert norm["method"] == "background-gain" and len(norm["reference"]) == 3
    model = OnnxModel(export_run(tmp_path / "run"), providers=("CPUExecutionProvider",))
    assert model.meta.normalisation is not None and model.meta.normalisation.method == "background-gain"
    assert "ufam: slides S01 (train), S02 (validation)" in model.meta.raw["training_data"]

    from training.fit.runs import calibrate_run
    from training.fit.train_log import read_log

    calibrate_run(
        tmp_path / "run",
        tmp_path / "cal",
        data,
        tmp_path / "split.json",
        ufam=ufam,
        ufam_split=tmp_path / "ufam.json",
        cache=tmp_path / "cache",
    )
    calibrated = read_log(tmp_path / "cal")
    assert calibrated["recipe"]["name"] == "multi-lab-calibrated"
    assert calibrated.get("calibrated_on", "").endswith("ufam validation slides (S02), labs weighted equally")
    assert calibrated["input_normalisation"] == record["input_normalisation"]  # still declared after calibration


def test_mined_negatives_sit_where_the_model_fires_and_only_where_allowed(
    tmp_path: Path, random_dense_onnx: Path
) -> None:
    import numpy as np

    from service.engine.model import OnnxModel
    from service.engine.segmenter import Segmenter
    from training.fit.train import mined_patches

    model = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    image = synthetic_field(31, height=96, width=128, background="pink").image
    heatmap = Segmenter(model).heatmap(image)
    allowed = np.zeros(image.shape[:2], dtype=bool)
    allowed[:, :64] = True
    mined = mined_patches(model, "f", image, allowed, 25, 0, 45, image, cache=tmp_path / "cache")
    assert len(mined) == 25 and not mined.labels.any()
    ys, xs = mined.centres_yx[:, 0], mined.centres_yx[:, 1]
    assert (heatmap[ys, xs] > 0.5).all() and (xs < 64).all()
    none = mined_patches(model, "f", image, np.zeros_like(allowed), 25, 0, 45, image, cache=tmp_path / "cache")
    assert len(none) == 0
