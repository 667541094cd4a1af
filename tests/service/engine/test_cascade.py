"""Fast mode's cascade: its parts are the network, it reads less, and fast mode finds the same bacilli with it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.engine.cascade import CASCADE_JSON, Cascade, CascadeFiles, CascadeRule, gather_windows
from service.engine.errors import ModelContractError
from service.engine.fast import FastSettings, fast_heatmap, grid_shape, pad_for_grid, predict_grid
from service.engine.grid import GridGeometry
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model import OnnxModel
from service.engine.model_folder import COARSE_ONNX, DENSE_ONNX, open_folder
from service.engine.mosaic import PaddedField
from service.engine.segmenter import Mode, Segmenter
from service.settings import Settings
from tests.conftest import red_rod_field
from training.data.synthetic import synthetic_field
from training.paths import SHIPPED_DIR, ZNSM_MS2

CPU = ("CPUExecutionProvider",)
READ_EVERYTHING = CascadeRule(first_step=1, first_threshold=-1.0, refine_step=1, refine_threshold=-1.0)


def _segmenter(folder: Path, cascade: bool, tile_px: int = 32, screening: str = "fp32") -> Segmenter:
    opened = open_folder(folder)
    return load_segmenter(
        SegmenterConfig(
            opened.dense,
            providers=CPU,
            fast_paths=opened.fast_files("fp32"),
            cascade_path=opened.cascade if cascade else None,
            cascade_screening=screening,  # int8 screening: tests/training/test_screening.py
            fast_settings=FastSettings(tile_px=tile_px, batch_tiles=4),
        )
    )


def _cascade(folder: Path, rule: CascadeRule | None = None) -> tuple[Cascade, OnnxModel, OnnxModel]:
    dense, coarse = OnnxModel(folder / DENSE_ONNX, providers=CPU), OnnxModel(folder / COARSE_ONNX, providers=CPU)
    files = CascadeFiles.load(folder / CASCADE_JSON)
    if rule is not None:
        files = replace(files, rule=rule)
    return Cascade(files, dense, GridGeometry.of(coarse), CPU), dense, coarse


def _parts_are_the_network(folder: Path, field: np.ndarray) -> None:
    cascade, dense, coarse = _cascade(folder, READ_EVERYTHING)
    geometry = cascade.geometry
    rows, cols = grid_shape(field.shape, geometry)
    reading = cascade.grid(pad_for_grid(field, coarse.meta, geometry), rows, cols)
    assert reading.read == rows * cols
    np.testing.assert_allclose(reading.values, predict_grid(field, coarse, geometry, 16), atol=1e-5, rtol=0)
    meta = dense.meta
    tiles = PaddedField(
        field, halo_px=meta.halo_px, input_scale=meta.input_scale, padding=meta.input_padding, tile_px=32
    )
    exact = np.zeros(field.shape[:2], np.float32)
    read = np.zeros(field.shape[:2], np.float32)
    tiles.run(tiles.tiles, dense.run, exact, batch_tiles=3, channel=meta.positive_index)
    tiles.run(tiles.tiles, lambda b: cascade.refine(b).values[..., None], read, batch_tiles=3, channel=0)
    np.testing.assert_allclose(read, exact, atol=1e-5, rtol=0)


def test_the_cascade_reading_everything_is_the_network_red_model(red_fast_folder: Path) -> None:
    assert (red_fast_folder / CASCADE_JSON).is_file(), "write_fast_variants writes the cascade"
    _parts_are_the_network(red_fast_folder, np.minimum(red_rod_field((40, 150), 24), red_rod_field((170, 30), 30)))


def test_the_cascade_reading_everything_is_the_network_shipped_model() -> None:
    if not (SHIPPED_DIR / CASCADE_JSON).is_file():
        pytest.fail(f"the shipped model folder {SHIPPED_DIR} has no {CASCADE_JSON}: run python -m training cascade")
    _parts_are_the_network(SHIPPED_DIR, synthetic_field(3, height=97, width=150, background="blue").image)
    recorded = json.loads((SHIPPED_DIR / CASCADE_JSON).read_text(encoding="utf-8"))["check"]
    assert max(recorded["largest_difference"].values()) < 1e-5, recorded


def test_fast_mode_with_its_cascade_finds_the_same_and_reads_less(red_fast_folder: Path, tmp_path: Path) -> None:
    # this toy network says P 0.011 on plain background, above the shipped rule's first threshold: a rule for it
    folder = tmp_path / "toy-rule"
    shutil.copytree(red_fast_folder, folder)
    described = json.loads((folder / CASCADE_JSON).read_text(encoding="utf-8"))
    described["rule"]["first_threshold"] = 0.05
    (folder / CASCADE_JSON).write_text(json.dumps(described), encoding="utf-8")
    # rods crossing refinement tiles' edges and corners (32 px tiles)
    field = np.minimum(red_rod_field((20, 150), 40), red_rod_field((170, 30), 30))
    field = np.minimum(field, red_rod_field((90, 90), 20))
    everything, cascade = _segmenter(folder, False), _segmenter(folder, True)
    assert everything.fast is not None and everything.fast.cascade is None
    assert cascade.fast is not None and cascade.fast.cascade is not None
    a, b = everything.segment(field, mode=Mode.FAST), cascade.segment(field, mode=Mode.FAST)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert [o.bbox for o in a.bacilli] == [o.bbox for o in b.bacilli] and len(a.bacilli) == 3
    np.testing.assert_allclose(b.heatmap[b.mask], a.heatmap[b.mask], atol=1e-5, rtol=0)
    assert b.heatmap[~b.mask].max() <= everything.threshold
    full = fast_heatmap(field, everything.fast, everything.fast_settings, everything.threshold)
    less = fast_heatmap(field, cascade.fast, cascade.fast_settings, cascade.threshold)
    rows, cols = grid_shape(field.shape, everything.fast.geometry)
    assert full.coarse_read == rows * cols
    assert less.coarse_read < full.coarse_read / 2, (less.coarse_read, full.coarse_read)
    assert less.refine_read < full.refine_read, (less.refine_read, full.refine_read)


def test_thresholds_the_rule_cannot_keep_read_everything(red_fast_folder: Path) -> None:
    field = red_rod_field((40, 60), 30)
    segmenter = _segmenter(red_fast_folder, True)
    assert segmenter.fast is not None and segmenter.fast.cascade is not None
    rule = segmenter.fast.cascade.rule
    assert rule.applies(0.3, 0.5) and not rule.applies(0.3, rule.refine_threshold)
    assert not rule.applies(rule.first_threshold, 0.5)
    low = fast_heatmap(field, segmenter.fast, segmenter.fast_settings, rule.refine_threshold)
    rows, cols = grid_shape(field.shape, segmenter.fast.geometry)
    assert low.coarse_read == rows * cols


def test_a_cascade_of_another_model_or_missing_parts_is_refused(red_fast_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(red_fast_folder, folder)
    described = json.loads((folder / CASCADE_JSON).read_text(encoding="utf-8"))
    (folder / CASCADE_JSON).write_text(json.dumps({**described, "dense_model_id": "someone-else"}), encoding="utf-8")
    with pytest.raises(ModelContractError, match="cut from someone-else"):
        _segmenter(folder, True)
    (folder / CASCADE_JSON).write_text(json.dumps(described), encoding="utf-8")
    (folder / described["files"]["head"]).unlink()
    with pytest.raises(ModelContractError, match="not in the folder"):
        _segmenter(folder, True)
    (folder / CASCADE_JSON).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelContractError, match="not a readable cascade"):
        _segmenter(folder, True)


def test_the_service_reads_with_the_cascade_unless_told_not_to() -> None:
    folder = open_folder(SHIPPED_DIR)
    assert folder.cascade is not None
    assert Settings().segmenter_config(folder).cascade_path == folder.cascade
    assert Settings(fast_cascade=False).segmenter_config(folder).cascade_path is None
    int8 = load_segmenter(Settings(providers="CPUExecutionProvider", fast_precision="int8").segmenter_config(folder))
    assert int8.fast is not None and int8.fast.precision == "int8" and int8.fast.cascade is None


def test_on_a_real_field_the_cascade_gives_fast_modes_mask() -> None:
    """ZNSM-iDB MS-2 validation field 23: a pixel above the mask threshold at a tile's last row whose hot neighbour
    lies in the next tile (the cascade's first level includes each tile's last row and column for it)."""
    image = ZNSM_MS2 / "images" / "23.jpg"
    if not image.is_file():
        pytest.skip(f"{image} is not here (../shared/data absent): the real-field check cannot run")
    from training.data.dataset import read_rgb

    rgb = read_rgb(image)
    everything, cascade = _segmenter(SHIPPED_DIR, False), _segmenter(SHIPPED_DIR, True)
    field = everything.prepare(rgb)
    assert everything.fast is not None and cascade.fast is not None
    a = fast_heatmap(field, everything.fast, everything.fast_settings, everything.threshold)
    b = fast_heatmap(field, cascade.fast, cascade.fast_settings, cascade.threshold)
    np.testing.assert_array_equal(a.heatmap > everything.threshold, b.heatmap > cascade.threshold)
    np.testing.assert_array_equal(a.refined, b.refined)


def test_gathering_windows_row_by_row_is_indexing_the_view() -> None:
    rng = np.random.default_rng(3)
    tiles = rng.random((3, 20, 21, 5), dtype=np.float32)  # dense trunk features, channels last: dilated windows
    s0, s1, s2, s3 = tiles.strides
    dilated = np.lib.stride_tricks.as_strided(tiles, (3, 8, 9, 3, 3, 5), (s0, s1, s2, 6 * s1, 6 * s2, s3))
    index = (rng.integers(0, 3, 50), rng.integers(0, 8, 50), rng.integers(0, 9, 50))
    np.testing.assert_array_equal(gather_windows(dilated, index), dilated[index])
    grid = rng.random((12, 11, 5), dtype=np.float32)  # the coarse grid's features: windows at step 1
    g0, g1, g2 = grid.strides
    windows = np.lib.stride_tricks.as_strided(grid, (7, 6, 6, 6, 5), (g0, g1, g0, g1, g2))
    index2 = (rng.integers(0, 7, 40), rng.integers(0, 6, 40))
    np.testing.assert_array_equal(gather_windows(windows, index2), windows[index2])
    assert gather_windows(windows, (index2[0][:0], index2[1][:0])).shape == (0, 6, 6, 5)
    odd = grid[:, :, 1:4]  # channels not whole rows of the buffer: indexed the plain way, the same answer
    o0, o1, o2 = odd.strides
    view = np.lib.stride_tricks.as_strided(odd, (7, 6, 6, 6, 3), (o0, o1, o0, o1, o2))
    np.testing.assert_array_equal(gather_windows(view, index2), view[index2])
