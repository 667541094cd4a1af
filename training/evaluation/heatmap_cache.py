"""Heatmaps of evaluated fields, cached as float32 ``.npy`` under ``cache/<model_id>/<field>-<image digest>.npy``,
so re-scoring (other thresholds, rules, pictures, the object filter's training) costs no inference.

Heatmaps are computed by the service's engine (:class:`service.engine.segmenter.Segmenter`), the same exact
tiling the service runs; any tile size gives the same heatmap.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.engine.defaults import TILE_PX
from service.engine.model import OnnxModel
from service.engine.segmenter import Segmenter
from training.evaluation.truth import image_digest
from training.paths import DEFAULT_CACHE


def cached_heatmap(
    model: OnnxModel,
    field_id: str,
    image: npt.NDArray[np.uint8],
    cache: Path = DEFAULT_CACHE,
    tile_px: int = TILE_PX,
    digest: str | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """The field's P(bacillus) heatmap from the cache, else computed and cached.

    Returns:
        the heatmap and the seconds spent computing it (0 when cached).
    """
    path = cache / model.meta.model_id / f"{field_id}-{digest or image_digest(image)}.npy"
    if path.is_file():
        return np.load(path), 0.0
    started = time.perf_counter()
    heatmap = Segmenter(model, tile_px=tile_px).heatmap(image)
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, heatmap)
    return heatmap, seconds
