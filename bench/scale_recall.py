"""Recall by scale (issue 26): the shipped model on fields of another scale, read with and without their pixel size.

* ``ms1``: ZNSM-iDB Microscope 1's validation fields (``training/splits/znsm-ms1.json``) at their measured pixel
  size (``--ms1-um``, from ``python -m training pixel-size --data ../shared/data/znsm-ms1``), as uploaded (scale
  ignored), and at a sweep of factors (chosen after looking: the sweep is reported, not used to pick anything);
* ``resized``: ZNSM-iDB MS-2's test fields resized by each factor, read with the matching pixel size given (the
  model's ÷ factor) and without it;
* ``estimated`` (both sets): no pixel size given, the scale estimated from each field's own kept objects as the
  service does by default (:mod:`service.engine.scale_estimate`); each field's estimated factor against the true one
  (MS-2 resized: 1 ÷ the resize; MS-1: the rods' 2.10). ``--only-estimated`` runs these alone and merges them into
  ``--merge``'s JSON;
* ``slides`` (``--only-slides``, merged the same way): the same fields sent as slides, as the service reads a slide's
  fields (``SlideScaleEvidence``: MS-1's validation fields one slide, each resize of the MS-2 test fields one slide,
  in the split's order), beside the same fields read one by one (``estimated``) in the same run: each field's
  scale source and estimate, how many times the network read each set, and its seconds.

A marked bacillus (``single bacillus`` or ``bacilli cluster`` box) is found when a kept object's centroid lies in
its box; precision is the share of kept objects whose centroid lies in any box. Fast mode (fp32), 2 CPU cores.
Prints JSON; ``--figure`` draws recall against the factor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import open_folder
from service.engine.rescaled import segment_at_scale
from service.engine.scale import FieldScale, ScaleSource, resolve_scale
from service.engine.scale_estimate import SlideScaleEvidence
from service.engine.segmenter import Mode, Segmenter
from training.data.annotations import BoxLabel
from training.data.dataset import discover_fields, read_annotation, read_rgb
from training.data.split import DatasetSplit
from training.paths import SHIPPED_DIR, UFAM_DDS1, UFAM_DDS1_SPLIT, ZNSM_MS1, ZNSM_MS2, ZNSM_MS2_SPLIT

BACILLI = (BoxLabel.SINGLE_BACILLUS, BoxLabel.BACILLI_CLUSTER)


def score(
    segmenter: Segmenter,
    rgb: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    every: list[tuple[float, float, float, float]],
    scale: FieldScale,
    estimate: bool = False,
    slide: SlideScaleEvidence | None = None,
) -> dict[str, float]:
    result = segment_at_scale(segmenter, rgb, scale, mode=Mode.FAST, estimate=estimate, slide=slide)
    centres = [o.centroid for o in result.bacilli]
    read = result.scale if result.scale is not None else scale
    estimated = read.source in (ScaleSource.ESTIMATED, ScaleSource.SLIDE)

    def inside(c: tuple[float, float], b: tuple[float, float, float, float]) -> bool:
        return b[0] <= c[0] < b[0] + b[2] and b[1] <= c[1] < b[1] + b[3]

    return {
        "boxes": len(boxes),
        "found": sum(any(inside(c, b) for c in centres) for b in boxes),
        "kept": len(centres),
        "kept_in_boxes": sum(any(inside(c, b) for b in every) for c in centres),
        "read_factor": read.factor,
        "estimated_factor": (
            read.microns_per_pixel / read.model_microns_per_pixel
            if estimated and read.microns_per_pixel and read.model_microns_per_pixel
            else None
        ),
        "source": read.source.value,
    }


def total(rows: list[dict[str, float]], true_factor: float | None = None) -> dict[str, object]:
    s = {k: sum(r[k] for r in rows) for k in ("boxes", "found", "kept", "kept_in_boxes")}
    out: dict[str, object] = {
        **s,
        "recall": round(s["found"] / max(s["boxes"], 1), 4),
        "precision": round(s["kept_in_boxes"] / s["kept"], 4) if s["kept"] else None,
    }
    if true_factor is not None:
        estimates = [r["estimated_factor"] for r in rows]
        within = [e is not None and abs(e / true_factor - 1) <= 0.2 for e in estimates]
        out |= {
            "true_factor": round(true_factor, 4),
            "estimated_factors": [None if e is None else round(e, 3) for e in estimates],
            "read_factors": [round(r["read_factor"], 3) for r in rows],
            "estimates_within_20pct": sum(within),
            "fields_without_estimate": sum(e is None for e in estimates),
            "sources": [r["source"] for r in rows],
        }
    return out


class CountingReads:
    """Counts the network's readings of fields (``Segmenter.segment`` calls) and their seconds."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.readings, self.seconds = 0, 0.0
        inner = segmenter.segment

        def segment(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.readings += 1
                self.seconds += time.perf_counter() - started

        segmenter.segment = segment  # type: ignore[method-assign]

    def take(self) -> dict[str, float]:
        out = {"network_readings": self.readings, "network_seconds": round(self.seconds, 1)}
        self.readings, self.seconds = 0, 0.0
        return out


def slide_runs(
    segmenter: Segmenter,
    ms1: list,
    tests: list,
    factors: list[float],
    ms1_factor: float,
    ways: tuple[str, ...] = ("as_one_slide", "field_by_field"),
    only: tuple[str, ...] = (),
) -> dict:
    """The same fields as :func:`estimated_runs`, each set read as one slide and then field by field (``ways``)."""
    assumed = resolve_scale(segmenter.scale)
    counter = CountingReads(segmenter)
    sets = [("ms1_validation", ms1, 1.0, ms1_factor)] + [
        (f"znsm_test_resized_{factor:g}", tests, factor, 1.0 / factor) for factor in [1.0, *factors]
    ]
    split = DatasetSplit.load(UFAM_DDS1_SPLIT)
    negatives = sorted(p for p in (UFAM_DDS1 / "negatives").glob("*.png") if p.name[:3] in set(split.test))
    sets.append(("ufam_test_negatives", negatives, 1.0, None))  # a negative slide: no rods, no true factor
    out: dict[str, object] = {}
    for name, fields, resize_by, true_factor in sets:
        if only and name not in only:
            continue
        if true_factor is None:
            images, boxes = [read_rgb(path) for path in fields], [([], [])] * len(fields)
        else:
            images = [resize(read_rgb(f.image), resize_by) if resize_by != 1.0 else read_rgb(f.image) for f in fields]
            boxes = [boxes_of(f, resize_by) for f in fields]
        by_way: dict[str, object] = {}
        for way in ways:
            slide = SlideScaleEvidence() if way == "as_one_slide" else None
            started = time.perf_counter()
            rows = [score(segmenter, rgb, *b, assumed, True, slide) for rgb, b in zip(images, boxes, strict=True)]
            by_way[way] = {
                **total(rows, true_factor),
                "sources": [r["source"] for r in rows],
                **counter.take(),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(f"{name} {way}: {by_way[way]}", file=sys.stderr)
        out[name] = by_way
    return out


def estimated_runs(segmenter: Segmenter, ms1: list, tests: list, factors: list[float], ms1_factor: float) -> dict:
    """MS-1 validation and MS-2 test fields resized, with no pixel size given: the scale estimated per field."""
    assumed = resolve_scale(segmenter.scale)
    ms1_rows = [score(segmenter, read_rgb(f.image), *boxes_of(f), assumed, estimate=True) for f in ms1]
    out: dict[str, object] = {"ms1_validation": total(ms1_rows, ms1_factor)}
    print(f"ms1 estimated: {out['ms1_validation']}", file=sys.stderr)
    by_factor = {}
    for factor in [1.0, *factors]:
        rows = []
        for f in tests:
            rgb = resize(read_rgb(f.image), factor) if factor != 1.0 else read_rgb(f.image)
            rows.append(score(segmenter, rgb, *boxes_of(f, factor), assumed, estimate=True))
        by_factor[f"{factor:g}"] = total(rows, 1.0 / factor)
        print(f"resized {factor:g} estimated: {by_factor[f'{factor:g}']}", file=sys.stderr)
    out["znsm_test_resized"] = by_factor
    return out


def boxes_of(files, factor: float = 1.0):
    a = read_annotation(files)
    bac = [(b.x * factor, b.y * factor, b.width * factor, b.height * factor) for b in a.boxes_with(*BACILLI)]
    every = [(b.x * factor, b.y * factor, b.width * factor, b.height * factor) for b in a.boxes]
    return bac, every


def resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (round(w * factor), round(h * factor))
    return np.asarray(
        Image.fromarray(rgb).resize(size, Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC)
    )


def plot(record: dict[str, object], path: Path) -> None:
    """Recall of the resized MS-2 test fields against the factor, with and without the pixel size."""
    resized = record["znsm_test_resized"]["by_factor"]  # type: ignore[index]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(float(k) for k in resized)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("given", "pixel size given"), ("ignored", "pixel size not given, not estimated")):
        ax.plot(xs, [resized[f"{x:g}"][key]["recall"] for x in xs], marker="o", label=label)
    estimated = record.get("estimated", {}).get("znsm_test_resized")  # type: ignore[attr-defined]
    if estimated:
        ax.plot(xs, [estimated[f"{x:g}"]["recall"] for x in xs], marker="s", label="estimated from the field")
    slides = record.get("slides")
    if isinstance(slides, dict) and all(f"znsm_test_resized_{x:g}" in slides for x in xs):
        as_slide = [slides[f"znsm_test_resized_{x:g}"]["as_one_slide"]["recall"] for x in xs]
        ax.plot(xs, as_slide, marker="D", label="estimated, the fields sent as one slide")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:g}×" for x in xs])
    ax.set_xlabel("ZNSM-iDB MS-2 test fields resized by")
    ax.set_ylabel("bacillus recall (fast mode)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{record['model_id']}: recall by scale")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--ms1-um", type=float, default=0.1357)
    parser.add_argument("--sweep", type=float, nargs="*", default=[1.5, 2.5, 3.0])
    parser.add_argument("--factors", type=float, nargs="*", default=[0.25, 0.5, 0.75, 1.5, 2.0])
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--plot", type=Path, help="only draw --figure from this JSON (a run's output)")
    parser.add_argument("--only-estimated", action="store_true", help="run the estimated runs alone")
    parser.add_argument("--only-slides", action="store_true", help="run the slide runs alone")
    parser.add_argument("--ways", nargs="+", default=["as_one_slide", "field_by_field"], help="with --only-slides")
    parser.add_argument("--sets", nargs="*", default=[], help="with --only-slides: these sets alone (default: all)")
    parser.add_argument("--merge", type=Path, help="with --only-estimated or --only-slides: a run's JSON to add to")
    args = parser.parse_args()
    if args.plot is not None:
        plot(json.loads(args.plot.read_text()), args.figure)
        return 0
    folder = open_folder(args.model)
    segmenter = load_segmenter(SegmenterConfig.of_folder(folder))
    model = segmenter.scale
    assert model is not None, "the folder declares no pixel size (python -m training pixel-size --model …)"
    started = time.perf_counter()
    record: dict[str, object] = {"model_id": folder.model_id, "model_um": model.pixel_size_um, "mode": "fast fp32"}

    ms1_split = DatasetSplit.load(Path("training/splits/znsm-ms1.json"))
    ms1 = [f for f in discover_fields(ZNSM_MS1) if f.field_id in set(ms1_split.validation)]
    split = DatasetSplit.load(ZNSM_MS2_SPLIT)
    tests = [f for f in discover_fields(ZNSM_MS2) if f.field_id in set(split.test)]
    if args.only_slides:
        merged = json.loads(args.merge.read_text()) if args.merge else record
        merged["slides"] = slide_runs(
            segmenter, ms1, tests, args.factors, args.ms1_um / model.pixel_size_um, tuple(args.ways), tuple(args.sets)
        )
        merged["slides"]["seconds"] = round(time.perf_counter() - started, 1)
        sys.stdout.write(json.dumps(merged, indent=1) + "\n")
        return 0
    if args.only_estimated:
        merged = json.loads(args.merge.read_text()) if args.merge else record
        merged["estimated"] = estimated_runs(segmenter, ms1, tests, args.factors, args.ms1_um / model.pixel_size_um)
        merged["estimated"]["seconds"] = round(time.perf_counter() - started, 1)
        sys.stdout.write(json.dumps(merged, indent=1) + "\n")
        return 0
    runs = {"pixel size given": resolve_scale(model, request=args.ms1_um), "scale ignored": resolve_scale(None)}
    for factor in args.sweep:
        runs[f"factor {factor:g}"] = FieldScale(
            model.pixel_size_um * factor, ScaleSource.REQUEST, factor, model.pixel_size_um
        )
    ms1_out = {}
    for name, scale in runs.items():
        rows = [score(segmenter, read_rgb(f.image), *boxes_of(f), scale) for f in ms1]
        ms1_out[name] = {"factor": scale.factor, **total(rows)}
        print(f"ms1 {name}: {ms1_out[name]}", file=sys.stderr)
    record["ms1_validation"] = {"fields": len(ms1), "microns_per_pixel": args.ms1_um, "runs": ms1_out}

    resized: dict[str, dict[str, object]] = {}
    for factor in [1.0, *args.factors]:
        given, ignored = [], []
        for f in tests:
            rgb = resize(read_rgb(f.image), factor) if factor != 1.0 else read_rgb(f.image)
            boxes = boxes_of(f, factor)
            given.append(score(segmenter, rgb, *boxes, resolve_scale(model, request=model.pixel_size_um / factor)))
            if factor != 1.0:
                ignored.append(score(segmenter, rgb, *boxes, resolve_scale(model)))
        resized[f"{factor:g}"] = {"given": total(given), "ignored": total(ignored) if ignored else total(given)}
        print(f"resized {factor:g}: {resized[f'{factor:g}']}", file=sys.stderr)
    record["znsm_test_resized"] = {"fields": len(tests), "by_factor": resized}
    record["seconds"] = round(time.perf_counter() - started, 1)
    sys.stdout.write(json.dumps(record, indent=1) + "\n")
    if args.figure is not None:
        plot(record, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
