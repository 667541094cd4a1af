"""Loading a segmenter: the dense model, its object filter (checked to belong to it) and their settings.

The service's start-up, its reload and the batch command all load through here, from plain values
(:class:`SegmenterConfig`); the settings object stays in the service.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.engine.model import OnnxModel
from service.engine.model_folder import check_pair
from service.engine.object_filter import ObjectFilter
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
        threshold: P(bacillus) above which a pixel is bacillus.
        min_object_px: smallest candidate.
        object_threshold: filter score a candidate needs (None: the filter's own).
    """

    model_path: Path
    providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    intra_op_threads: int = 0
    object_filter_path: Path | None = None
    tile_px: int = 256
    batch_tiles: int = 1
    threshold: float = 0.5
    min_object_px: int = 20
    object_threshold: float | None = None


def load_segmenter(config: SegmenterConfig) -> Segmenter:
    """Load the model and its filter and wrap them in a segmenter.

    Raises:
        ModelContractError: a missing or unreadable file, bad metadata, or a filter of another model.
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
    return Segmenter(
        model,
        tile_px=config.tile_px,
        batch_tiles=config.batch_tiles,
        threshold=config.threshold,
        min_object_px=config.min_object_px,
        object_filter=object_filter,
        object_threshold=config.object_threshold,
    )
