"""The engine's one entry point: a field in, its heatmap, mask and bacilli out, with stage timings.

Holds no HTTP, no settings object: plain values in, frozen dataclasses out. Thread-safe: ONNX Runtime sessions
may be run from several threads at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.engine.defaults import BATCH_TILES, MIN_OBJECT_PX, THRESHOLD, TILE_PX
from service.engine.domain import DomainCheck, DomainModel
from service.engine.fast import FastNetworks, FastSettings
from service.engine.model import OnnxModel
from service.engine.modes import Mode as Mode
from service.engine.modes import resolve_mode, unavailable
from service.engine.object_filter import ObjectFilter
from service.engine.passes import ExactPass, FastPass, InferencePass
from service.engine.postprocess import DetectedObject, find_bacilli
from service.engine.quality import QualityCheck, QualityModel
from service.engine.scale import FieldScale, ModelScale

log = logging.getLogger(__name__)


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
        origin: the model, filter, thresholds and mode that made it (its mode is the one field saying how the
            heatmap was inferred).
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
        domain: the field against the model's training domain (None when the model folder describes none).
        scale: the scale it was read at (:func:`service.engine.rescaled.segment_at_scale`); None when read as given.
        quality: whether the field is readable (:mod:`service.engine.quality`); None when the model folder has no
            limits for it.
    """

    origin: Origin
    heatmap: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    objects: npt.NDArray[np.bool_]
    bacilli: tuple[DetectedObject, ...]
    rejected: tuple[DetectedObject, ...]
    infer_seconds: float
    postprocess_seconds: float
    tiles: int
    refined_tiles: int | None = None
    coarse_seconds: float | None = None
    domain: DomainCheck | None = None
    scale: FieldScale | None = None
    quality: QualityCheck | None = None

    @property
    def heatmap_exact(self) -> bool:
        """False in fast mode: below the mask threshold the heatmap may be interpolated (outside refined tiles, and
        inside them where the cascade did not read), and with the cascade's fp32 band a refined pixel away from the
        mask threshold and the filter's sure level holds its int8 reading (within the error its folder records)."""
        return self.origin.mode is Mode.EXACT

    @property
    def bacillus_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def estimated_bacilli(self) -> int:
        """Bacilli in the kept objects, clusters counted by their estimated size."""
        return sum(b.estimated_count for b in self.bacilli)


@dataclass(frozen=True)
class Override:
    """A candidate setting given at load time that differs from what the model folder's object filter was trained
    with (its candidates are then cut unlike its training ones)."""

    name: str
    trained: float
    used: float


class Segmenter:
    """Runs a dense bacillus model over whole fields, in each mode it has a pass for
    (:mod:`service.engine.passes`).

    Args:
        model: the loaded ONNX model.
        tile_px: exact mode's side of each tile's output area (on the CUDA provider at most
            :meth:`OnnxModel.largest_tile_px <service.engine.model.OnnxModel.largest_tile_px>`: larger ones are
            reduced to it, with a warning; the mosaic is exact at any tile size).
        batch_tiles: exact mode's tiles per ONNX Runtime call.
        threshold: P(bacillus) above which a pixel is bacillus; None: what the object filter's candidates were cut
            with (its metadata), else :data:`~service.engine.defaults.THRESHOLD`.
        min_object_px: smallest reported object; None: the object filter's, else
            :data:`~service.engine.defaults.MIN_OBJECT_PX`.
        object_filter: the object classifier deciding which candidates are bacilli; None keeps them all.
        object_threshold: its default score threshold (None: the filter's own, see
            :meth:`ObjectFilter.cut <service.engine.object_filter.ObjectFilter.cut>`).
        fast: fast mode's networks (None: this segmenter runs exact mode only).
        fast_settings: how fast mode screens and refines.
        domain: the model's training domain: each field is checked against it (:mod:`service.engine.domain`).
        scale: the pixel size of the model's training fields (:mod:`service.engine.scale`); None: not declared.
        quality: the limits of the field quality check (:mod:`service.engine.quality`); None: no check.

    A ``threshold`` or ``min_object_px`` that differs from the filter's is used, logged once as a warning and
    listed in :attr:`overrides`.
    """

    def __init__(
        self,
        model: OnnxModel,
        tile_px: int = TILE_PX,
        batch_tiles: int = BATCH_TILES,
        threshold: float | None = None,
        min_object_px: int | None = None,
        object_filter: ObjectFilter | None = None,
        object_threshold: float | None = None,
        fast: FastNetworks | None = None,
        fast_settings: FastSettings | None = None,
        domain: DomainModel | None = None,
        scale: ModelScale | None = None,
        quality: QualityModel | None = None,
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
        self.object_filter = object_filter
        trained = object_filter.meta if object_filter is not None else None
        if threshold is None:
            threshold = trained.candidate_threshold if trained is not None else THRESHOLD
        if min_object_px is None:
            min_object_px = trained.min_object_px if trained is not None else MIN_OBJECT_PX
        self.threshold, self.min_object_px = float(threshold), int(min_object_px)
        self.overrides: tuple[Override, ...] = ()
        if trained is not None:
            given = (
                ("threshold", trained.candidate_threshold, self.threshold),
                ("min_object_px", trained.min_object_px, self.min_object_px),
            )
            self.overrides = tuple(Override(name, t, used) for name, t, used in given if t != used)
            for o in self.overrides:
                log.warning(
                    "model %s: %s=%s differs from the %s its object filter %s was trained with: its candidates are "
                    "cut unlike its training ones",
                    model.meta.model_id,
                    o.name,
                    o.used,
                    o.trained,
                    trained.filter_id,
                )
        self.object_threshold = object_filter.cut(object_threshold) if object_filter is not None else None
        self.fast = fast
        self.fast_settings = fast_settings or FastSettings()
        self.domain = domain
        self.scale = scale
        self.quality = quality
        passes: list[InferencePass] = [ExactPass(model, tile_px, batch_tiles)]
        if fast is not None:
            passes.append(FastPass(fast, self.fast_settings))
        self.passes: dict[Mode, InferencePass] = {p.mode: p for p in passes}

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes this segmenter can run."""
        return tuple(self.passes)

    def resolve_mode(self, asked: Mode | None, default: Mode) -> Mode:
        """The mode a field runs in (:func:`~service.engine.passes.resolve_mode`).

        Raises:
            ModeUnavailable: ``asked`` is a mode this segmenter cannot run.
        """
        return resolve_mode(self.model.meta.model_id, self.modes, asked, default)

    def _pass(self, mode: Mode) -> InferencePass:
        found = self.passes.get(Mode(mode))
        if found is None:
            raise unavailable(self.model.meta.model_id, Mode(mode))
        return found

    def origin(self, object_threshold: float | None = None, mode: Mode = Mode.EXACT) -> Origin:
        """The origin of a field segmented now in ``mode``, with ``object_threshold`` overriding the segmenter's
        own.

        Raises:
            ModeUnavailable: ``mode`` is one this segmenter cannot run.
        """
        filter_id, cut = None, None
        if self.object_filter is not None:
            filter_id = self.object_filter.meta.filter_id
            cut = float(object_threshold) if object_threshold is not None else self.object_threshold
        inference = self._pass(mode)
        return Origin(
            self.model.meta.model_id,
            filter_id,
            self.threshold,
            cut,
            self.min_object_px,
            inference.mode,
            inference.precision,
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
        return self._pass(mode).run(self.prepare(rgb, background), self.threshold).heatmap

    def segment(
        self,
        rgb: npt.NDArray[np.uint8],
        *,
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
        inference = self._pass(mode)
        started = time.perf_counter()
        origin = self.origin(object_threshold, inference.mode)
        domain = self.domain.check(rgb) if self.domain is not None else None
        quality = self.quality.check(rgb) if self.quality is not None else None
        field = self.prepare(rgb, background)
        inferred_pass = inference.run(field, self.threshold)
        heatmap = inferred_pass.heatmap
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
            tiles=inferred_pass.tiles,
            refined_tiles=inferred_pass.refined_tiles,
            coarse_seconds=inferred_pass.coarse_seconds,
            domain=domain,
            quality=quality,
        )

    def warm_up(self, mode: Mode = Mode.EXACT) -> float:
        """Run ``mode``'s networks once at full size (exact: one tile; fast: a block of the coarse pass and a batch
        of refinement tiles) so allocation and algorithm search happen before the first request.

        Only that mode's memory is allocated: a service whose requests run fast mode never holds exact mode's
        buffers (measured: ``bench/fast_mode.py --rss``). The other mode's first field pays its allocation.

        Returns:
            the seconds it took.
        """
        inference = self._pass(mode)
        started = time.perf_counter()
        what = inference.warm_up()
        seconds = time.perf_counter() - started
        log.info(
            "warm-up (%s mode): %s in %.2f s on %s",
            inference.mode.value,
            what,
            seconds,
            ", ".join(self.model.providers),
        )
        return seconds
