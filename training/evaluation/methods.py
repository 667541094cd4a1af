"""The methods an evaluation scores side by side, each a :class:`Method`: a score per pixel, cut at a threshold.

* :class:`DenseModel`: a dense ONNX model, P(bacillus) per pixel through the service's engine in its default mode
  where that gives exact mode's result, else exact mode (heatmaps cached, :mod:`training.evaluation.heatmap_cache`),
  cut at a probability threshold (0.5 = the paper's argmax);
* :class:`FilteredModel`: a dense model's candidates kept or rejected by the object filter, exactly as the
  service does it; the threshold is the filter's score threshold;
* :class:`ColourBaseline`: ``R − G`` cut at a threshold fitted on the training fields
  (:mod:`training.evaluation.baselines`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.candidates import Candidates, find_candidates
from service.engine.defaults import TILE_PX
from service.engine.model import OnnxModel
from service.engine.modes import Mode
from service.engine.object_filter import ObjectFilter
from service.engine.segmenter import Segmenter
from training.data.dataset import FieldFiles
from training.evaluation.baselines import ThresholdFit, fit_threshold, red_minus_green, value_histograms
from training.evaluation.heatmap_cache import FAST_EXACT_FROM, HeatmapReader
from training.evaluation.report_schema import MethodDescription
from training.evaluation.truth import FieldTruth, read_truth

log = logging.getLogger(__name__)

PROBABILITY_SWEEP = tuple(round(float(t), 2) for t in np.arange(0.05, 0.96, 0.05))
COLOUR_SWEEP = tuple(float(t) for t in range(0, 161, 10))

State = TypeVar("State")


class Method(Protocol[State]):
    """A way of marking bacillus pixels: ``prepare`` computes a field's state once (a score map, candidates),
    ``predict`` cuts it at any threshold, so a sweep of thresholds costs no inference."""

    name: str
    threshold: float

    @property
    def sweep(self) -> tuple[float, ...]:
        """The thresholds the method is also scored at."""
        ...

    def prepare(self, truth: FieldTruth) -> State: ...

    def predict(self, state: State, threshold: float) -> npt.NDArray[np.bool_]: ...

    def describe(self) -> MethodDescription: ...


class DenseModel:
    """A dense ONNX model through the service's engine, heatmaps cached per model, image and mode.

    In fast mode (the service's default, when the model's folder has its fast networks) the heatmap is exact mode's
    at and above :data:`~training.evaluation.heatmap_cache.FAST_EXACT_FROM` only, so the threshold sweep starts
    there; exact mode sweeps every threshold (:mod:`training.evaluation.heatmap_cache`).
    """

    kind = "dense-onnx"

    def __init__(
        self, path: Path, name: str, threshold: float, cache: Path, tile_px: int = TILE_PX, mode: Mode = Mode.FAST
    ) -> None:
        self.path, self.name, self.threshold, self.tile_px = path, name, threshold, tile_px
        self.model = OnnxModel(path, providers=("CPUExecutionProvider",))
        self.model_id = self.model.meta.model_id
        self.cache = cache
        self.inference_s, self.megapixels = 0.0, 0.0
        self.reader = HeatmapReader(self.model, mode, cut=threshold, tile_px=tile_px)

    @property
    def sweep(self) -> tuple[float, ...]:
        if self.reader.mode is Mode.FAST:
            return tuple(t for t in PROBABILITY_SWEEP if t >= FAST_EXACT_FROM)
        return PROBABILITY_SWEEP

    def require_cut(self, cut: float) -> None:
        """Heatmaps will also be cut at ``cut``: below what fast mode gives exactly, read in exact mode."""
        if self.reader.mode is Mode.FAST and cut < FAST_EXACT_FROM:
            self.reader = HeatmapReader(self.model, Mode.FAST, cut=cut, tile_px=self.tile_px)

    def prepare(self, truth: FieldTruth) -> npt.NDArray[np.float32]:
        """The field's heatmap (what :meth:`predict` cuts)."""
        heatmap, seconds = self.reader.cached(truth.field_id, truth.image, self.cache, truth.digest)
        if seconds:
            self.inference_s += seconds
            self.megapixels += truth.image.shape[0] * truth.image.shape[1] / 1e6
        return heatmap

    def predict(self, heatmap: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.bool_]:
        return heatmap > threshold

    def describe(self) -> MethodDescription:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": str(self.path),
            "model_id": self.model_id,
            "recipe": self.model.meta.raw.get("recipe", ""),
            "threshold": self.threshold,
            "score": f"P(bacillus) from the dense network through the service's engine in {self.reader.mode} mode",
            "inference": {
                "seconds": round(self.inference_s, 1),
                "megapixels": round(self.megapixels, 2),
                "megapixels_per_second": round(self.megapixels / self.inference_s, 4) if self.inference_s else None,
                "note": "fields whose heatmaps were cached cost no inference and are not counted",
                "providers": list(self.model.providers),
                "tile_px": self.tile_px,
                "mode": self.reader.mode.value,
                "mode_why": self.reader.why,
            },
        }


class ColourBaseline:
    """Red minus green cut at a global threshold (:mod:`training.evaluation.baselines`)."""

    kind = "colour-threshold"
    sweep = COLOUR_SWEEP

    def __init__(self, fit: ThresholdFit, fitted_on: str, name: str = "colour baseline (R − G)") -> None:
        self.name, self.fit, self.fitted_on, self.threshold = name, fit, fitted_on, fit.threshold

    def prepare(self, truth: FieldTruth) -> npt.NDArray[np.float32]:
        return red_minus_green(truth.image)

    def predict(self, score: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.bool_]:
        return score > threshold

    def describe(self) -> MethodDescription:
        return {
            "name": self.name,
            "kind": self.kind,
            "threshold": self.threshold,
            "score": "R − G per pixel (Costa Filho et al. 2012 in spirit); bacillus where R − G > threshold",
            "fit": {
                "criterion": "pixel F1",
                "fitted_on": self.fitted_on,
                "threshold": self.fit.threshold,
                "precision": self.fit.precision,
                "recall": self.fit.recall,
                "f1": self.fit.f1,
                "fields": self.fit.fields,
            },
        }


@dataclass(frozen=True)
class FilteredField:
    """A field's candidates with the object filter's scores and estimated bacilli."""

    candidates: Candidates
    scores: npt.NDArray[np.float32]
    estimated: npt.NDArray[np.int64]


class FilteredModel:
    """A dense model's candidates kept or rejected by the object filter (:mod:`service.engine.object_filter`),
    exactly as the service does it; the threshold is the filter's score threshold."""

    kind = "dense-onnx + object filter"
    sweep = PROBABILITY_SWEEP

    def __init__(self, dense: DenseModel, filter_path: Path, threshold: float | None = None) -> None:
        self.dense, self.filter = dense, ObjectFilter(filter_path)
        if self.filter.meta.dense_model_id != dense.model_id:
            log.warning(
                "%s was trained on the candidates of %s, not of %s: its scores may not transfer",
                filter_path,
                self.filter.meta.dense_model_id,
                dense.model_id,
            )
        self.name = f"{dense.name} + object filter"
        self.threshold = self.filter.cut(threshold)
        dense.require_cut(self.filter.meta.candidate_threshold)
        self.estimated_bacilli: dict[str, int] = {}

    def prepare(self, truth: FieldTruth) -> FilteredField:
        heatmap = self.dense.prepare(truth)
        meta = self.filter.meta
        field = Segmenter(self.dense.model).prepare(truth.image)  # measured as the service measures them
        candidates = find_candidates(heatmap, field, meta.candidate_threshold, meta.min_object_px)
        scores = self.filter.scores(candidates.feature_matrix())
        areas = [c.feature("area_px") for c in candidates.items]
        estimated = np.asarray([self.filter.estimated_count(a) for a in areas], dtype=np.int64)
        self.estimated_bacilli[truth.field_id] = int(estimated[scores >= self.threshold].sum())
        return FilteredField(candidates, scores, estimated)

    def predict(self, state: FilteredField, threshold: float) -> npt.NDArray[np.bool_]:
        return state.candidates.mask_of(state.scores >= threshold)

    def describe(self) -> MethodDescription:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": str(self.dense.path),
            "model_id": self.dense.model_id,
            "object_filter": str(self.filter.path),
            "filter_id": self.filter.meta.filter_id,
            "threshold": self.threshold,
            "score": "object filter P(bacillus) of each candidate; candidates: P(bacillus) > "
            f"{self.filter.meta.candidate_threshold}, at least {self.filter.meta.min_object_px} px",
            "estimated_bacilli_per_field": self.estimated_bacilli,
        }


def fit_colour_baseline(fields: Sequence[FieldFiles], fitted_on: str, masks: Path | None = None) -> ColourBaseline:
    """The colour baseline with its threshold chosen on ``fields`` (maximum pixel F1)."""
    histograms = []
    for files in tqdm(fields, desc="colour baseline: fit", unit="field", file=sys.stderr):
        truth = read_truth(files, masks)
        histograms.append(value_histograms(red_minus_green(truth.image), truth.labels))
    fit = fit_threshold(histograms)
    log.info("colour baseline: R − G > %.0f (pixel F1 %.3f on %s)", fit.threshold, fit.f1, fitted_on)
    return ColourBaseline(fit, fitted_on)
