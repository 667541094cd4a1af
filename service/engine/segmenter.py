"""The engine's one entry point: a field in, its heatmap, mask and bacilli out, with stage timings.

Holds no HTTP, no settings object: plain values in, frozen dataclasses out. Thread-safe: ONNX Runtime sessions
may be run from several threads at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from service.engine.errors import ModeUnavailable
from service.engine.fast import FastHeatmap, FastNetworks, FastSettings, fast_heatmap
from service.engine.model import OnnxModel
from service.engine.mosaic import predict_tiled
from service.engine.object_filter import ObjectFilter
from service.engine.postprocess import Bacillus, find_bacilli
from service.engine.tiling import tile_grid

log = logging.getLogger(__name__)


class Mode(StrEnum):
    """How a field was inferred. ``exact``: every pixel through the dense network, equal to patch-by-patch
    scanning. ``fast``: a coarse pass, then the dense network only on the tiles around what it saw
    (:mod:`service.engine.fast`); the heatmap elsewhere is approximate."""

    EXACT = "exact"
    FAST = "fast"


@dataclass(frozen=True)
class Origin:
    """Where a field's result came from: what a client needs to reproduce or compare it.

    Attributes:
        model_id: the dense model's id.
        filter_id: the object filter's id, or None when every candidate is kept.
        threshold: P(bacillus) above which a pixel belongs to the mask and to a candidate.
        object_threshold: the filter score a candidate needed to be kept; None without a filter.
        min_object_px: the smallest candidate.
        mode: how the heatmap was inferred.
        precision: the networks' arithmetic: ``fp32``, or ``int8`` for fast mode's quantised networks.
    """

    model_id: str
    filter_id: str | None
    threshold: float
    object_threshold: float | None
    min_object_px: int
    mode: Mode = Mode.EXACT
    precision: str = "fp32"


@dataclass(frozen=True)
class Segmentation:
    """One field's result.

    Attributes:
        origin: the model, filter, thresholds and mode that made it.
        heatmap: ``[y, x]`` float32 P(bacillus).
        mask: ``[y, x]`` bool, ``heatmap > threshold`` (the paper's binary mask, every pixel).
        objects: ``[y, x]`` bool, the pixels of the kept bacilli only (all False unless asked for).
        bacilli: kept objects: candidates of at least ``min_object_px`` pixels that the object filter kept (all
            of them without a filter); empty unless asked for.
        rejected: candidates the object filter rejected (empty without a filter or unless asked for).
        infer_seconds: time spent in the network (tiling included).
        postprocess_seconds: time spent finding and measuring objects.
        tiles: tiles the field was cut into (fast mode: refinement tiles).
        refined_tiles: fast mode: the tiles that went through the dense network (None in exact mode).
        coarse_seconds: fast mode: the coarse pass's share of ``infer_seconds`` (None in exact mode).
    """

    origin: Origin
    heatmap: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    objects: npt.NDArray[np.bool_]
    bacilli: tuple[Bacillus, ...]
    rejected: tuple[Bacillus, ...]
    infer_seconds: float
    postprocess_seconds: float
    tiles: int
    refined_tiles: int | None = None
    coarse_seconds: float | None = None

    @property
    def bacillus_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def estimated_bacilli(self) -> int:
        """Bacilli in the kept objects, clusters counted by their estimated size."""
        return sum(b.estimated_count for b in self.bacilli)


class Segmenter:
    """Runs a dense bacillus model over whole fields.

    Args:
        model: the loaded ONNX model.
        tile_px: side of each tile's output area (on the CUDA provider at most
            :meth:`OnnxModel.largest_tile_px <service.engine.model.OnnxModel.largest_tile_px>`: larger ones are
            reduced to it, with a warning; the mosaic is exact at any tile size).
        batch_tiles: tiles per ONNX Runtime call.
        threshold: P(bacillus) above which a pixel is bacillus.
        min_object_px: smallest reported object.
        object_filter: the object classifier deciding which candidates are bacilli; None keeps them all.
        object_threshold: its default score threshold (None: the filter's own, see
            :meth:`ObjectFilter.cut <service.engine.object_filter.ObjectFilter.cut>`).
        fast: fast mode's networks (None: this segmenter runs exact mode only).
        fast_settings: how fast mode screens and refines.
    """

    def __init__(
        self,
        model: OnnxModel,
        tile_px: int = 512,
        batch_tiles: int = 1,
        threshold: float = 0.5,
        min_object_px: int = 20,
        object_filter: ObjectFilter | None = None,
        object_threshold: float | None = None,
        fast: FastNetworks | None = None,
        fast_settings: FastSettings | None = None,
    ) -> None:
        largest = model.largest_tile_px(batch_tiles)
        if largest is not None and tile_px > largest:
            log.warning(
                "tiles of %d px with %d per call are too large for %s (cuDNN's limit on a tensor): using %d px "
                "tiles, which give the same result",
                tile_px,
                batch_tiles,
                model.providers[0],
                largest,
            )
            tile_px = largest
        self.model, self.tile_px, self.batch_tiles = model, tile_px, batch_tiles
        self.threshold, self.min_object_px = threshold, min_object_px
        self.object_filter = object_filter
        self.object_threshold = object_filter.cut(object_threshold) if object_filter is not None else None
        self.fast = fast
        self.fast_settings = fast_settings or FastSettings()

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes this segmenter can run."""
        return (Mode.EXACT, Mode.FAST) if self.fast is not None else (Mode.EXACT,)

    def check_mode(self, mode: Mode) -> None:
        """Raises :class:`ModeUnavailable` unless this segmenter can run ``mode``."""
        if mode not in self.modes:
            raise ModeUnavailable(
                f"model {self.model.meta.model_id} has no fast-mode networks (python -m training fast writes them)"
            )

    def origin(self, object_threshold: float | None = None, mode: Mode = Mode.EXACT) -> Origin:
        """The origin of a field segmented now in ``mode``, with ``object_threshold`` overriding the segmenter's
        own."""
        filter_id, cut = None, None
        if self.object_filter is not None:
            filter_id = self.object_filter.meta.filter_id
            cut = float(object_threshold) if object_threshold is not None else self.object_threshold
        precision = self.fast.precision if mode is Mode.FAST and self.fast is not None else "fp32"
        return Origin(
            self.model.meta.model_id, filter_id, self.threshold, cut, self.min_object_px, Mode(mode), precision
        )

    def prepare(
        self, rgb: npt.NDArray[np.uint8], background: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.uint8]:
        """The field as the network and the object filter see it: normalised when the model declares
        ``input_normalisation`` (:mod:`service.engine.normalisation`), else ``rgb`` itself.

        ``background`` (for a crop or patch of a larger field) replaces the estimate from ``rgb``.
        """
        normalisation = self.model.meta.normalisation
        return rgb if normalisation is None else normalisation.apply(rgb, background)

    def heatmap(
        self,
        rgb: npt.NDArray[np.uint8],
        background: npt.NDArray[np.float32] | None = None,
        mode: Mode = Mode.EXACT,
    ) -> npt.NDArray[np.float32]:
        """P(bacillus) of every pixel of the field ``rgb`` (normalised first, see :meth:`prepare`) in ``mode``."""
        field = self.prepare(rgb, background)
        if Mode(mode) is Mode.FAST:
            return self._fast(field).heatmap
        return self._predict(field)

    def _fast(self, field: npt.NDArray[np.uint8]) -> FastHeatmap:
        self.check_mode(Mode.FAST)
        assert self.fast is not None  # check_mode refused otherwise
        return fast_heatmap(field, self.fast, self.fast_settings, self.threshold)

    def _predict(self, field: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        meta = self.model.meta
        return predict_tiled(
            field,
            self.model.run,
            halo_px=meta.halo_px,
            input_scale=meta.input_scale,
            padding=meta.input_padding,
            tile_px=self.tile_px,
            batch_tiles=self.batch_tiles,
            channel=meta.positive_index,
        )

    def segment(
        self,
        rgb: npt.NDArray[np.uint8],
        find_objects: bool = True,
        object_threshold: float | None = None,
        background: npt.NDArray[np.float32] | None = None,
        mode: Mode = Mode.EXACT,
    ) -> Segmentation:
        """Heatmap, mask and (when ``find_objects``) bacilli of one ``[y, x, 3]`` uint8 field, in ``mode``.

        ``object_threshold`` overrides the segmenter's filter threshold for this field; ``background`` the
        normalisation's estimate (for a crop of a larger field, see :meth:`prepare`). The object filter measures
        candidates on the normalised field, as it was trained.

        Raises:
            ModeUnavailable: ``mode`` is fast and this segmenter has no fast networks.
        """
        mode = Mode(mode)
        self.check_mode(mode)
        started = time.perf_counter()
        origin = self.origin(object_threshold, mode)
        field = self.prepare(rgb, background)
        fast = self._fast(field) if mode is Mode.FAST else None
        heatmap = fast.heatmap if fast is not None else self._predict(field)
        inferred = time.perf_counter()
        mask = heatmap > self.threshold
        if find_objects:
            found = find_bacilli(
                heatmap, field, self.threshold, self.min_object_px, self.object_filter, origin.object_threshold
            )
            objects, bacilli, rejected = found.kept_mask, found.kept, found.rejected
        else:
            objects, bacilli, rejected = np.zeros_like(mask), (), ()
        done = time.perf_counter()
        return Segmentation(
            origin=origin,
            heatmap=heatmap,
            mask=mask,
            objects=objects,
            bacilli=bacilli,
            rejected=rejected,
            infer_seconds=inferred - started,
            postprocess_seconds=done - inferred,
            tiles=fast.tiles if fast is not None else len(tile_grid(rgb.shape[:2], self.tile_px)),
            refined_tiles=fast.refined_tiles if fast is not None else None,
            coarse_seconds=fast.coarse_seconds if fast is not None else None,
        )

    def warm_up(self, mode: Mode = Mode.EXACT) -> float:
        """Run ``mode``'s networks once at full size (exact: one tile; fast: a block of the coarse pass and a batch
        of refinement tiles) so allocation and algorithm search happen before the first request.

        Only that mode's memory is allocated: a service whose requests run fast mode never holds exact mode's
        buffers (measured: ``bench/fast_mode.py --rss``). The other mode's first field pays its allocation.

        Returns:
            the seconds it took.
        """
        mode = Mode(mode)
        self.check_mode(mode)
        started = time.perf_counter()
        if mode is Mode.FAST:
            assert self.fast is not None  # check_mode refused otherwise
            settings, halo = self.fast_settings, self.model.meta.halo_px
            block = self.fast.geometry.stride * (settings.block_points - 1) + 2 * halo + 1
            self.fast.coarse.run(np.zeros((1, block, block, 3), np.float32))
            read = settings.tile_px + 2 * halo
            self.fast.refine.run(np.zeros((settings.batch_tiles, read, read, 3), np.float32))
            what = f"a coarse block of {settings.block_points}² grid points and {settings.batch_tiles} tiles"
        else:
            side = self.tile_px
            self.heatmap(np.full((side, side, 3), 200, dtype=np.uint8))
            what = f"one {side} px tile"
        seconds = time.perf_counter() - started
        log.info("warm-up (%s mode): %s in %.2f s on %s", mode.value, what, seconds, ", ".join(self.model.providers))
        return seconds
