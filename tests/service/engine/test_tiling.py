"""Tile plans: every pixel written exactly once, one tile shape per field, sizes from 1×1 up."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.tiling import tile_grid, tile_shape


@pytest.mark.parametrize("seed", range(30))
def test_tiles_cover_every_pixel_once(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 400)), int(rng.integers(1, 400)))
    tile_px = int(rng.integers(1, 300))
    written = np.zeros(shape, dtype=int)
    for t in tile_grid(shape, tile_px):
        assert 0 < t.height <= tile_px and 0 < t.width <= tile_px
        written[t.y : t.y + t.height, t.x : t.x + t.width] += 1
    assert (written == 1).all()


def test_one_shape_for_all_tiles() -> None:
    assert tile_shape((1944, 2592), 512) == (512, 512)
    assert tile_shape((30, 2592), 512) == (30, 512)
    assert len(tile_grid((1944, 2592), 512)) == 4 * 6


def test_bad_plans() -> None:
    with pytest.raises(ValueError, match="at least one pixel"):
        tile_grid((0, 5), 8)
    with pytest.raises(ValueError, match="positive"):
        tile_grid((5, 5), 0)
