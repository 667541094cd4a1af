"""Evaluation: the shipped model, the same model patch by patch, a colour baseline and every recipe, side by side.

``evaluate`` scores *methods* (:mod:`training.evaluation.methods`) on the same fields with the same rules
(:mod:`training.evaluation.metrics`, :mod:`training.evaluation.scoring`):

* dense ONNX models (the model under test first, then any variants), with the object filter when given;
* the colour baseline, fitted on the split's training fields;
* on one crop per field, the first model patch by patch beside the same crop of its dense heatmap
  (:mod:`training.evaluation.crops`): the numbers must be the same, as the paper's Table 1 shows.

Outputs in ``out``: ``report.json`` (:mod:`training.evaluation.report_schema`), ``report.md``,
``pr_curve.png`` and ``gallery/`` (:mod:`training.evaluation.report`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.engine.defaults import THRESHOLD, TILE_PX
from service.engine.modes import Mode
from training.data.dataset import FieldFiles, discover_fields
from training.data.split import DatasetSplit
from training.evaluation.baselines import ThresholdFit
from training.evaluation.crops import CropComparison, crop_region
from training.evaluation.methods import (
    ColourBaseline,
    DenseModel,
    FilteredField,
    FilteredModel,
    Method,
    fit_colour_baseline,
)
from training.evaluation.metrics import ObjectRules, crop_boxes
from training.evaluation.report import GalleryField, draw_gallery_field, finish_gallery, write_markdown, write_pr_curve
from training.evaluation.report_schema import EvaluationReport, MethodReport
from training.evaluation.scoring import RULES_TEXT, Tally, score_mask
from training.evaluation.truth import GROUND_TRUTH_NOTES, FieldTruth, read_truth
from training.paths import DEFAULT_CACHE, SHIPPED_FILTER, SHIPPED_MODEL, SHIPPED_PATCH_MODEL

log = logging.getLogger(__name__)


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
    threshold: float = THRESHOLD,
    rules: ObjectRules | None = None,
    baseline: bool = True,
    baseline_threshold: float | None = None,
    patch_model: Path | None = SHIPPED_PATCH_MODEL,
    crop_px: int = 192,
    gallery: bool = True,
    cache: Path = DEFAULT_CACHE,
    tile_px: int = TILE_PX,
    mode: Mode = Mode.FAST,
    sweep: bool = True,
) -> EvaluationReport:
    """Score every method on one subset of a data set; write the report, the curve and the gallery into ``out``.

    Args:
        data: data set folder in any layout :func:`training.data.dataset.discover_fields` reads.
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
        mode: the engine mode heatmaps are read in: fast (the service's default) where it gives exact mode's
            result (the threshold sweep then starts at the mask threshold), else exact
            (:mod:`training.evaluation.heatmap_cache`).
        sweep: also score every method over its threshold sweep (the curves); without it only at its threshold
            (a comparison that reads one operating point: scoring the sweep costs about 2.5 s per 5-megapixel
            field and method on 2 cores).
    """
    rules = rules or ObjectRules()
    fields, subset_ids, split = _field_subset(data, split_path, subset)
    primary = DenseModel(model, "model under test", threshold, cache, tile_px, mode)
    if model.resolve() == SHIPPED_MODEL.resolve():
        primary.name = "shipped model"
    methods: list[Method[Any]] = [primary]
    filtered = FilteredModel(primary, object_filter, object_threshold) if object_filter is not None else None
    if filtered is not None:
        methods.append(filtered)
    seen = {primary.model_id}
    for path in variants:
        variant = DenseModel(path, "", threshold, cache, tile_px, mode)
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

        from training.evaluation.patch_scan import PatchScanner, Region

        scanner = PatchScanner(keras.models.load_model(patch_model))
    tallies = {m.name: Tally() for m in methods}
    # the gallery shows what the service answers: the object filter's verdicts when there is one
    shown: Method[Any] = filtered if filtered is not None else primary
    crops = CropComparison(crop_px)
    sources: set[str] = set()
    any_boxes_from_mask = False
    gallery_dir = out / "gallery"
    gallery_items: list[GalleryField] = []
    for fid in tqdm(subset_ids, desc=f"evaluate ({subset})", unit="field", file=sys.stderr):
        truth = read_truth(fields[fid], masks)
        sources.add(truth.source)
        any_boxes_from_mask |= truth.boxes_from_mask
        for method in methods:
            state = method.prepare(truth)
            pixels, match = score_mask(method.predict(state, method.threshold), truth, rules)
            tallies[method.name].add(fid, pixels, match.counts())
            tallies[method.name].add_sweep(method.threshold, pixels, match.counts())
            for t in sorted(set(method.sweep) - {method.threshold}) if sweep else []:
                p, m = score_mask(method.predict(state, t), truth, rules)
                tallies[method.name].add_sweep(t, p, m.counts())
            if method is shown and gallery:
                rejected = (
                    state.candidates.mask_of(state.scores < method.threshold)
                    if isinstance(state, FilteredField)
                    else None
                )
                gallery_items.append(draw_gallery_field(truth, match, gallery_dir, rejected))
            if method is primary and scanner is not None:
                y0, x0, h, w = crop_region(truth, crop_px)
                sl = (slice(y0, y0 + h), slice(x0, x0 + w))
                started = time.perf_counter()
                patch = scanner.scan(truth.image, Region(y0, x0, h, w))
                crops.patch_seconds += time.perf_counter() - started
                crop_truth = FieldTruth(
                    fid, truth.image[sl], truth.labels[sl], crop_boxes(truth.boxes, y0, x0, h, w), ""
                )
                # the whole field's exact heatmap on the crop (in fast mode the state is exact above 0.5 only)
                dense = (
                    state[sl]
                    if primary.reader.mode is Mode.EXACT
                    else primary.reader.exact_window(truth.image, y0, x0, h, w)
                )
                for tally, heat in ((crops.dense, dense), (crops.patch, patch)):
                    p, m = score_mask(heat > method.threshold, crop_truth, rules)
                    tally.add(fid, p, m.counts())
                crops.regions[fid] = [y0, x0, h, w]
                crops.max_abs_difference = max(crops.max_abs_difference, float(np.abs(patch - dense).max()))
                crops.mask_pixels_differing += int(((patch > method.threshold) != (dense > method.threshold)).sum())
    scores = tallies[primary.name].summary()
    described = primary.describe()
    ground_truth = "; ".join(GROUND_TRUTH_NOTES[s] for s in sorted(sources))
    if any_boxes_from_mask:
        ground_truth += "; bacillus-level boxes are the bounding boxes of mask components"
    method_reports: list[MethodReport] = [{**m.describe(), **tallies[m.name].summary()} for m in methods]
    report: EvaluationReport = {
        "data": str(data),
        "split": str(split_path) if split_path else None,
        "subset": subset,
        "fields": subset_ids,
        "ground_truth": ground_truth,
        "object_rules": asdict(rules),
        "object_rules_text": RULES_TEXT.format(**asdict(rules)),
        "model": str(primary.path),
        "model_id": primary.model_id,
        "recipe": primary.model.meta.raw.get("recipe", ""),
        "threshold": primary.threshold,
        "pixel": scores["pixel"],
        "bacillus": scores["bacillus"],
        "mean_abs_count_error": scores["mean_abs_count_error"],
        "per_field": scores["per_field"],
        "inference": described["inference"],
        "methods": method_reports,
        "patch_by_patch_crops": crops.report() if scanner is not None else None,
        "gallery_method": shown.name if gallery else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_pr_curve(report, out / "pr_curve.png")
    if gallery:
        finish_gallery(gallery_items, gallery_dir)
    write_markdown(report, out / "report.md")
    for r in report["methods"]:
        b, px = r["bacillus"], r["pixel"]
        log.info(
            "%s: bacillus R %.3f P %.3f F1 %.3f | pixel R %.3f P %.3f F1 %.3f",
            r["name"],
            b["recall"],
            b["precision"],
            b["f1"],
            px["recall"],
            px["precision"],
            px["f1"],
        )
    return report


def default_subset(data: Path, split_path: Path) -> str:
    """``test`` when the split covers every field of ``data``, else ``all``."""
    ids = {f.field_id for f in discover_fields(data)}
    covered = split_path.is_file() and ids <= DatasetSplit.load(split_path).all_ids
    log.info(
        "scoring the %s fields (%s)",
        "test" if covered else "all",
        "the split covers the data" if covered else "no split for them",
    )
    return "test" if covered else "all"


def patch_model_for(model: Path, given: Path | None) -> Path | None:
    """The Keras patch CNN of ``model`` for the patch-by-patch crops: ``given``, the shipped one for the shipped
    model, ``model.keras`` beside a run's ``model.onnx``, else None (crops skipped, with a warning)."""
    if given is not None:
        return given
    if model.resolve() == SHIPPED_MODEL.resolve():
        return SHIPPED_PATCH_MODEL
    beside = model.with_name("model.keras")
    if beside.is_file():
        return beside
    log.warning("%s: no Keras patch CNN beside it and no --patch-model: patch-by-patch crops skipped", model)
    return None


def evaluate_data(
    data: Path,
    out: Path,
    *,
    split_path: Path,
    subset: str | None,
    model: Path,
    object_filter: Path | None,
    use_object_filter: bool = True,
    patch_model: Path | None = None,
    use_patch_model: bool = True,
    **options: Any,
) -> EvaluationReport:
    """:func:`evaluate` with the command line's defaults: the test fields when the split covers the data (else
    all fields, without a split when it does not cover them), the shipped object filter with the shipped model,
    the patch CNN found beside the model."""
    subset = subset or default_subset(data, split_path)
    split: Path | None = split_path if split_path.is_file() else None
    if split is not None and subset == "all":
        ids = {f.field_id for f in discover_fields(data)}
        split = split if ids <= DatasetSplit.load(split).all_ids else None
    if object_filter is None and model.resolve() == SHIPPED_MODEL.resolve() and SHIPPED_FILTER.is_file():
        object_filter = SHIPPED_FILTER
    return evaluate(
        data,
        out,
        model=model,
        object_filter=object_filter if use_object_filter else None,
        split_path=split,
        subset=subset,
        patch_model=patch_model_for(model, patch_model) if use_patch_model else None,
        **options,
    )
