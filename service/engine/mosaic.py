"""Whole-field inference, tile by tile, reassembled exactly (see :mod:`service.engine.tiling`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from service.engine.defaults import TILE_PX
from service.engine.errors import InvalidImage
from service.engine.model import Padding
from service.engine.tiling import Tile, tile_grid, tile_shape

Predictor = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    for start in range(0, len(tiles), size):
        yield tiles[start : start + size]


class PaddedField:
    """A field padded once for exact halo tiling, whose tiles (all of them, or any subset) can be run.

    Args:
        image: ``[y, x, 3]`` uint8 RGB field, any size from 1×1.
        halo_px: context each side needs (receptive field // 2).
        input_scale: factor applied to 0..255 values before the predictor.
        padding: ``np.pad`` mode at the field's border; must be the one the model was trained with.
        tile_px: side of a tile's output area; every tile has the same shape.

    Raises:
        InvalidImage: not a ``[y, x, 3]`` uint8 array.
    """

    def __init__(
        self,
        image: npt.NDArray[np.uint8],
        *,
        halo_px: int,
        input_scale: float,
        padding: Padding = "reflect",
        tile_px: int = TILE_PX,
    ) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidImage(f"expected a [y, x, 3] uint8 RGB array, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        self.tiles = tile_grid((height, width), tile_px)
        self.tile_h, self.tile_w = tile_shape((height, width), tile_px)
        self.columns = math.ceil(width / self.tile_w)
        # Mirror-pad by the halo, then pad the overhang of the last tiles (its outputs are discarded).
        padded = np.pad(image, ((halo_px, halo_px), (halo_px, halo_px), (0, 0)), mode=padding)
        overhang_y = max(t.y for t in self.tiles) + self.tile_h - height
        overhang_x = max(t.x for t in self.tiles) + self.tile_w - width
        self.padded = np.pad(padded, ((0, overhang_y), (0, overhang_x), (0, 0)), mode="edge")
        self.read_h, self.read_w = self.tile_h + 2 * halo_px, self.tile_w + 2 * halo_px
        self.scale = np.float32(input_scale)
        self.shape = (height, width)

    def run(
        self,
        tiles: Sequence[Tile],
        predictor: Predictor,
        out: npt.NDArray[np.float32],
        *,
        batch_tiles: int = 1,
        channel: int = 1,
    ) -> None:
        """Run ``predictor`` on ``tiles`` (of :attr:`tiles`) and write their outputs' ``channel`` into ``out``.

        ``predictor`` maps a float32 batch ``[n, th + 2·halo, tw + 2·halo, 3]`` to ``[n, th, tw, classes]``.
        """
        read_h, read_w = self.read_h, self.read_w
        for group in _batches(list(tiles), max(1, batch_tiles)):
            windows = [self.padded[t.y : t.y + read_h, t.x : t.x + read_w] for t in group]
            batch = np.stack(windows).astype(np.float32)
            batch *= self.scale
            result = predictor(batch)
            for t, probabilities in zip(group, result, strict=True):
                out[t.y : t.y + t.height, t.x : t.x + t.width] = probabilities[: t.height, : t.width, channel]


def predict_tiled(
    image: npt.NDArray[np.uint8],
    predictor: Predictor,
    *,
    halo_px: int,
    input_scale: float,
    padding: Padding = "reflect",
    tile_px: int = TILE_PX,
    batch_tiles: int = 1,
    channel: int = 1,
) -> npt.NDArray[np.float32]:
    """Run ``predictor`` over a whole field in tiles and return one output channel for every pixel.

    Args:
        image: ``[y, x, 3]`` uint8 RGB field, any size from 1×1.
        predictor: maps a float32 batch ``[n, th + 2·halo, tw + 2·halo, 3]`` to ``[n, th, tw, classes]``
            (an :meth:`OnnxModel.run <service.engine.model.OnnxModel.run>`, or any local function in tests).
        halo_px: context each side needs (receptive field // 2).
        input_scale: factor applied to 0..255 values before the predictor.
        padding: ``np.pad`` mode at the field's border; must be the one the model was trained with.
        tile_px: side of a tile's output area; every tile has the same shape.
        batch_tiles: tiles per predictor call.
        channel: output channel to keep (the ``bacillus`` class).

    Returns:
        ``[y, x]`` float32 map of that channel, equal to one pass over the whole padded field.

    Raises:
        InvalidImage: not a ``[y, x, 3]`` uint8 array.
    """
    field = PaddedField(image, halo_px=halo_px, input_scale=input_scale, padding=padding, tile_px=tile_px)
    out = np.empty(field.shape, dtype=np.float32)
    field.run(field.tiles, predictor, out, batch_tiles=batch_tiles, channel=channel)
    return out
