"""Evaluation: the shipped model, the same model patch by patch, a colour baseline and every recipe, side by side.

``evaluate`` scores *methods* on the same fields with the same rules (:mod:`training.metrics`):

* dense ONNX models (the shipped one first, then any variants): P(bacillus) per pixel through the service's
  engine and its exact tiling, cut at a probability threshold (0.5 = the paper's argmax);
* the colour baseline (:mod:`training.baselines`): ``R − G`` cut at a threshold fitted on the training fields;
* on one crop per field, the first model patch by patch (:mod:`training.patch_scan`) beside the same crop of its
  dense heatmap: the numbers must be the same, as the paper's Table 1 shows.

Heatmaps are cached as float32 ``.npy`` under ``cache/<model_id>/<field>-<image digest>.npy``, so re-scoring
(other thresholds, rules, pictures) costs no inference. Outputs in ``out``: ``report.json``, ``report.md``,
``pr_curve.png`` and ``gallery/`` (:mod:`training.evaluation_report`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.candidates import Candidates, find_candidates
from service.engine.model import OnnxModel
from service.engine.object_filter import ObjectFilter
from service.engine.segmenter import Segmenter
from training.annotations import Box, BoxLabel, read_mask_png
from training.baselines import ThresholdFit, fit_threshold, red_minus_green, value_histograms
from training.box_masks import MaskDerivation, PixelClass, label_map
from training.dataset import FieldFiles, discover_fields, image_size, read_annotation, read_rgb
from training.metrics import (
    ObjectCounts,
    ObjectMatch,
    ObjectRules,
    PixelCounts,
    boxes_from_mask,
    crop_boxes,
    match_objects,
    pixel_counts,
)
from training.paths import REPO_ROOT
from training.split import DatasetSplit

log = logging.getLogger(__name__)

SHIPPED_MODEL = REPO_ROOT / "models" / "bacilli_dense.onnx"
SHIPPED_PATCH_MODEL = REPO_ROOT / "models" / "patch_cnn.keras"
DEFAULT_CACHE = REPO_ROOT / "runs" / "heatmap-cache"
PROBABILITY_SWEEP = tuple(round(float(t), 2) for t in np.arange(0.05, 0.96, 0.05))
COLOUR_SWEEP = tuple(float(t) for t in range(0, 161, 10))

GROUND_TRUTH_NOTES = {
    "exact": "exact pixel masks",
    "derived": "pixel masks derived from boxes (approximate): see training/box_masks.py",
    "override": "pixel masks from the --masks folder",
}


# ---------------------------------------------------------------------------------------------------------------
# Heatmap cache


def image_digest(image: npt.NDArray[np.uint8]) -> str:
    """A short digest of the pixels (not the file), naming cached heatmaps."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:12]


def cached_heatmap(
    model: OnnxModel,
    field_id: str,
    image: npt.NDArray[np.uint8],
    cache: Path = DEFAULT_CACHE,
    tile_px: int = 256,
    digest: str | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """The field's P(bacillus) heatmap from ``cache/<model_id>/<field>-<digest>.npy``, else computed and cached.

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


# ---------------------------------------------------------------------------------------------------------------
# Ground truth


@dataclass
class FieldTruth:
    """One field as the metrics see it."""

    field_id: str
    image: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]  # PixelClass per pixel
    boxes: tuple[Box, ...]
    source: str  # a GROUND_TRUTH_NOTES key
    boxes_from_mask: bool = False
    digest: str = ""


def _override_mask(masks: Path, files: FieldFiles) -> Path:
    for name in (f"{files.field_id}.png", f"{files.field_id}_mask.png"):
        if (masks / name).is_file():
            return masks / name
    raise FileNotFoundError(f"{masks}: no {files.field_id}.png or {files.field_id}_mask.png for field {files.field_id}")


def read_truth(files: FieldFiles, masks: Path | None = None, params: MaskDerivation | None = None) -> FieldTruth:
    """Image, pixel labels and boxes of a field.

    Pixel labels come from the ``masks`` folder when given (``<id>.png`` or ``<id>_mask.png``, nonzero =
    bacillus), else from the data set's own mask, else are derived from its boxes. Boxes come from the data
    set; a field known only by a mask gets one box per mask component (:func:`training.metrics.boxes_from_mask`).
    """
    annotation, image = read_annotation(files), read_rgb(files.image)
    digest = image_digest(image)
    if masks is not None:
        override = read_mask_png(_override_mask(masks, files), files.image, image_size(files.image)).mask
        assert override is not None
        labels = np.full(image.shape[:2], PixelClass.BACKGROUND, dtype=np.uint8)
        for box in annotation.boxes_with(BoxLabel.UNCLASSIFIED):
            labels[box.slices] = PixelClass.IGNORE
        labels[override] = PixelClass.BACILLUS
        source, truth_mask = "override", override
    else:
        labels = label_map(annotation, image, params or MaskDerivation())
        source = "exact" if annotation.mask is not None else "derived"
        truth_mask = annotation.mask
    boxes, from_mask = annotation.boxes, False
    if not boxes and truth_mask is not None:
        boxes, from_mask = boxes_from_mask(truth_mask), True
    return FieldTruth(files.field_id, image, labels, boxes, source, from_mask, digest)


# ---------------------------------------------------------------------------------------------------------------
# Methods


class DenseModel:
    """A dense ONNX model through the service's engine, heatmaps cached per model and image."""

    kind = "dense-onnx"
    sweep = PROBABILITY_SWEEP

    def __init__(self, path: Path, name: str, threshold: float, cache: Path, tile_px: int = 256) -> None:
        self.path, self.name, self.threshold, self.tile_px = path, name, threshold, tile_px
        self.model = OnnxModel(path, providers=("CPUExecutionProvider",))
        self.model_id = self.model.meta.model_id
        self.cache = cache
        self.inference_s, self.megapixels = 0.0, 0.0

    def prepare(self, truth: FieldTruth) -> npt.NDArray[np.float32]:
        """The field's heatmap (what :meth:`predict` cuts)."""
        heatmap, seconds = cached_heatmap(
            self.model, truth.field_id, truth.image, self.cache, self.tile_px, truth.digest
        )
        if seconds:
            self.inference_s += seconds
            self.megapixels += truth.image.shape[0] * truth.image.shape[1] / 1e6
        return heatmap

    def predict(self, heatmap: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.bool_]:
        return heatmap > threshold

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": str(self.path),
            "model_id": self.model_id,
            "recipe": self.model.meta.raw.get("recipe", ""),
            "threshold": self.threshold,
            "score": "P(bacillus) from the dense network through the service's exact tiling",
            "inference": {
                "seconds": round(self.inference_s, 1),
                "megapixels": round(self.megapixels, 2),
                "megapixels_per_second": round(self.megapixels / self.inference_s, 4) if self.inference_s else None,
                "note": "fields whose heatmaps were cached cost no inference and are not counted",
                "providers": list(self.model.providers),
                "tile_px": self.tile_px,
            },
        }


class ColourBaseline:
    """Red minus green cut at a global threshold (:mod:`training.baselines`)."""

    kind = "colour-threshold"
    sweep = COLOUR_SWEEP

    def __init__(self, fit: ThresholdFit, fitted_on: str, name: str = "colour baseline (R − G)") -> None:
        self.name, self.fit, self.fitted_on, self.threshold = name, fit, fitted_on, fit.threshold

    def prepare(self, truth: FieldTruth) -> npt.NDArray[np.float32]:
        return red_minus_green(truth.image)

    def predict(self, score: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.bool_]:
        return score > threshold

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "threshold": self.threshold,
            "score": "R − G per pixel (Costa Filho et al. 2012 in spirit); bacillus where R − G > threshold",
            "fit": {"criterion": "pixel F1", "fitted_on": self.fitted_on, **asdict(self.fit)},
        }


@dataclass(frozen=True)
class FilteredField:
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
        self.threshold = self.filter.meta.threshold if threshold is None else threshold
        self.estimated_bacilli: dict[str, int] = {}

    def prepare(self, truth: FieldTruth) -> FilteredField:
        heatmap = self.dense.prepare(truth)
        meta = self.filter.meta
        candidates = find_candidates(heatmap, truth.image, meta.candidate_threshold, meta.min_object_px)
        scores = self.filter.scores(candidates.feature_matrix())
        areas = [c.feature("area_px") for c in candidates.items]
        estimated = np.asarray([self.filter.estimated_count(a) for a in areas], dtype=np.int64)
        self.estimated_bacilli[truth.field_id] = int(estimated[scores >= self.threshold].sum())
        return FilteredField(candidates, scores, estimated)

    def predict(self, state: FilteredField, threshold: float) -> npt.NDArray[np.bool_]:
        return state.candidates.mask_of(state.scores >= threshold)

    def describe(self) -> dict[str, object]:
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


Method = DenseModel | FilteredModel | ColourBaseline


def fit_colour_baseline(fields: Sequence[FieldFiles], fitted_on: str, masks: Path | None = None) -> ColourBaseline:
    """The colour baseline with its threshold chosen on ``fields`` (maximum pixel F1)."""
    histograms = []
    for files in tqdm(fields, desc="colour baseline: fit", unit="field", file=sys.stderr):
        truth = read_truth(files, masks)
        histograms.append(value_histograms(red_minus_green(truth.image), truth.labels))
    fit = fit_threshold(histograms)
    log.info("colour baseline: R − G > %.0f (pixel F1 %.3f on %s)", fit.threshold, fit.f1, fitted_on)
    return ColourBaseline(fit, fitted_on)


# ---------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Tally:
    """What one method accumulates over the fields."""

    pixels: PixelCounts = field(default_factory=PixelCounts)
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    per_field: dict[str, dict[str, object]] = field(default_factory=dict)
    sweep_pixels: dict[float, PixelCounts] = field(default_factory=dict)
    sweep_objects: dict[float, ObjectCounts] = field(default_factory=dict)

    def add(self, fid: str, pixels: PixelCounts, objects: ObjectCounts) -> None:
        self.pixels, self.objects = self.pixels + pixels, self.objects + objects
        self.per_field[fid] = {
            "pixel": pixels.metrics(),
            "bacillus": objects.metrics(),
            "boxes": objects.boxes,
            "counted": objects.counted,
            "count_error": objects.counted - objects.boxes,
        }

    def add_sweep(self, threshold: float, pixels: PixelCounts, objects: ObjectCounts) -> None:
        self.sweep_pixels[threshold] = self.sweep_pixels.get(threshold, PixelCounts()) + pixels
        self.sweep_objects[threshold] = self.sweep_objects.get(threshold, ObjectCounts()) + objects

    def summary(self) -> dict[str, object]:
        errors = [abs(int(v["count_error"])) for v in self.per_field.values()]  # type: ignore[call-overload]
        thresholds = sorted(self.sweep_pixels)
        return {
            "pixel": self.pixels.metrics(),
            "bacillus": self.objects.metrics(),
            "mean_abs_count_error": float(np.mean(errors)) if errors else float("nan"),
            "per_field": self.per_field,
            "sweep": {
                "thresholds": thresholds,
                "pixel": [self.sweep_pixels[t].metrics() for t in thresholds],
                "bacillus": [self.sweep_objects[t].metrics() for t in thresholds],
            },
        }


def score_mask(
    predicted: npt.NDArray[np.bool_], truth: FieldTruth, rules: ObjectRules
) -> tuple[PixelCounts, ObjectMatch]:
    return pixel_counts(predicted, truth.labels), match_objects(predicted, truth.boxes, rules)


def crop_region(truth: FieldTruth, side: int) -> tuple[int, int, int, int]:
    """A ``side``-pixel crop centred on the field's first bacillus box (row-major), else on the field's centre."""
    height, width = truth.labels.shape
    side_y, side_x = min(side, height), min(side, width)
    bacilli = sorted((b for b in truth.boxes if b.label.is_bacillus), key=lambda b: (b.y, b.x))
    cy, cx = (
        (bacilli[0].y + bacilli[0].height // 2, bacilli[0].x + bacilli[0].width // 2)
        if bacilli
        else (
            height // 2,
            width // 2,
        )
    )
    y0 = int(np.clip(cy - side_y // 2, 0, height - side_y))
    x0 = int(np.clip(cx - side_x // 2, 0, width - side_x))
    return y0, x0, side_y, side_x


@dataclass
class CropComparison:
    """The first model's dense heatmap and its patch-by-patch scan on the same crops."""

    side: int
    regions: dict[str, list[int]] = field(default_factory=dict)
    dense: Tally = field(default_factory=Tally)
    patch: Tally = field(default_factory=Tally)
    max_abs_difference: float = 0.0
    mask_pixels_differing: int = 0
    patch_seconds: float = 0.0

    def report(self) -> dict[str, object]:
        dense, patch = self.dense.summary(), self.patch.summary()
        pixels = sum(h * w for _, _, h, w in self.regions.values())
        return {
            "side_px": self.side,
            "regions_y0_x0_h_w": self.regions,
            "pixels": pixels,
            "dense_engine": {k: dense[k] for k in ("pixel", "bacillus", "mean_abs_count_error")},
            "patch_by_patch": {k: patch[k] for k in ("pixel", "bacillus", "mean_abs_count_error")},
            "max_abs_difference": self.max_abs_difference,
            "mask_pixels_differing": self.mask_pixels_differing,
            "identical_metrics": dense["pixel"] == patch["pixel"] and dense["bacillus"] == patch["bacillus"],
            "patch_by_patch_seconds": round(self.patch_seconds, 1),
            "patch_by_patch_seconds_per_megapixel": round(self.patch_seconds / (pixels / 1e6), 1) if pixels else None,
        }


def _field_subset(
    data: Path, split_path: Path | None, subset: str
) -> tuple[dict[str, FieldFiles], list[str], DatasetSplit | None]:
    fields = {f.field_id: f for f in discover_fields(data)}
    split = DatasetSplit.load(split_path) if split_path is not None else None
    if subset == "all":
        return fields, list(fields), split
    if split is None:
        raise ValueError(f"--subset {subset} needs a split (--split); use --subset all to score every field")
    split.check_covers(set(fields))
    return fields, list(split.subset(subset)), split


def evaluate(
    data: Path,
    out: Path,
    *,
    model: Path = SHIPPED_MODEL,
    variants: Sequence[Path] = (),
    object_filter: Path | None = None,
    object_threshold: float | None = None,
    split_path: Path | None = None,
    subset: str = "test",
    masks: Path | None = None,
    threshold: float = 0.5,
    rules: ObjectRules | None = None,
    baseline: bool = True,
    baseline_threshold: float | None = None,
    patch_model: Path | None = SHIPPED_PATCH_MODEL,
    crop_px: int = 192,
    gallery: bool = True,
    cache: Path = DEFAULT_CACHE,
    tile_px: int = 256,
) -> dict[str, object]:
    """Score every method on one subset of a data set; write the report, the curve and the gallery into ``out``.

    Args:
        data: data set folder in any layout :func:`training.dataset.discover_fields` reads.
        out: output folder.
        model: the dense ONNX model under test (the shipped one by default); it gets the crops and the gallery.
        variants: more dense ONNX models to score the same way (e.g. every recipe); repeats of a model are skipped.
        object_filter: object filter ONNX to score ``model``'s candidates with, beside ``model`` alone.
        object_threshold: the filter's score threshold (default: the one in its metadata).
        split_path: split JSON; needed unless ``subset`` is ``all``.
        subset: ``train``, ``validation``, ``test`` or ``all``.
        masks: folder of ground-truth masks overriding the data set's own or derived ones.
        threshold: P(bacillus) cut for the dense models.
        rules: bacillus-level matching rules.
        baseline: score the colour baseline too; its threshold is ``baseline_threshold`` when given, else fitted
            on the split's train fields (or, without a split, on the scored fields: an optimistic baseline).
        patch_model: Keras patch CNN of ``model`` for the patch-by-patch crops; None skips them.
        crop_px: side of the crop per field for the patch-by-patch comparison.
        gallery: write the overlay gallery of ``model`` (with the object filter's verdicts when it is scored).
        cache: heatmap cache folder.
        tile_px: engine tile size (any gives the same heatmap).
    """
    from training.evaluation_report import draw_gallery_field, finish_gallery, write_markdown, write_pr_curve

    rules = rules or ObjectRules()
    fields, subset_ids, split = _field_subset(data, split_path, subset)
    methods: list[Method] = [DenseModel(model, "model under test", threshold, cache, tile_px)]
    if model.resolve() == SHIPPED_MODEL.resolve():
        methods[0].name = "shipped model"
    if object_filter is not None:
        methods.append(FilteredModel(methods[0], object_filter, object_threshold))  # type: ignore[arg-type]
    seen = {methods[0].model_id}  # type: ignore[union-attr]
    for path in variants:
        variant = DenseModel(path, "", threshold, cache, tile_px)
        if variant.model_id in seen:
            log.info("%s: same model as one already scored (%s), skipped", path, variant.model_id)
            continue
        seen.add(variant.model_id)
        variant.name = f"recipe {variant.model.meta.raw.get('recipe', path.stem)}"
        methods.append(variant)
    if baseline:
        if baseline_threshold is not None:
            fit = ThresholdFit(baseline_threshold, float("nan"), float("nan"), float("nan"), 0)
            methods.append(ColourBaseline(fit, "given on the command line"))
        elif split is not None and set(split.train) <= set(fields):
            methods.append(fit_colour_baseline([fields[f] for f in split.train], "train split", masks))
        else:
            log.warning("no train split for the colour baseline: fitting it on the scored fields (optimistic)")
            methods.append(fit_colour_baseline([fields[f] for f in subset_ids], "the scored fields", masks))
    scanner = None
    if patch_model is not None:
        import keras

        from training.patch_scan import PatchScanner, Region

        scanner = PatchScanner(keras.models.load_model(patch_model))
    tallies = {m.name: Tally() for m in methods}
    # the gallery shows what the service answers: the object filter's verdicts when there is one
    gallery_index = next((i for i, m in enumerate(methods) if isinstance(m, FilteredModel)), 0)
    crops = CropComparison(crop_px)
    sources: set[str] = set()
    any_boxes_from_mask = False
    gallery_dir = out / "gallery"
    gallery_items: list[dict[str, object]] = []
    for fid in tqdm(subset_ids, desc=f"evaluate ({subset})", unit="field", file=sys.stderr):
        truth = read_truth(fields[fid], masks)
        sources.add(truth.source)
        any_boxes_from_mask |= truth.boxes_from_mask
        for index, method in enumerate(methods):
            state = method.prepare(truth)
            pixels, match = score_mask(method.predict(state, method.threshold), truth, rules)  # type: ignore[arg-type]
            tallies[method.name].add(fid, pixels, match.counts())
            for t in sorted({*method.sweep, method.threshold}):
                p, m = score_mask(method.predict(state, t), truth, rules)  # type: ignore[arg-type]
                tallies[method.name].add_sweep(t, p, m.counts())
            if index == gallery_index and gallery:
                rejected = (
                    state.candidates.mask_of(state.scores < method.threshold)
                    if isinstance(state, FilteredField)
                    else None
                )
                gallery_items.append(draw_gallery_field(truth, match, gallery_dir, rejected))
            if index == 0 and scanner is not None:
                y0, x0, h, w = crop_region(truth, crop_px)
                sl = (slice(y0, y0 + h), slice(x0, x0 + w))
                started = time.perf_counter()
                score = state  # the first method is the dense model: its state is the heatmap
                patch = scanner.scan(truth.image, Region(y0, x0, h, w))
                crops.patch_seconds += time.perf_counter() - started
                crop_truth = FieldTruth(
                    fid, truth.image[sl], truth.labels[sl], crop_boxes(truth.boxes, y0, x0, h, w), ""
                )
                for tally, heat in ((crops.dense, score[sl]), (crops.patch, patch)):
                    p, m = score_mask(heat > method.threshold, crop_truth, rules)
                    tally.add(fid, p, m.counts())
                crops.regions[fid] = [y0, x0, h, w]
                crops.max_abs_difference = max(crops.max_abs_difference, float(np.abs(patch - score[sl]).max()))
                crops.mask_pixels_differing += int(((patch > method.threshold) != (score[sl] > method.threshold)).sum())
    primary = tallies[methods[0].name].summary()
    ground_truth = "; ".join(GROUND_TRUTH_NOTES[s] for s in sorted(sources))
    if any_boxes_from_mask:
        ground_truth += "; bacillus-level boxes are the bounding boxes of mask components"
    report: dict[str, object] = {
        "data": str(data),
        "split": str(split_path) if split_path else None,
        "subset": subset,
        "fields": subset_ids,
        "ground_truth": ground_truth,
        "object_rules": asdict(rules),
        "object_rules_text": RULES_TEXT.format(**asdict(rules)),
        # the model under test at the top level, as earlier reports and the model card read it
        **{k: v for k, v in methods[0].describe().items() if k in ("model", "model_id", "recipe", "threshold")},
        **{k: primary[k] for k in ("pixel", "bacillus", "mean_abs_count_error", "per_field")},
        "inference": methods[0].describe()["inference"],
        "methods": [{**m.describe(), **tallies[m.name].summary()} for m in methods],
        "patch_by_patch_crops": crops.report() if scanner is not None else None,
        "gallery_method": methods[gallery_index].name if gallery else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_pr_curve(report, out / "pr_curve.png")
    if gallery:
        finish_gallery(gallery_items, gallery_dir)
    write_markdown(report, out / "report.md")
    for m in report["methods"]:  # type: ignore[attr-defined]
        b, px = m["bacillus"], m["pixel"]
        log.info(
            "%s: bacillus R %.3f P %.3f F1 %.3f | pixel R %.3f P %.3f F1 %.3f",
            m["name"],
            b["recall"],
            b["precision"],
            b["f1"],
            px["recall"],
            px["precision"],
            px["f1"],
        )
    return report


RULES_TEXT = (
    "A predicted object is an 8-connected component of the predicted mask with at least {min_object_px} pixels. "
    "A single-bacillus or bacilli-cluster box is found when at least {min_hit_px} predicted pixels lie inside it. "
    "An object is a true positive when at least {inside_share:.0%} of its pixels lie inside bacillus or cluster "
    "boxes; otherwise it is ignored when that share lies inside 'unclassified red structures' boxes; otherwise it "
    "is a false positive (inside 'artifacts' boxes included). Recall = found boxes / boxes; precision = true "
    "positives / (true + false positives); count error per field = counted objects − boxes (a cluster box counts "
    "once)."
)
