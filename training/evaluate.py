"""Evaluating a dense ONNX model on the fields of a split, through the service's engine.

Heatmaps (P(bacillus) per pixel) are computed tile by tile by :mod:`service.engine` exactly as the service
computes them, cached as ``heatmaps/<field>.npy`` (float32) beside the report, and scored with
:mod:`training.metrics` at a probability threshold (0.5 = the paper's argmax).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.model import OnnxModel
from service.engine.segmenter import Segmenter
from training.box_masks import MaskDerivation, label_map
from training.dataset import discover_fields, read_annotation, read_rgb
from training.metrics import ObjectCounts, ObjectRules, PixelCounts, object_counts, pixel_counts
from training.split import DatasetSplit

log = logging.getLogger(__name__)


def field_heatmap(model: OnnxModel, image: npt.NDArray[np.uint8], tile_px: int = 512) -> npt.NDArray[np.float32]:
    """P(bacillus) for every pixel of a field, through the service engine's exact tiling."""
    return Segmenter(model, tile_px=tile_px).heatmap(image)


def cached_heatmap(
    model: OnnxModel, field_id: str, image: npt.NDArray[np.uint8], cache: Path, tile_px: int = 512
) -> tuple[npt.NDArray[np.float32], float]:
    """The field's heatmap from ``cache`` when it was made by this model, else computed and cached.

    Returns:
        the heatmap and the seconds spent computing it (0 when cached).
    """
    path = cache / f"{field_id}.npy"
    stamp = cache / "model_id.txt"
    if path.is_file() and stamp.is_file() and stamp.read_text().strip() == model.meta.model_id:
        return np.load(path), 0.0
    started = time.perf_counter()
    heatmap = field_heatmap(model, image, tile_px)
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(model.meta.model_id + "\n")
    np.save(path, heatmap)
    return heatmap, seconds


def evaluate(
    model_path: Path,
    data: Path,
    split_path: Path,
    subset: str,
    out: Path,
    *,
    threshold: float = 0.5,
    rules: ObjectRules | None = None,
    tile_px: int = 512,
) -> dict[str, object]:
    """Score the model on one subset of the split; write ``report.json`` into ``out`` and return it."""
    rules = rules or ObjectRules()
    model = OnnxModel(model_path, providers=("CPUExecutionProvider",))
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    split.check_covers(set(fields))
    per_field: dict[str, dict[str, object]] = {}
    pixels, objects = PixelCounts(), ObjectCounts()
    seconds, megapixels = 0.0, 0.0
    exact_masks = True
    for fid in tqdm(split.subset(subset), desc=f"evaluate ({subset})", unit="field", file=sys.stderr):
        annotation, image = read_annotation(fields[fid]), read_rgb(fields[fid].image)
        exact_masks &= annotation.mask is not None
        labels = label_map(annotation, image, MaskDerivation())
        heatmap, spent = cached_heatmap(model, fid, image, out / "heatmaps", tile_px)
        if spent:
            seconds += spent
            megapixels += image.shape[0] * image.shape[1] / 1e6
        predicted = heatmap > threshold
        p, o = pixel_counts(predicted, labels), object_counts(predicted, annotation.boxes, rules)
        pixels, objects = pixels + p, objects + o
        per_field[fid] = {"pixel": p.metrics(), "bacillus": o.metrics(), "count_error": o.counted - o.boxes}
    count_errors = [abs(int(v["count_error"])) for v in per_field.values()]  # type: ignore[call-overload]
    report: dict[str, object] = {
        "model": str(model_path),
        "model_id": model.meta.model_id,
        "recipe": model.meta.raw.get("recipe", ""),
        "subset": subset,
        "fields": list(per_field),
        "threshold": threshold,
        "ground_truth": "exact masks"
        if exact_masks
        else "pixel masks derived from boxes (approximate): see training/box_masks.py",
        "object_rules": asdict(rules),
        "pixel": pixels.metrics(),
        "bacillus": objects.metrics(),
        "mean_abs_count_error": float(np.mean(count_errors)),
        "per_field": per_field,
        "inference": {
            "seconds": round(seconds, 1),
            "megapixels": round(megapixels, 2),
            "megapixels_per_second": round(megapixels / seconds, 4) if seconds else None,
            "providers": list(model.providers),
            "tile_px": tile_px,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    b, px = objects.metrics(), pixels.metrics()
    log.info(
        "%s on %s: bacillus recall %.3f precision %.3f F1 %.3f | pixel recall %.3f precision %.3f F1 %.3f",
        report["recipe"],
        subset,
        b["recall"],
        b["precision"],
        b["f1"],
        px["recall"],
        px["precision"],
        px["f1"],
    )
    return report
