"""Loading a segmenter: the dense model, its object filter (checked to belong to it) and their settings.

The service's start-up, its reload and the batch command all load through here, from plain values
(:class:`SegmenterConfig`); the settings object stays in the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from service.engine.cascade import Cascade, CascadeFiles
from service.engine.defaults import BATCH_TILES, TILE_PX
from service.engine.domain import DomainModel
from service.engine.errors import ModelContractError
from service.engine.fast import FastNetworks, FastSettings
from service.engine.model import OnnxModel
from service.engine.model_folder import ModelFolder, check_pair
from service.engine.object_filter import ObjectFilter
from service.engine.quality import QualityModel
from service.engine.scale import ModelScale
from service.engine.segmenter import Segmenter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything needed to load a :class:`Segmenter`.

    Attributes:
        model_path: the dense ONNX model.
        providers: ONNX Runtime execution providers in order of preference.
        intra_op_threads: threads per operator; 0 lets ONNX Runtime choose.
        object_filter_path: the object filter ONNX, or None to keep every candidate.
        tile_px: side of each tile's output area.
        batch_tiles: tiles per ONNX Runtime call.
        threshold: P(bacillus) above which a pixel is bacillus (None: what the folder's object filter was trained
            with, see :class:`Segmenter`).
        min_object_px: smallest candidate (None: the object filter's).
        object_threshold: filter score a candidate needs (None: the filter's own).
        fast_paths: fast mode's (coarse, refinement) networks, or None for exact mode only
            (:meth:`ModelFolder.fast_networks <service.engine.model_folder.ModelFolder.fast_networks>`).
        fast_precision: their precision, ``fp32`` or ``int8``.
        cascade_path: the folder's ``cascade.json`` (:mod:`service.engine.cascade`), or None to read every grid
            point and refined pixel; used for fp32 on the CPU only.
        cascade_screening: the cascade's coarse grid read by its int8 screening parts (``int8``, when the folder
            has them) or in fp32 (:class:`service.engine.cascade.Cascade`).
        fast_settings: how fast mode screens and refines.
        domain_path: the folder's ``domain.json`` (None: fields are not checked against a domain).
        scale_path: the folder's ``scale.json`` (None: the model declares no pixel size; fields are read as given).
        quality_path: the folder's ``quality.json`` (None: fields get no quality check).
    """

    model_path: Path
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    intra_op_threads: int = 0
    object_filter_path: Path | None = None
    tile_px: int = TILE_PX
    batch_tiles: int = BATCH_TILES
    threshold: float | None = None
    min_object_px: int | None = None
    object_threshold: float | None = None
    fast_paths: tuple[Path, Path] | None = None
    fast_precision: str = "fp32"
    cascade_path: Path | None = None
    cascade_screening: str = "int8"
    fast_settings: FastSettings = field(default_factory=FastSettings)
    domain_path: Path | None = None
    scale_path: Path | None = None
    quality_path: Path | None = None

    @classmethod
    def of_folder(cls, folder: ModelFolder, domain: bool = False) -> SegmenterConfig:
        """A model folder's segmenter on the CPU with its object filter and fp32 fast networks, and (with
        ``domain``) its domain check: how training reads fields through a folder as the service does."""
        return cls(
            model_path=folder.dense,
            providers=("CPUExecutionProvider",),
            object_filter_path=folder.object_filter,
            fast_paths=folder.fast_networks("fp32")[0],
            cascade_path=folder.cascade,
            domain_path=folder.domain if domain else None,
            scale_path=folder.scale,
            quality_path=folder.quality if domain else None,
        )


def _same_model(path: Path, described: str, model_id: str, command: str) -> None:
    """A file of the folder describes its model, not another (``command`` writes it again)."""
    if described != model_id:
        raise ModelContractError(
            f"{path}: describes {described}, not {model_id}; write it again (python -m training {command})"
        )


def _with_cascade(config: SegmenterConfig, model: OnnxModel, fast: FastNetworks) -> FastNetworks:
    """``fast`` with the folder's cascade, where it applies: fp32 networks on the CPU (measured there; on CUDA the
    gathering between its calls is not measured, so fast mode reads everything as before)."""
    if config.cascade_path is None:
        return fast
    if fast.precision != "fp32" or model.providers[0] != "CPUExecutionProvider":
        log.info(
            "fast mode's cascade not used: %s on %s (it is for fp32 on the CPU)", fast.precision, model.providers[0]
        )
        return fast
    cascade = Cascade(
        CascadeFiles.load(config.cascade_path),
        model,
        fast.geometry,
        providers=config.providers,
        intra_op_threads=config.intra_op_threads,
        screening=config.cascade_screening,
    )
    rule = cascade.rule
    log.info(
        "fast mode's cascade: every %d grid points first (more around P > %g), every %d px of a refined tile first "
        "(more around P > %g); coarse grid in %s%s%s",
        rule.first_step,
        cascade.first_threshold,
        rule.refine_step,
        rule.refine_threshold,
        "int8" if cascade.screening is not None else "fp32",
        f" (screening margin {cascade.screen_margin:g})" if cascade.screening is not None else "",
        f"; refined pixels in int8, in fp32 within {cascade.screening.band_logit:g} logits of the mask threshold"
        if cascade.screening is not None and cascade.screening.band_logit is not None
        else "",
    )
    return replace(fast, cascade=cascade)


def load_segmenter(config: SegmenterConfig) -> Segmenter:
    """Load the model and its filter and wrap them in a segmenter.

    Raises:
        ModelContractError: a missing or unreadable file, bad metadata, or a filter or domain of another model.
    """
    model = OnnxModel(config.model_path, providers=config.providers, intra_op_threads=config.intra_op_threads)
    log.info("model %s loaded from %s on %s", model.meta.model_id, config.model_path, ", ".join(model.providers))
    object_filter = None
    if config.object_filter_path is not None:
        object_filter = ObjectFilter(config.object_filter_path)
        check_pair(model, object_filter)
        log.info("object filter %s loaded, threshold %s", object_filter.meta.filter_id, object_filter.meta.threshold)
    else:
        log.info("no object filter: every candidate is reported")
    fast = None
    if config.fast_paths is not None:
        coarse_path, refine_path = config.fast_paths
        providers, threads = config.providers, config.intra_op_threads
        coarse = OnnxModel(coarse_path, providers=providers, intra_op_threads=threads)
        refine = (
            model
            if refine_path == config.model_path
            else OnnxModel(refine_path, providers=providers, intra_op_threads=threads)
        )
        fast = FastNetworks.pair(model, coarse, refine, config.fast_precision)
        stride, name = fast.geometry.stride, refine_path.name
        log.info("fast mode: %s, coarse pass every %d px, refinement by %s", fast.precision, stride, name)
        fast = _with_cascade(config, model, fast)
    domain = None
    if config.domain_path is not None:
        domain = DomainModel.load(config.domain_path)
        _same_model(config.domain_path, domain.model_id, model.meta.model_id, "domain")
        log.info("domain check: %s, limit %.1f robust SD", domain.source, domain.z_limit)
    scale = None
    if config.scale_path is not None:
        scale = ModelScale.load(config.scale_path)
        _same_model(config.scale_path, scale.model_id, model.meta.model_id, "pixel-size")
        log.info("model scale: %.4g µm per pixel (%s)", scale.pixel_size_um, scale.how)
    quality = None
    if config.quality_path is not None:
        quality = QualityModel.load(config.quality_path)
        _same_model(config.quality_path, quality.model_id, model.meta.model_id, "quality")
        log.info("field quality check: %s", quality.source)
    return Segmenter(
        model,
        tile_px=config.tile_px,
        batch_tiles=config.batch_tiles,
        threshold=config.threshold,
        min_object_px=config.min_object_px,
        object_filter=object_filter,
        object_threshold=config.object_threshold,
        fast=fast,
        fast_settings=config.fast_settings,
        domain=domain,
        scale=scale,
        quality=quality,
    )
