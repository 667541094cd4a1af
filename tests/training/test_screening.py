"""The cascade's int8 screening: int8 copies read the coarse grid, fast mode screens with the model's margin, and
the mask stays fp32's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.engine.candidates import SURE_P
from service.engine.cascade import CASCADE_JSON, CascadeFiles, near_levels
from service.engine.errors import ModelContractError
from service.engine.fast import fast_heatmap
from service.engine.loading import load_segmenter
from service.engine.model import OnnxModel
from service.engine.model_folder import DENSE_ONNX, open_folder
from service.engine.segmenter import Mode, Segmenter
from service.settings import Settings
from tests.conftest import red_rod_field
from tests.service.engine.test_cascade import _segmenter as cascade_segmenter
from training.model import screening
from training.model.screening import (
    SCREEN_HEAD_ONNX,
    SCREEN_TRUNK_ONNX,
    BandCheck,
    choose_band,
    pool_before_relu,
    write_screening,
)
from training.paths import SHIPPED_DIR, ZNSM_MS2

CPU = ("CPUExecutionProvider",)


def _fields() -> dict[str, list[tuple[str, np.ndarray]]]:
    rods = [((30, 40), 30), ((120, 20), 40), ((60, 150), 25), ((170, 160), 35)]
    fields = [red_rod_field(start, length) for start, length in rods]
    crossing = np.minimum(red_rod_field((20, 150), 40), red_rod_field((170, 30), 30))
    return {"red rods": [(f"rod{k}", f) for k, f in enumerate(fields)], "crossing": [("crossing", crossing)]}


@pytest.fixture(scope="module")
def screened_folder(red_fast_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("screened") / "red"
    shutil.copytree(red_fast_folder, folder)
    # this toy network says P 0.011 on plain background: a first threshold above it, as for its cascade tests
    described = json.loads((folder / CASCADE_JSON).read_text(encoding="utf-8"))
    described["rule"]["first_threshold"] = 0.05
    (folder / CASCADE_JSON).write_text(json.dumps(described), encoding="utf-8")
    fields = _fields()
    write_screening(folder, fields, fields, blocks_per_field=2, windows_per_field=60)
    return folder


def _segmenter(folder: Path, screening_precision: str) -> Segmenter:
    return cascade_segmenter(folder, True, screening=screening_precision)


def _conv_relu_pool() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("MaxPool", ["relu"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_pooling_before_the_relu_is_the_same_function() -> None:
    proto = _conv_relu_pool()
    x = np.random.default_rng(1).normal(size=(1, 3, 10, 10)).astype(np.float32)
    before = ort.InferenceSession(proto.SerializeToString(), providers=list(CPU)).run(None, {"x": x})[0]
    moved = pool_before_relu(proto)
    onnx.checker.check_model(moved)
    assert [n.op_type for n in moved.graph.node] == ["Conv", "MaxPool", "Relu"]
    after = ort.InferenceSession(moved.SerializeToString(), providers=list(CPU)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)
    assert (before < 0).sum() == 0 and (before == 0).any()  # the ReLU clipped something: the test means something


def test_int8_screening_is_written_with_its_margin_and_chosen_on_the_fields_given(screened_folder: Path) -> None:
    record = json.loads((screened_folder / CASCADE_JSON).read_text(encoding="utf-8"))["screening"]
    assert record["chosen"] is True, record["check"]["by_lab"]
    assert record["margin"] in screening.MARGINS and record["first_threshold"] in screening.FIRST_THRESHOLDS
    largest = max(lab["max_abs_diff_relevant"] for lab in record["check"]["by_lab"].values())
    assert record["margin"] >= 2 * largest
    assert set(record["check"]["by_lab"]) == {"red rods", "crossing"}
    dense = OnnxModel(screened_folder / DENSE_ONNX, providers=CPU)
    for name in (SCREEN_TRUNK_ONNX, SCREEN_HEAD_ONNX):
        part = OnnxModel(screened_folder / name, providers=CPU).meta.raw
        assert part["precision"] == "int8" and part["dense_model_id"] == dense.meta.model_id
        ops = {n.op_type for n in onnx.load(str(screened_folder / name)).graph.node}
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, ops
    files = CascadeFiles.load(screened_folder / CASCADE_JSON)
    assert files.screening is not None and files.screening.margin == record["margin"]
    # refined pixels in int8, and in fp32 only within a band about the levels the answer uses: chosen the same way
    band = record["fp32_band_logit"]
    assert band in screening.BAND_LOGITS and files.screening.band_logit == band
    assert set(record["band_check"]["by_lab"]) == {"red rods", "crossing"}
    largest = max(lab["max_abs_logit_diff"] for lab in record["band_check"]["by_lab"].values())
    assert band >= screening.BAND_SAFETY * largest
    assert all(f["crossed"][str(band)] == 0 for lab in record["band_check"]["fields"].values() for f in lab)
    card = (screened_folder / "MODEL_CARD.md").read_text(encoding="utf-8")  # the card says how the grid is read
    assert f"less the margin **{record['margin']}**" in card and SCREEN_HEAD_ONNX in card


def test_fast_mode_screening_in_int8_refines_at_least_fp32s_tiles_and_keeps_its_mask(screened_folder: Path) -> None:
    fp32, int8 = _segmenter(screened_folder, "fp32"), _segmenter(screened_folder, "int8")
    assert fp32.fast is not None and fp32.fast.cascade is not None and fp32.fast.cascade.screening is None
    assert int8.fast is not None and int8.fast.cascade is not None and int8.fast.cascade.screening is not None
    margin = int8.fast.cascade.screen_margin
    assert margin > 0
    field = np.minimum(red_rod_field((20, 150), 40), red_rod_field((170, 30), 30))
    field = np.minimum(field, red_rod_field((90, 90), 20))
    a, b = fp32.segment(field, mode=Mode.FAST), int8.segment(field, mode=Mode.FAST)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert [o.bbox for o in a.bacilli] == [o.bbox for o in b.bacilli] and len(a.bacilli) == 3
    # inside the mask: the pixels counted as sure are fp32's; the others int8's, within the error measured
    np.testing.assert_array_equal(a.heatmap[a.mask] > SURE_P, b.heatmap[b.mask] > SURE_P)
    record = json.loads((screened_folder / CASCADE_JSON).read_text(encoding="utf-8"))["screening"]
    largest = max(lab["max_abs_diff"] for lab in record["band_check"]["by_lab"].values())
    assert np.abs(b.heatmap[b.mask] - a.heatmap[b.mask]).max() <= largest + 1e-6
    fa = fast_heatmap(field, fp32.fast, fp32.fast_settings, fp32.threshold)
    fb = fast_heatmap(field, int8.fast, int8.fast_settings, int8.threshold)
    assert not (fa.refined & ~fb.refined).any()  # every tile fp32 screening refines is refined
    assert fb.heatmap[~fb.refined.repeat(32, 0).repeat(32, 1)[: field.shape[0], : field.shape[1]]].max() <= (
        int8.fast_settings.screen_threshold - margin
    )


def test_when_no_margin_covers_int8_the_grid_stays_fp32(
    red_fast_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "red"
    shutil.copytree(red_fast_folder, folder)
    monkeypatch.setattr(screening, "MARGINS", (0.0,))  # no int8 error is covered by a margin of 0
    fields = _fields()
    record = write_screening(folder, fields, fields, blocks_per_field=1, windows_per_field=30)
    assert record["chosen"] is False and "margin" not in record
    assert not (folder / SCREEN_TRUNK_ONNX).exists() and not (folder / SCREEN_HEAD_ONNX).exists()
    assert CascadeFiles.load(folder / CASCADE_JSON).screening is None
    segmenter = _segmenter(folder, "int8")  # asked for, but the folder has none: fp32
    assert segmenter.fast is not None and segmenter.fast.cascade is not None
    assert segmenter.fast.cascade.screening is None and segmenter.fast.cascade.screen_margin == 0.0


def test_a_broken_screening_description_is_refused(screened_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(screened_folder, folder)
    described = json.loads((folder / CASCADE_JSON).read_text(encoding="utf-8"))
    bad_margin = {**described, "screening": {**described["screening"], "margin": 1.5}}
    (folder / CASCADE_JSON).write_text(json.dumps(bad_margin), encoding="utf-8")
    with pytest.raises(ModelContractError, match="margin"):
        CascadeFiles.load(folder / CASCADE_JSON)
    (folder / CASCADE_JSON).write_text(json.dumps(described), encoding="utf-8")
    (folder / SCREEN_HEAD_ONNX).unlink()
    with pytest.raises(ModelContractError, match="not in the folder"):
        CascadeFiles.load(folder / CASCADE_JSON)
    shutil.copy(folder / "bacilli_head.onnx", folder / SCREEN_HEAD_ONNX)  # a part of this model, but not int8's
    proto = onnx.load(str(folder / SCREEN_HEAD_ONNX))
    for entry in proto.metadata_props:
        if entry.key == "dense_model_id":
            entry.value = "someone-else"
    onnx.save(proto, str(folder / SCREEN_HEAD_ONNX))
    with pytest.raises(ModelContractError, match="made from someone-else"):
        _segmenter(folder, "int8")


def test_the_shipped_model_screens_in_int8_unless_told_not_to() -> None:
    folder = open_folder(SHIPPED_DIR)
    record = json.loads((SHIPPED_DIR / CASCADE_JSON).read_text(encoding="utf-8"))["screening"]
    assert record["chosen"] and "validation fields of every lab" in record["choice"]
    assert all(v["fields"] > 0 for v in record["check"]["by_lab"].values())
    missed = [
        f["missed"][str(record["first_threshold"])][str(record["margin"])]
        for lab in record["check"]["fields"].values()
        for f in lab
    ]
    assert sum(missed) == 0
    int8 = load_segmenter(Settings(providers="CPUExecutionProvider").segmenter_config(folder))
    assert int8.fast is not None and int8.fast.cascade is not None
    assert int8.fast.cascade.screen_margin == record["margin"]
    fp32 = load_segmenter(Settings(providers="CPUExecutionProvider", fast_screening="fp32").segmenter_config(folder))
    assert fp32.fast is not None and fp32.fast.cascade is not None and fp32.fast.cascade.screening is None


def test_on_a_real_field_int8_screening_gives_the_same_mask() -> None:
    image = ZNSM_MS2 / "images" / "23.jpg"
    if not image.is_file():
        pytest.skip(f"{image} is not here (../shared/data absent): the real-field check cannot run")
    from training.data.dataset import read_rgb

    rgb = read_rgb(image)
    fp32, int8 = _segmenter(SHIPPED_DIR, "fp32"), _segmenter(SHIPPED_DIR, "int8")
    assert fp32.fast is not None and int8.fast is not None
    field = fp32.prepare(rgb)
    a = fast_heatmap(field, fp32.fast, fp32.fast_settings, fp32.threshold)
    b = fast_heatmap(field, int8.fast, int8.fast_settings, int8.threshold)
    np.testing.assert_array_equal(a.heatmap > fp32.threshold, b.heatmap > int8.threshold)
    mask = a.heatmap > fp32.threshold
    np.testing.assert_array_equal(a.heatmap[mask] > SURE_P, b.heatmap[mask] > SURE_P)
    assert np.abs(a.heatmap[mask] - b.heatmap[mask]).max() < 0.1
    assert b.refine_read < a.refine_read * 1.5  # the band: most pixels near a hot lattice point read once, in int8
    assert not (a.refined & ~b.refined).any() and b.refined_tiles >= a.refined_tiles
    assert b.coarse_read <= a.coarse_read * 1.05


def test_the_fp32_band_is_measured_in_logits_about_each_level() -> None:
    p = np.array([0.5, 0.7, 0.9, 0.95, 0.99, 0.1, 0.3], dtype=np.float32)
    # logits: 0, 0.85, 2.20, 2.94, 4.60, -2.20, -0.85 against the levels' 0 and 2.20
    assert near_levels(p, (0.5, 0.9), 1.0).tolist() == [True, True, True, True, False, False, True]
    assert near_levels(p, (0.5,), 0.5).tolist() == [True, False, False, False, False, False, False]


def _band(error: float, crossed: dict[str, int] | None = None) -> BandCheck:
    crossed = crossed or {str(b): 0 for b in screening.BAND_LOGITS}
    in_band = {str(b): 0 for b in screening.BAND_LOGITS}
    return BandCheck("f", 1, 1024, 100, error, error / 4, crossed, in_band)


def test_the_band_is_the_narrowest_covering_the_error_with_room_that_crossed_nothing() -> None:
    assert screening.BAND_SAFETY == 3
    assert choose_band([_band(0.2), _band(0.3)]) == 1.0
    assert choose_band([_band(0.1)]) == 0.5
    crossed = {str(b): int(b < 1.5) for b in screening.BAND_LOGITS}
    assert choose_band([_band(0.1, crossed)]) == 1.5
    assert choose_band([_band(0.7)]) is None  # no candidate covers it: every pixel near a hot one is read in fp32
