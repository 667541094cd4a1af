"""The engine's default values, in one place.

A model folder owns the numbers its parts were trained with: the object filter's metadata records the candidate
threshold and the minimum candidate size its training candidates were cut with, and a segmenter loaded with a
filter uses those (:func:`service.engine.loading.load_segmenter`). The constants here are what a model without a
filter, and training before a filter exists, use: the paper's mask threshold and our smallest candidate.
"""

from __future__ import annotations

THRESHOLD = 0.5
"""P(bacillus) above which a pixel belongs to the mask and to a candidate (the paper's binary mask)."""

MIN_OBJECT_PX = 20
"""The smallest candidate, in pixels; smaller components of the mask are not reported."""

TILE_PX = 256
"""Side of a tile's output area in exact mode. The mosaic is exact at any size; this one is the fastest measured
on 2 CPU cores (``docs/results.md``)."""

BATCH_TILES = 1
"""Tiles per ONNX Runtime call in exact mode."""
