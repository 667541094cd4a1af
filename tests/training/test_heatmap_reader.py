"""How training reads heatmaps: fast mode (the service's default) where it gives exact mode's result, exact mode on
request, for a low cut or for a model without fast networks (:mod:`training.evaluation.heatmap_cache`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.engine.model import OnnxModel
from service.engine.model_folder import DENSE_ONNX
from service.engine.modes import Mode
from tests.conftest import red_rod_field
from training.data.dataset import read_rgb
from training.evaluation.heatmap_cache import FAST_EXACT_FROM, HeatmapReader
from training.evaluation.methods import PROBABILITY_SWEEP, DenseModel
from training.paths import SHIPPED_MODEL

CPU = ("CPUExecutionProvider",)


def _field() -> np.ndarray:
    """Three red rods on a pale 256×320 field, one across the tiles' corners."""
    field = np.concatenate([red_rod_field((40, 60), 30), red_rod_field((150, 20), 40)], axis=1)[:, :320]
    return np.ascontiguousarray(field)


def test_fast_mode_gives_exact_modes_heatmap_above_the_mask_threshold(red_fast_folder: Path, tmp_path: Path) -> None:
    model = OnnxModel(red_fast_folder / DENSE_ONNX, providers=CPU)
    fast, exact = HeatmapReader(model), HeatmapReader(model, Mode.EXACT)
    assert fast.mode is Mode.FAST and exact.mode is Mode.EXACT and "fast mode" in fast.why
    rgb = _field()
    f, e = fast.heatmap(rgb), exact.heatmap(rgb)
    above = e > FAST_EXACT_FROM
    assert above.sum() > 50  # the rods are there
    assert np.array_equal(f > FAST_EXACT_FROM, above)
    np.testing.assert_allclose(f[above], e[above], atol=1e-5)
    assert np.abs(f - e).max() > 1e-3  # below the threshold fast mode interpolates: not the same heatmap

    # cached apart: a fast heatmap is not exact mode's below the threshold
    cache = tmp_path / "cache"
    (hf, seconds_f), (he, seconds_e) = fast.cached("f1", rgb, cache), exact.cached("f1", rgb, cache)
    assert seconds_f > 0 and seconds_e > 0 and np.array_equal(hf, f) and np.array_equal(he, e)
    names = sorted(p.name for p in (cache / model.meta.model_id).iterdir())
    assert len(names) == 2 and names[0].endswith("-fast.npy") is not names[1].endswith("-fast.npy")
    assert fast.cached("f1", rgb, cache)[1] == 0.0  # read back, not computed


def test_exact_mode_where_fast_mode_cannot_give_its_result(red_fast_folder: Path, tmp_path: Path) -> None:
    model = OnnxModel(red_fast_folder / DENSE_ONNX, providers=CPU)
    low = HeatmapReader(model, cut=0.3)
    assert low.mode is Mode.EXACT and "below 0.5" in low.why
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(red_fast_folder / DENSE_ONNX, bare / DENSE_ONNX)  # a run folder: no coarse network beside it
    alone = HeatmapReader(OnnxModel(bare / DENSE_ONNX, providers=CPU))
    assert alone.mode is Mode.EXACT and "bacilli_coarse.onnx" in alone.why

    # an evaluation's threshold sweep starts at the mask threshold in fast mode only
    dense = DenseModel(red_fast_folder / DENSE_ONNX, "red", 0.5, tmp_path / "cache")
    assert dense.sweep[0] == FAST_EXACT_FROM and dense.sweep[-1] == PROBABILITY_SWEEP[-1]
    dense.require_cut(0.3)  # e.g. an object filter whose candidates were cut at 0.3
    assert dense.reader.mode is Mode.EXACT and dense.sweep == PROBABILITY_SWEEP


def test_an_exact_window_is_the_whole_fields_exact_heatmap_there(red_fast_folder: Path) -> None:
    model = OnnxModel(red_fast_folder / DENSE_ONNX, providers=CPU)
    reader = HeatmapReader(model)
    rgb = _field()
    whole = HeatmapReader(model, Mode.EXACT).heatmap(rgb)
    for y0, x0, h, w in ((0, 0, 64, 80), (100, 130, 96, 96), (200, 250, 56, 70)):  # corner, middle, far corner
        window = reader.exact_window(rgb, y0, x0, h, w)
        np.testing.assert_allclose(window, whole[y0 : y0 + h, x0 : x0 + w], atol=1e-5)


def test_the_shipped_model_reads_a_real_field_the_same_in_both_modes(znsm_ms2: Path) -> None:
    rgb = np.ascontiguousarray(read_rgb(znsm_ms2 / "images" / "19.jpg")[:512, :768])
    model = OnnxModel(SHIPPED_MODEL, providers=CPU)
    fast, exact = HeatmapReader(model), HeatmapReader(model, Mode.EXACT)
    assert fast.mode is Mode.FAST
    f, e = fast.heatmap(rgb), exact.heatmap(rgb)
    above = e > FAST_EXACT_FROM
    assert above.sum() > 500
    assert np.array_equal(f > FAST_EXACT_FROM, above)
    np.testing.assert_allclose(f[above], e[above], atol=1e-5)


@pytest.mark.parametrize("mode", [Mode.FAST, Mode.EXACT])
def test_the_reader_reports_its_mode_in_an_evaluation(red_fast_folder: Path, tmp_path: Path, mode: Mode) -> None:
    described = DenseModel(red_fast_folder / DENSE_ONNX, "red", 0.5, tmp_path, mode=mode).describe()
    assert described["inference"]["mode"] == mode.value and described["inference"]["mode_why"]
