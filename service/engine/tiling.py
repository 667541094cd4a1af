"""Exact halo tiling: which part of the padded field each tile reads, and where its output goes.

Vocabulary from CSBDeep: a tile *reads* a window of the padded field (its output area grown by the halo on
every side) and *writes* its output area of the field. The network is local with a receptive field of
``2·halo + 1``, so each output pixel depends only on pixels the tile read: the mosaic equals one pass over the
whole padded field, with no blending and no seams. Every tile has the same shape; the last row and column of
tiles overhang the field, and their overhang is cropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    """One tile: output area ``[y, y + height) × [x, x + width)`` of the field, read from the padded field.

    In padded coordinates (the field shifted by ``halo``), the tile reads
    ``[y, y + tile_h + 2·halo) × [x, x + tile_w + 2·halo)``; of its ``tile_h × tile_w`` outputs the first
    ``height × width`` are inside the field.
    """

    y: int
    x: int
    height: int
    width: int

    def __repr__(self) -> str:
        return f"Tile(write y={self.y}:{self.y + self.height} x={self.x}:{self.x + self.width})"


def tile_shape(field_hw: tuple[int, int], tile_px: int) -> tuple[int, int]:
    """The one output shape every tile of this field has: ``tile_px`` square, or the field if smaller."""
    return min(tile_px, field_hw[0]), min(tile_px, field_hw[1])


def tile_count(field_hw: tuple[int, int], tile_px: int) -> int:
    """How many tiles :func:`tile_grid` cuts a field of ``field_hw`` pixels into, without making them."""
    tile_h, tile_w = tile_shape(field_hw, tile_px)
    return math.ceil(field_hw[0] / tile_h) * math.ceil(field_hw[1] / tile_w)


def tile_grid(field_hw: tuple[int, int], tile_px: int) -> list[Tile]:
    """Tiles covering a field of ``field_hw`` pixels with outputs of at most ``tile_px`` square.

    Raises:
        ValueError: an empty field or a non-positive tile size.
    """
    height, width = field_hw
    if height < 1 or width < 1:
        raise ValueError(f"field must have at least one pixel, got {height}×{width}")
    if tile_px < 1:
        raise ValueError(f"tile_px must be positive, got {tile_px}")
    tile_h, tile_w = tile_shape(field_hw, tile_px)
    return [
        Tile(y, x, min(tile_h, height - y), min(tile_w, width - x))
        for y in range(0, tile_h * math.ceil(height / tile_h), tile_h)
        for x in range(0, tile_w * math.ceil(width / tile_w), tile_w)
    ]
