"""How a field's heatmap is inferred: a *pass* per mode, each with the same small interface.

* :class:`ExactPass`: every pixel through the dense network in halo tiles (:mod:`service.engine.mosaic`), equal to
  patch-by-patch scanning;
* :class:`FastPass`: a coarse pass, then the dense network only on the tiles around what it saw
  (:mod:`service.engine.fast`); the heatmap elsewhere is approximate.

A :class:`~service.engine.segmenter.Segmenter` holds one pass per mode it can run and never branches on the mode
itself; :func:`~service.engine.modes.resolve_mode` is the one rule for which mode a request runs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from service.engine.defaults import BATCH_TILES, TILE_PX
from service.engine.fast import FastNetworks, FastSettings, fast_heatmap
from service.engine.model import OnnxModel
from service.engine.modes import Mode
from service.engine.mosaic import predict_tiled
from service.engine.tiling import tile_count


@dataclass(frozen=True)
class PassResult:
    """A heatmap and what it cost.

    Attributes:
        heatmap: ``[y, x]`` float32 P(bacillus).
        tiles: tiles the field was cut into (fast mode: refinement tiles).
        refined_tiles: fast mode: the tiles that went through the dense network (None when every tile did).
        coarse_seconds: the coarse pass's share of the time (None without one).
    """

    heatmap: npt.NDArray[np.float32]
    tiles: int
    refined_tiles: int | None = None
    coarse_seconds: float | None = None


class InferencePass(Protocol):
    """One mode's way from a (normalised) field to its heatmap."""

    @property
    def mode(self) -> Mode: ...

    @property
    def precision(self) -> str:
        """The networks' arithmetic: ``fp32``, or ``int8`` for fast mode's quantised copies."""
        ...

    def run(self, field: npt.NDArray[np.uint8], threshold: float) -> PassResult:
        """The heatmap of a ``[y, x, 3]`` uint8 field (``threshold``: the mask's, which fast mode's refinement
        follows across tile edges)."""
        ...

    def warm_up(self) -> str:
        """Run the networks once at full size (allocation and algorithm search before the first request);
        returns what was run, for the log."""
        ...


class ExactPass:
    """Every pixel through the dense network, in halo tiles of ``tile_px`` (``batch_tiles`` per call)."""

    mode = Mode.EXACT
    precision = "fp32"

    def __init__(self, model: OnnxModel, tile_px: int = TILE_PX, batch_tiles: int = BATCH_TILES) -> None:
        self.model, self.tile_px, self.batch_tiles = model, tile_px, batch_tiles

    def run(self, field: npt.NDArray[np.uint8], threshold: float) -> PassResult:
        meta = self.model.meta
        heatmap = predict_tiled(
            field,
            self.model.run,
            halo_px=meta.halo_px,
            input_scale=meta.input_scale,
            padding=meta.input_padding,
            tile_px=self.tile_px,
            batch_tiles=self.batch_tiles,
            channel=meta.positive_index,
        )
        return PassResult(heatmap, tile_count(field.shape[:2], self.tile_px))

    def warm_up(self) -> str:
        self.run(np.full((self.tile_px, self.tile_px, 3), 200, dtype=np.uint8), 0.5)
        return f"one {self.tile_px} px tile"


class FastPass:
    """The coarse pass, then the dense network on the tiles around what it saw (:func:`fast_heatmap`)."""

    mode = Mode.FAST

    def __init__(self, networks: FastNetworks, settings: FastSettings) -> None:
        self.networks, self.settings = networks, settings

    @property
    def precision(self) -> str:
        return self.networks.precision

    def run(self, field: npt.NDArray[np.uint8], threshold: float) -> PassResult:
        fast = fast_heatmap(field, self.networks, self.settings, threshold)
        return PassResult(fast.heatmap, fast.tiles, fast.refined_tiles, fast.coarse_seconds)

    def warm_up(self) -> str:
        settings, halo = self.settings, self.networks.refine.meta.halo_px
        block = self.networks.geometry.stride * (settings.block_points - 1) + 2 * halo + 1
        self.networks.coarse.run(np.zeros((1, block, block, 3), np.float32))
        read = settings.tile_px + 2 * halo
        self.networks.refine.run(np.zeros((settings.batch_tiles, read, read, 3), np.float32))
        if self.networks.cascade is not None:
            self.networks.cascade.warm_up(settings.tile_px, settings.batch_tiles)
            return (
                f"a coarse block of {settings.block_points}² grid points, {settings.batch_tiles} tiles and the cascade"
            )
        return f"a coarse block of {settings.block_points}² grid points and {settings.batch_tiles} tiles"
