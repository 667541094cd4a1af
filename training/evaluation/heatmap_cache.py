"""How training reads a model's heatmaps, and the cache that keeps them.

Training reads fields through the service's engine (:class:`service.engine.segmenter.Segmenter`) in the same mode
as the service's default where the result is the same (:class:`HeatmapReader`):

* **fast** (the default) when the model's folder holds its fast networks (``bacilli_coarse.onnx`` made from this
  dense network) and every threshold the caller cuts the heatmap at is at or above the mask threshold fast mode
  refines to (:data:`~service.engine.defaults.THRESHOLD`). Above it fast mode's heatmap *is* exact mode's: every
  pixel above it lies in a refined tile, which went through the dense network exactly as in exact mode (measured:
  the same masks and kept bacilli on every test field of both labs, ``docs/results.md`` sections 10 and 15).
  Below it the heatmap is the coarse grid interpolated, so a caller that reads low probabilities (a threshold
  sweep below it, Platt calibration's logits of background pixels) asks for exact mode;
* **exact** on request, for a model without fast networks (a training run's ``model.onnx``), or for a cut below
  that threshold; the reader says why (:attr:`HeatmapReader.why`).

Heatmaps are cached as float32 ``.npy`` under ``cache/<model_id>/<field>-<image digest>[-fast].npy``, so re-scoring
(other thresholds, rules, pictures, the object filter's training) costs no inference. A fast heatmap is cached
apart from an exact one: they differ below the threshold.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.engine.defaults import THRESHOLD, TILE_PX
from service.engine.errors import ModelContractError
from service.engine.fast import FastNetworks
from service.engine.model import OnnxModel
from service.engine.model_folder import COARSE_ONNX
from service.engine.modes import Mode
from service.engine.segmenter import Segmenter
from training.evaluation.truth import image_digest
from training.paths import DEFAULT_CACHE

log = logging.getLogger(__name__)

FAST_EXACT_FROM = THRESHOLD
"""Fast mode's heatmap equals exact mode's at and above this P(bacillus): the mask threshold it refines to."""


def fast_networks_beside(model: OnnxModel) -> FastNetworks | None:
    """The fp32 fast networks in the folder of ``model``'s file (its coarse network, refinement by ``model``
    itself), or None when the folder has none or its coarse network was made from another dense network."""
    coarse_path = model.path.parent / COARSE_ONNX
    if not coarse_path.is_file():
        return None
    coarse = OnnxModel(coarse_path, providers=tuple(model.providers))
    try:
        return FastNetworks.pair(model, coarse, model, "fp32")
    except ModelContractError as exc:
        log.warning("%s: not used for fast mode (%s)", coarse_path, exc)
        return None


class HeatmapReader:
    """A dense model's heatmaps in the mode training reads them (module docstring).

    Args:
        model: the dense network.
        mode: the mode asked for; fast falls back to exact when it cannot give exact mode's result
            (:attr:`why` says why).
        cut: the lowest P(bacillus) the caller will cut the heatmaps at.
        tile_px: exact mode's tile side (any gives the same heatmap).
        fast: the fast networks to use (None: looked for beside the model's file).
    """

    def __init__(
        self,
        model: OnnxModel,
        mode: Mode = Mode.FAST,
        cut: float = THRESHOLD,
        tile_px: int = TILE_PX,
        fast: FastNetworks | None = None,
    ) -> None:
        self.model = model
        self.why = "exact mode asked for"
        networks = None
        if Mode(mode) is Mode.FAST:
            if cut < FAST_EXACT_FROM:
                self.why = f"a cut at {cut:g}, below {FAST_EXACT_FROM:g}, needs exact mode's low probabilities"
            else:
                networks = fast if fast is not None else fast_networks_beside(model)
                if networks is None:
                    self.why = f"no fast networks beside {model.path.name} ({COARSE_ONNX})"
        self.mode = Mode.FAST if networks is not None else Mode.EXACT
        if networks is not None:
            self.why = "fast mode, the service's default: exact mode's heatmap at and above the mask threshold"
        self.segmenter = Segmenter(model, tile_px=tile_px, threshold=FAST_EXACT_FROM, fast=networks)

    def heatmap(
        self, rgb: npt.NDArray[np.uint8], background: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """P(bacillus) of every pixel of ``rgb`` (normalised as the model declares), not cached."""
        return self.segmenter.heatmap(rgb, background, mode=self.mode)

    def exact_window(
        self, rgb: npt.NDArray[np.uint8], y0: int, x0: int, height: int, width: int
    ) -> npt.NDArray[np.float32]:
        """Exact mode's heatmap of the window ``[y0:y0+height, x0:x0+width]`` of the field ``rgb``, read with the
        model's halo of context around it (clipped at the field's edges, where the field's own padding applies)
        and the whole field's normalisation background: the whole field's exact heatmap there, for any mode."""
        halo = self.model.meta.halo_px
        top, left = max(0, y0 - halo), max(0, x0 - halo)
        bottom, right = min(rgb.shape[0], y0 + height + halo), min(rgb.shape[1], x0 + width + halo)
        normalisation = self.model.meta.normalisation
        background = normalisation.background(rgb) if normalisation is not None else None
        window = np.ascontiguousarray(rgb[top:bottom, left:right])
        heatmap = self.segmenter.heatmap(window, background, mode=Mode.EXACT)
        return heatmap[y0 - top : y0 - top + height, x0 - left : x0 - left + width]

    def cached(
        self, field_id: str, image: npt.NDArray[np.uint8], cache: Path = DEFAULT_CACHE, digest: str | None = None
    ) -> tuple[npt.NDArray[np.float32], float]:
        """The field's heatmap from the cache, else computed and cached.

        Returns:
            the heatmap and the seconds spent computing it (0 when cached).
        """
        suffix = "-fast" if self.mode is Mode.FAST else ""
        path = cache / self.model.meta.model_id / f"{field_id}-{digest or image_digest(image)}{suffix}.npy"
        if path.is_file():
            return np.load(path), 0.0
        started = time.perf_counter()
        heatmap = self.heatmap(image)
        seconds = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, heatmap)
        return heatmap, seconds


def cached_heatmap(
    model: OnnxModel,
    field_id: str,
    image: npt.NDArray[np.uint8],
    cache: Path = DEFAULT_CACHE,
    tile_px: int = TILE_PX,
    digest: str | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """The field's exact-mode heatmap (every probability, e.g. for calibration) from the cache, else computed and
    cached (:meth:`HeatmapReader.cached`)."""
    return HeatmapReader(model, Mode.EXACT, tile_px=tile_px).cached(field_id, image, cache, digest)
