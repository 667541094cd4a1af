"""Evaluation on another lab's microscope (UFAM DDS1), and what a negative slide would be graded.

For each model (with its object filter, or without one), through the service's own engine
(:class:`service.engine.segmenter.Segmenter`, field normalisation included), in the service's default mode (fast,
when the model's folder has its fast networks: exact mode's kept bacilli, :mod:`training.evaluation.heatmap_cache`)
or in exact mode on request:

* **positives**: every positive patch of the chosen slides is segmented (its field's background for the
  normalisation estimated on the field's patches pooled, :func:`training.data.ufam.read_positives`); the patch
  counts as found when a *kept* bacillus has a pixel within :data:`CENTRE_PX` px of its centre (the expert's point),
  and the network's P(bacillus) at the 2 × 2 centre pixels is reported beside it;
* **negative fields**: every negative field is segmented whole; each kept object is a false bacillus;
* **negative slide**: a slide of 100 such fields, its false bacilli a Poisson count with the observed mean per
  field: the WHO/IUATLD grade (:mod:`service.engine.grading`) of the expected count and of its 2.5% and 97.5%
  quantiles, and the chance of each grade. A negative slide graded 1+ is the worst error the service can make.

Galleries: ``false_positives_<model>.jpg`` (kept objects on negative fields) and ``missed_<model>.jpg`` (positive
patches with no kept bacillus at the centre), zoomed.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import stats
from tqdm import tqdm

from service.engine.grading import grade_slide
from service.engine.model import OnnxModel
from service.engine.modes import Mode
from service.engine.object_filter import ObjectFilter
from service.engine.segmenter import Segmenter
from training.data.dataset import read_rgb
from training.data.overlays import outline
from training.data.split import DatasetSplit
from training.data.ufam import CENTRE_PX, UfamSet, patch_centre, read_positives, read_ufam
from training.evaluation.heatmap_cache import fast_networks_beside
from training.evaluation.report import tile, write_sheet
from training.evaluation.report_schema import MethodReport

log = logging.getLogger(__name__)

SLIDE_FIELDS = 100
KEPT, MISSED_MARK = (0, 255, 0), (255, 0, 255)


class NegativeSlide(TypedDict):
    """A simulated slide of ``fields`` negative fields (module docstring)."""

    fields: int
    false_bacilli_per_field: float
    expected_false_bacilli: float
    poisson_95: list[int]
    grade_expected: str
    grade_range: list[str]
    probability: dict[str, float]  # grade → chance


class LabReport(TypedDict):
    """One model on one lab's slides."""

    lab: str
    slides: list[str]
    name: str
    mode: str
    model_id: str
    filter_id: str | None
    object_threshold: float | None
    positives: int
    found_at_centre: int
    recall_at_centre: float
    centre_p_above_0_5: float
    negative_fields: int
    false_bacilli: list[int]
    false_bacilli_per_field: float
    max_false_bacilli_in_a_field: int
    negative_slide: NegativeSlide


def _grade_of_total(total: int, fields: int = SLIDE_FIELDS) -> str:
    return str(grade_slide([total] + [0] * (fields - 1)).grade)


def negative_slide(false_bacilli_per_field: float, fields: int = SLIDE_FIELDS) -> NegativeSlide:
    """What a slide of ``fields`` negative fields would be graded (module docstring)."""
    mean = fields * false_bacilli_per_field
    low, high = (int(stats.poisson.ppf(q, mean)) if mean > 0 else 0 for q in (0.025, 0.975))
    # totals at which the grade changes on 100 fields: 1 (scanty), 10 (1+), 100 (2+: 1 per field), 1001 (3+)
    edges = {"negative": (0, 0), "scanty": (1, 9), "1+": (10, 99), "2+": (100, 1000), "3+": (1001, math.inf)}
    probability = {}
    for grade, (lo, hi) in edges.items():
        upper = 1.0 if math.isinf(hi) else float(stats.poisson.cdf(hi, mean))
        lower = float(stats.poisson.cdf(lo - 1, mean)) if lo > 0 else 0.0
        probability[grade] = round(upper - lower, 6)
    return {
        "fields": fields,
        "false_bacilli_per_field": round(false_bacilli_per_field, 4),
        "expected_false_bacilli": round(mean, 2),
        "poisson_95": [low, high],
        "grade_expected": _grade_of_total(round(mean), fields),
        "grade_range": [_grade_of_total(low, fields), _grade_of_total(high, fields)],
        "probability": probability,
    }


@dataclass(frozen=True)
class Pair:
    """A dense model with its object filter (or none), named for the tables."""

    name: str
    model: Path
    object_filter: Path | None

    def segmenter(self, mode: Mode = Mode.FAST) -> tuple[Segmenter, Mode]:
        """The pair's segmenter, with the fast networks beside the model in fast mode, and the mode it runs
        (exact when asked, or when the model's folder has no fast networks)."""
        model = OnnxModel(self.model, providers=("CPUExecutionProvider",))
        filt = ObjectFilter(self.object_filter) if self.object_filter is not None else None
        fast = fast_networks_beside(model) if Mode(mode) is Mode.FAST else None
        return Segmenter(model, object_filter=filt, fast=fast), Mode.FAST if fast is not None else Mode.EXACT


def _outlined(rgb: npt.NDArray[np.uint8], objects: npt.NDArray[np.bool_], colour: tuple[int, int, int]) -> Image.Image:
    shown = rgb.copy()
    shown[outline(objects)] = colour
    return Image.fromarray(shown)


def evaluate_ufam(
    pair: Pair, part: UfamSet, lab: str, gallery: Path | None = None, mode: Mode = Mode.FAST
) -> LabReport:
    """Score one model (and filter) on a part of the UFAM set (module docstring), read in ``mode``."""
    segmenter, mode = pair.segmenter(mode)
    images, backgrounds = read_positives(part, segmenter.model.meta.normalisation)
    found, centre_p, missed_tiles = 0, 0, []
    for p in tqdm(part.positives, desc=f"{pair.name}: positive patches", unit="patch", file=sys.stderr):
        rgb = images[p.patch_id]
        result = segmenter.segment(rgb, background=backgrounds.get(p.field), mode=mode)
        cy, cx = patch_centre(rgb)
        hit = bool(
            result.objects[
                max(cy - CENTRE_PX, 0) : cy + CENTRE_PX + 1, max(cx - CENTRE_PX, 0) : cx + CENTRE_PX + 1
            ].any()
        )
        found += hit
        centre_p += bool(result.heatmap[cy - 1 : cy + 1, cx - 1 : cx + 1].max() > 0.5)
        if not hit and gallery is not None:
            picture = _outlined(rgb, result.mask, MISSED_MARK)
            ImageDraw.Draw(picture).point([(cx, cy)], fill=(255, 255, 0))
            missed_tiles.append(tile(picture, cy, cx, p.patch_id))
    false_bacilli, fp_tiles = [], []
    for f in tqdm(part.negatives, desc=f"{pair.name}: negative fields", unit="field", file=sys.stderr):
        rgb = read_rgb(f.path)
        result = segmenter.segment(rgb, mode=mode)
        false_bacilli.append(len(result.bacilli))
        if gallery is not None and result.bacilli:
            picture = _outlined(rgb, result.objects, KEPT)
            for b in result.bacilli:
                x, y, w, h = b.bbox
                fp_tiles.append(tile(picture, y + h // 2, x + w // 2, f.field_id))
    if gallery is not None:
        slug = pair.name.replace(" ", "_").replace("/", "_")
        write_sheet(missed_tiles, gallery / f"missed_{slug}.jpg")
        write_sheet(fp_tiles, gallery / f"false_positives_{slug}.jpg")
    per_field = float(np.mean(false_bacilli)) if false_bacilli else math.nan
    positives = len(part.positives)
    report: LabReport = {
        "lab": lab,
        "slides": list(part.slides),
        "name": pair.name,
        "mode": mode.value,
        "model_id": segmenter.model.meta.model_id,
        "filter_id": segmenter.object_filter.meta.filter_id if segmenter.object_filter else None,
        "object_threshold": segmenter.object_threshold,
        "positives": positives,
        "found_at_centre": found,
        "recall_at_centre": found / positives if positives else math.nan,
        "centre_p_above_0_5": centre_p / positives if positives else math.nan,
        "negative_fields": len(false_bacilli),
        "false_bacilli": false_bacilli,
        "false_bacilli_per_field": per_field,
        "max_false_bacilli_in_a_field": max(false_bacilli, default=0),
        "negative_slide": negative_slide(0.0 if math.isnan(per_field) else per_field),
    }
    log.info(
        "%s on %s: recall at centres %.3f (%d/%d), %.3f false bacilli per negative field, a negative slide: %s",
        pair.name,
        lab,
        report["recall_at_centre"],
        found,
        positives,
        per_field,
        report["negative_slide"]["grade_expected"],
    )
    return report


def lab_table(rows: list[LabReport]) -> list[str]:
    """Markdown rows: one per model on the lab."""
    lines = [
        "| model | filter | recall at centres | P > 0.5 at centres | false bacilli per negative field (max) | "
        "100-field negative slide: expected grade (95% range) | P(graded 1+ or worse) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r["negative_slide"]
        worse = sum(v for k, v in s["probability"].items() if k in ("1+", "2+", "3+"))
        lines.append(
            f"| {r['name']} (`{r['model_id']}`) | {r['filter_id'] or 'none'} | {100 * r['recall_at_centre']:.1f}% "
            f"({r['found_at_centre']}/{r['positives']}) | {100 * r['centre_p_above_0_5']:.1f}% | "
            f"{r['false_bacilli_per_field']:.3f} ({r['max_false_bacilli_in_a_field']}) | {s['grade_expected']} "
            f"({s['grade_range'][0]} … {s['grade_range'][1]}) | {100 * worse:.2f}% |"
        )
    return lines


def pairs_for(model: Path, object_filter: Path | None, variants: list[Path]) -> list[Pair]:
    """The model (with its filter, and without it when it has one) and each variant with the
    ``object_filter.onnx`` beside it when there is one, named by their recipes."""

    def name(path: Path) -> str:
        return OnnxModel(path, providers=("CPUExecutionProvider",)).meta.raw.get("recipe", path.stem)

    pairs = []
    if object_filter is not None:
        pairs.append(Pair(f"{name(model)} + filter", model, object_filter))
    pairs.append(Pair(name(model), model, None))
    for variant in variants:
        beside = variant.with_name("object_filter.onnx")
        pairs.append(
            Pair(f"{name(variant)} + filter", variant, beside)
            if beside.is_file()
            else Pair(name(variant), variant, None)
        )
    return pairs


def by_lab_table(znsm_methods: list[MethodReport], rows: list[LabReport]) -> list[str]:
    """One row per model (and filter): its ZNSM test figures beside its UFAM figures."""
    lines = [
        "| model | filter | ZNSM: bacillus recall / precision / F1 | ZNSM: mean abs count error | "
        "UFAM: recall at centres | UFAM: false bacilli per negative field | UFAM: 100-field negative slide |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        match = next(
            (m for m in znsm_methods if m.get("model_id") == r["model_id"] and m.get("filter_id") == r["filter_id"]),
            None,
        )
        znsm, error = "not scored", "—"
        if match is not None:
            b = match["bacillus"]
            znsm = f"{100 * b['recall']:.1f} / {100 * b['precision']:.1f} / {100 * b['f1']:.1f}"
            error = f"{match['mean_abs_count_error']:.1f}"
        s = r["negative_slide"]
        lines.append(
            f"| {r['name']} | {r['filter_id'] or 'none'} | {znsm} | {error} | {100 * r['recall_at_centre']:.1f}% | "
            f"{r['false_bacilli_per_field']:.3f} | {s['grade_expected']} ({s['grade_range'][0]} … "
            f"{s['grade_range'][1]}) |"
        )
    return lines


def evaluate_labs(
    out: Path,
    pairs: list[Pair],
    ufam_root: Path,
    ufam_split: Path,
    subset: str = "test",
    gallery: bool = True,
    mode: Mode = Mode.FAST,
) -> list[LabReport]:
    """Score every pair on the UFAM slides of ``subset``; add ``by_lab`` to ``out/report.json`` (when it is
    there) and a section to ``out/report.md``; galleries in ``out/gallery-ufam/``."""
    split = DatasetSplit.load(ufam_split)
    ufam = read_ufam(ufam_root)
    split.check_covers(set(ufam.slides))
    part = ufam.of_slides(split.subset(subset))
    rows = [
        evaluate_ufam(p, part, f"{ufam_root.name} {subset}", out / "gallery-ufam" if gallery else None, mode)
        for p in pairs
    ]
    report_path = out / "report.json"
    methods: list[MethodReport] = []
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        report["by_lab"] = {"ufam": rows, "ufam_split": str(ufam_split), "ufam_subset": subset}
        methods = report.get("methods", [])
        report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    else:
        out.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps({"by_lab": {"ufam": rows}}, indent=2) + "\n", encoding="utf-8")
    section = [
        "",
        f"## By lab: {ufam_root.name}, {subset} slides {', '.join(split.subset(subset))}",
        "",
        f"{len(part.positives)} positive patches (an expert's point at the centre; found when a kept bacillus lies "
        f"within {CENTRE_PX} px of it) and {len(part.negatives)} "
        "negative fields (every kept object is a false bacillus). A negative slide: 100 such fields, false bacilli "
        "a Poisson count with the observed mean per field, graded by WHO/IUATLD (`service/engine/grading.py`).",
        "",
        *lab_table(rows),
        "",
        "Beside the ZNSM test figures of the same model and filter (rows scored there):",
        "",
        *by_lab_table(methods, rows),
        "",
    ]
    if gallery:
        section += [
            "Galleries: `gallery-ufam/false_positives_<model>.jpg` (kept objects on negative fields, outlined green) "
            "and `gallery-ufam/missed_<model>.jpg` (positive patches with no kept bacillus at the centre; the "
            "network's mask outlined magenta).",
            "",
        ]
    with (out / "report.md").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(section))
    return rows
