"""Fast mode: the coarse grid equals the dense heatmap, refinement equals exact mode, nothing is cut at a tile edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine.errors import ModelContractError, ModeUnavailable
from service.engine.fast import FastNetworks, FastSettings, fast_heatmap, predict_grid, upsample
from service.engine.grid import GridGeometry
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model import OnnxModel
from service.engine.model_folder import COARSE_ONNX, DENSE_ONNX, ModelFolder, open_folder
from service.engine.segmenter import Mode, Segmenter
from tests.conftest import red_rod_field, redness_patch_cnn
from training.data.synthetic import synthetic_field
from training.paths import SHIPPED_DIR

CPU = ("CPUExecutionProvider",)


def _models(folder: Path) -> tuple[OnnxModel, OnnxModel]:
    return OnnxModel(folder / DENSE_ONNX, providers=CPU), OnnxModel(folder / COARSE_ONNX, providers=CPU)


def _segmenter(folder: Path, precision: str = "fp32", tile_px: int = 64, **fast: float) -> Segmenter:
    opened = open_folder(folder)
    return load_segmenter(
        SegmenterConfig(
            opened.dense,
            providers=CPU,
            tile_px=tile_px,
            fast_paths=opened.fast_files(precision),
            fast_precision=precision,
            # 64 px refinement tiles, 4 per call (these tests draw rods against that grid), unless asked otherwise
            fast_settings=FastSettings(**{"tile_px": 64, "batch_tiles": 4, **fast}),  # type: ignore[arg-type]
        )
    )


def _coarse_equals_dense(folder: Path, field: np.ndarray, block_points: int) -> None:
    dense, coarse = _models(folder)
    geometry = GridGeometry.of(coarse)
    assert geometry == GridGeometry(6, (0, 0))
    heatmap = Segmenter(dense, tile_px=128).heatmap(field)
    grid = predict_grid(field, coarse, geometry, block_points)
    height, width = field.shape[:2]
    assert grid.shape == (geometry.points(height, 0), geometry.points(width, 1))
    inside = grid[: (height - 1) // 6 + 1, : (width - 1) // 6 + 1]
    np.testing.assert_allclose(inside, heatmap[::6, ::6], atol=1e-5, rtol=0)


@pytest.mark.parametrize("block_points", [7, 64])
def test_coarse_pass_equals_the_dense_heatmap_on_its_grid_random_model(
    random_patch_cnn, tmp_path: Path, block_points: int
) -> None:
    from tests.conftest import fast_model_folder

    fields = [synthetic_field(5, height=97, width=131, background="blue").image]
    folder = fast_model_folder(tmp_path / "random", random_patch_cnn, fields)
    _coarse_equals_dense(folder, synthetic_field(6, height=151, width=203, background="pink").image, block_points)


def test_coarse_pass_equals_the_dense_heatmap_on_its_grid_shipped_model() -> None:
    if not (SHIPPED_DIR / COARSE_ONNX).is_file():
        pytest.fail(f"the shipped model folder {SHIPPED_DIR} has no {COARSE_ONNX}: run python -m training fast")
    _coarse_equals_dense(SHIPPED_DIR, synthetic_field(7, height=160, width=190, background="green").image, 16)


def test_grid_geometry_and_upsampling() -> None:
    geometry = GridGeometry(6, (0, 0))
    assert geometry.points(1, 0) == 2 and geometry.points(6, 0) == 2 and geometry.points(7, 0) == 3
    assert geometry.index_range(0, 64, 0, 12) == (0, 11) and geometry.index_range(58, 70, 0, 12) == (10, 12)
    grid = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    full = upsample(grid, geometry, (25, 31))
    np.testing.assert_array_equal(full[::6, ::6], grid[:5, :6])
    assert full.min() >= grid.min() and full.max() <= grid.max()


def test_refinement_equals_exact_inside_refined_tiles_and_stays_under_the_screen(red_fast_folder: Path) -> None:
    field = np.minimum(red_rod_field((40, 150), 24), red_rod_field((170, 30), 30))
    segmenter = _segmenter(red_fast_folder)
    assert segmenter.fast is not None
    exact = segmenter.segment(field, mode=Mode.EXACT)
    fast = segmenter.segment(field, mode=Mode.FAST)
    assert fast.origin.mode is Mode.FAST and fast.origin.precision == "fp32" and exact.refined_tiles is None
    assert fast.tiles == 16 and 0 < (fast.refined_tiles or 0) < fast.tiles
    cascade = fast_heatmap(field, segmenter.fast, segmenter.fast_settings, segmenter.threshold)
    assert cascade.refined.shape == (4, 4) and cascade.refined_tiles == fast.refined_tiles
    refined = np.kron(cascade.refined, np.ones((64, 64), dtype=bool))
    np.testing.assert_allclose(cascade.heatmap[refined], exact.heatmap[refined], atol=1e-6, rtol=0)
    screen = min(segmenter.fast_settings.screen_threshold, segmenter.threshold)
    assert cascade.heatmap[~refined].max() <= screen
    np.testing.assert_array_equal(fast.mask, exact.mask)
    assert len(exact.bacilli) == len(fast.bacilli) == 2
    assert [b.bbox for b in exact.bacilli] == [b.bbox for b in fast.bacilli]


def test_a_bacillus_across_a_tile_corner_is_found_whole(red_fast_folder: Path) -> None:
    field = red_rod_field((112, 112), 32)  # crosses the corner (128, 128) of four 64 px tiles
    segmenter = _segmenter(red_fast_folder)
    exact = segmenter.segment(field, mode=Mode.EXACT)
    assert len(exact.bacilli) == 1
    x, y, w, h = exact.bacilli[0].bbox
    assert x < 128 < x + w and y < 128 < y + h
    for precision in ("fp32", "int8"):
        fast = _segmenter(red_fast_folder, precision).segment(field, mode=Mode.FAST)
        assert len(fast.bacilli) == 1 and (fast.refined_tiles or 0) >= 4
        overlap = (fast.objects & exact.objects).sum() / (fast.objects | exact.objects).sum()
        assert overlap > (0.999 if precision == "fp32" else 0.95)


def test_refinement_grows_across_edges_its_mask_reaches(red_fast_folder: Path, tmp_path: Path) -> None:
    """A coarse pass that sees only the core of an object (a dimmer copy of the network) flags one tile; the
    refined mask touching that tile's edges pulls in its neighbours until the whole object is exact."""
    import onnx

    from training.model.coarse import coarse_onnx
    from training.model.export import read_metadata

    dim_path = tmp_path / "dim_coarse.onnx"
    onnx.save(coarse_onnx(redness_patch_cnn(dimmer=0.15), read_metadata(red_fast_folder / DENSE_ONNX)), dim_path)
    dense = OnnxModel(red_fast_folder / DENSE_ONNX, providers=CPU)
    dim = OnnxModel(dim_path, providers=CPU)
    field = red_rod_field((108, 108), 28)  # in tile (1, 1), its object spilling 3 px into the tiles beyond
    grid = predict_grid(field, dim, GridGeometry.of(dim))
    hot_y, hot_x = np.nonzero(grid > 0.3)
    assert hot_y.size and (6 * hot_y).min() >= 64 + 6 and (6 * hot_y).max() < 128 - 6  # flags tile (1, 1) only
    assert (6 * hot_x).min() >= 64 + 6 and (6 * hot_x).max() < 128 - 6
    networks = FastNetworks(dim, dense, "fp32", GridGeometry.of(dim))
    segmenter = Segmenter(dense, tile_px=64, fast=networks)
    exact = segmenter.segment(field, mode=Mode.EXACT)
    fast = segmenter.segment(field, mode=Mode.FAST)
    assert (fast.refined_tiles or 0) >= 3
    np.testing.assert_array_equal(fast.mask, exact.mask)
    assert [b.bbox for b in fast.bacilli] == [b.bbox for b in exact.bacilli]


def test_fast_networks_of_another_model_are_refused(red_fast_folder: Path, random_dense_onnx: Path) -> None:
    dense, coarse = _models(red_fast_folder)
    other = OnnxModel(random_dense_onnx, providers=CPU)
    with pytest.raises(ModelContractError, match="made from"):
        FastNetworks.pair(other, coarse, other, "fp32")
    with pytest.raises(ModelContractError, match="output_stride"):
        FastNetworks.pair(dense, dense, dense, "fp32")  # a dense network is no coarse one
    with pytest.raises(ModelContractError, match="precision"):
        FastNetworks.pair(dense, coarse, dense, "int4")


def test_a_model_without_fast_networks_runs_exact_only(random_dense_onnx: Path) -> None:
    segmenter = Segmenter(OnnxModel(random_dense_onnx, providers=CPU), tile_px=64)
    assert segmenter.modes == (Mode.EXACT,)
    with pytest.raises(ModeUnavailable, match="no fast-mode networks"):
        segmenter.segment(np.zeros((40, 40, 3), np.uint8), mode=Mode.FAST)
    folder = ModelFolder(random_dense_onnx.parent, "x", "", None)
    assert folder.fast_files("fp32") is None and folder.fast_files("int8") is None
