"""`python -m training fast`: the coarse network's metadata, the int8 copies, the agreement report and the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.engine.model import OnnxModel
from service.engine.model_folder import COARSE_INT8_ONNX, COARSE_ONNX, DENSE_INT8_ONNX, DENSE_ONNX, open_folder
from training.model.coarse import output_stride, patch_cnn_to_strided
from training.model.fast_variants import CARD_SECTION, FAST_JSON

CPU = ("CPUExecutionProvider",)


def test_the_strided_network_is_the_patch_cnn_on_every_sixth_patch(random_patch_cnn) -> None:
    strided = patch_cnn_to_strided(random_patch_cnn)
    assert output_stride(random_patch_cnn) == (6, 6)
    image = np.random.default_rng(0).random((1, 45 + 6 * 3, 45 + 6 * 2, 3), dtype=np.float32)
    out = np.asarray(strided(image, training=False))
    assert out.shape == (1, 4, 3, 2)
    patches = np.stack([image[0, 6 * i : 6 * i + 45, 6 * j : 6 * j + 45] for i in range(4) for j in range(3)])
    expected = np.asarray(random_patch_cnn(patches, training=False)).reshape(4, 3, 2)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_the_folder_gains_fast_networks_that_describe_themselves(red_fast_folder: Path) -> None:
    dense = OnnxModel(red_fast_folder / DENSE_ONNX, providers=CPU)
    for name, variant, precision in (
        (COARSE_ONNX, "coarse", "fp32"),
        (COARSE_INT8_ONNX, "coarse", "int8"),
        (DENSE_INT8_ONNX, "dense", "int8"),
    ):
        meta = OnnxModel(red_fast_folder / name, providers=CPU).meta
        assert meta.raw["dense_model_id"] == dense.meta.model_id and meta.raw["variant"] == variant
        assert meta.raw["precision"] == precision and meta.halo_px == dense.meta.halo_px
        if variant == "coarse":
            assert (meta.raw["output_stride"], meta.raw["output_phase"]) == ("6", "0,0")
    ops = {n.op_type for n in onnx.load(str(red_fast_folder / DENSE_INT8_ONNX)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Softmax"} <= ops
    for name in (DENSE_INT8_ONNX, COARSE_INT8_ONNX):  # the first convolution stays in float (its weights as stored)
        graph = onnx.load(str(red_fast_folder / name)).graph
        floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
        convs = [n for n in graph.node if n.op_type == "Conv"]
        assert len(convs) == 4 and [c.input[1] in floats for c in convs] == [True, False, False, False], name
    report = json.loads((red_fast_folder / FAST_JSON).read_text())
    assert report["quantisation"]["float_nodes"] == "Softmax, conv1"
    assert [a["network"] for a in report["agreement"]] == ["dense", "coarse"]
    assert all(0.9 <= a["mask_agreement"] <= 1.0 and a["max_abs_diff"] < 0.5 for a in report["agreement"])
    card = (red_fast_folder / "MODEL_CARD.md").read_text()
    assert card.count(CARD_SECTION) == 1 and "| dense | 12 |" in card
    folder = open_folder(red_fast_folder)
    assert folder.fast_files("int8") == (red_fast_folder / COARSE_INT8_ONNX, red_fast_folder / DENSE_INT8_ONNX)
    assert folder.fast_files("fp32") == (red_fast_folder / COARSE_ONNX, red_fast_folder / DENSE_ONNX)


def test_a_folder_without_its_patch_cnn_is_refused(random_dense_onnx: Path, tmp_path: Path) -> None:
    from training.cli import main

    (tmp_path / DENSE_ONNX).symlink_to(random_dense_onnx)
    with pytest.raises(FileNotFoundError, match=r"patch_cnn\.keras"):
        from training.model.fast_variants import write_fast_variants

        write_fast_variants(tmp_path, [], [], calibration_source="", check_source="")
    assert main(["fast", "--model", str(tmp_path), "--data", str(tmp_path), "--split", str(tmp_path / "x.json")]) == 2


def test_the_benchmark_figures_go_into_the_card(red_fast_folder: Path, tmp_path: Path) -> None:
    import shutil

    from training.cli import main

    folder = shutil.copytree(red_fast_folder, tmp_path / "red")
    model_id = OnnxModel(folder / DENSE_ONNX, providers=CPU).meta.model_id
    mode = {"exact_kept": 3, "found": 3, "missed": 0, "added": 1, "mask_pixels_differing": 7, "seconds_median": 0.5}
    summary = {"ZNSM 256x256": {"fields": 2, "exact_seconds_median": 4.0, "fast_fp32": mode, "fast_int8": mode}}
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"model_id": model_id, "machine": {"cpus": 2}, "summary": summary}))
    assert main(["fast", "--model", str(folder), "--card-only", "--detections", str(bench)]) == 0
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.count(CARD_SECTION) == 1 and "| ZNSM 256x256 (2) | 3 | 3 / 0 / 1 | 7 |" in card
    assert json.loads((folder / FAST_JSON).read_text())["detections"]["summary"] == summary
    bench.write_text(json.dumps({"model_id": "another", "summary": summary}))
    assert main(["fast", "--model", str(folder), "--card-only", "--detections", str(bench)]) == 2


def test_the_int8_test_figures_go_into_the_card(red_fast_folder: Path, tmp_path: Path) -> None:
    import shutil

    from training.cli import main

    folder = shutil.copytree(red_fast_folder, tmp_path / "red")
    report = json.loads((folder / FAST_JSON).read_text())
    model_id = report["dense_model_id"]
    rows = {
        "znsm-ms2": {
            "fields": 2,
            "reference_kept": 40,
            "kept": 40,
            "found": 40,
            "missed": 0,
            "added": 0,
            "seconds_median": {"fp32": 5.0, "int8": 3.0},
        },
        "ufam-dds1 centres ×1": {"patches": 9, "reference_kept": 3, "kept": 3, "found": 2, "missed": 1, "added": 1},
    }
    bench = tmp_path / "int8.json"
    measured = {
        "bench": "int8_calibration --shipped-on-test",
        "model_id": model_id,
        "machine": {"cpus": 2},
        "quantisation": report["quantisation"],
        "calibration": report["calibration"],
        "detections": rows,
        "meets": False,
    }
    bench.write_text(json.dumps(measured))
    assert main(["fast", "--model", str(folder), "--card-only", "--detections", str(bench)]) == 0
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| znsm-ms2 (2 fields) | 40 | 40 / 0 / 0 | 5.00 / 3.00 |" in card
    assert "| ufam-dds1 centres ×1 (9 patches, at the centre) | 3 | 2 / 1 / 1 |  |" in card
    assert "does not meet the rule" in card and card.count(CARD_SECTION) == 1
    # figures of other int8 networks (calibrated otherwise) are refused
    bench.write_text(json.dumps({**measured, "calibration": "12 train fields of znsm-ms2"}))
    assert main(["fast", "--model", str(folder), "--card-only", "--detections", str(bench)]) == 2


def test_the_folder_gains_the_cascade_cut_from_its_networks(red_fast_folder: Path, tmp_path: Path) -> None:
    from service.engine.cascade import CASCADE_JSON, CascadeFiles
    from training.cli import main
    from training.model.cascade import COARSE_TRUNK_ONNX, DENSE_TRUNK_ONNX, HEAD_ONNX

    dense = OnnxModel(red_fast_folder / DENSE_ONNX, providers=CPU)
    for name, role in ((COARSE_TRUNK_ONNX, "coarse trunk"), (DENSE_TRUNK_ONNX, "dense trunk"), (HEAD_ONNX, "head")):
        meta = OnnxModel(red_fast_folder / name, providers=CPU).meta
        assert meta.raw["cascade_part"] == role and meta.raw["dense_model_id"] == dense.meta.model_id
    head_ops = [n.op_type for n in onnx.load(str(red_fast_folder / HEAD_ONNX)).graph.node]
    assert head_ops == ["Reshape", "Gemm", "Relu", "Gemm", "Softmax"]
    # the dense trunk's pools (exported as strided slices and maxima) are one MaxPool each: the same function
    trunk_nodes = onnx.load(str(red_fast_folder / DENSE_TRUNK_ONNX)).graph.node
    assert [n.op_type for n in trunk_nodes] == ["Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool"]
    pools = [{a.name: list(a.ints) for a in n.attribute} for n in trunk_nodes if n.op_type == "MaxPool"]
    assert [(p["kernel_shape"], p["dilations"], p["strides"]) for p in pools] == [
        ([2, 2], [1, 1], [1, 1]),
        ([3, 3], [2, 2], [1, 1]),
    ]
    from training.model.cascade import pools_as_maxpool, same_function, trunk

    exported = trunk(onnx.load(str(red_fast_folder / DENSE_ONNX)))
    assert {n.op_type for n in exported.graph.node} >= {"Slice", "Max"}  # as tf2onnx wrote it
    pooled = pools_as_maxpool(exported, onnx.load(str(red_fast_folder / COARSE_ONNX)))
    assert pooled is not None and same_function(exported, pooled, 76) and same_function(exported, pooled, 53, seed=1)
    files = CascadeFiles.load(red_fast_folder / CASCADE_JSON)
    assert (files.window, files.trunk_receptive_field, files.dense_model_id) == (6, 15, dense.meta.model_id)
    check = files.raw["check"]
    assert check["fields"] != "none" and max(check["largest_difference"].values()) < 1e-5, check
    # the command cuts it again in a folder that has its fast networks, without fields to check on
    folder = tmp_path / "again"
    shutil.copytree(red_fast_folder, folder)
    (folder / CASCADE_JSON).unlink()
    assert main(["cascade", "--model", str(folder), "--check-fields", "0", "--no-screening"]) == 0
    assert CascadeFiles.load(folder / CASCADE_JSON).raw["check"] == {"fields": "none", "largest_difference": None}
