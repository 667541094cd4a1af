"""int8 that loses nothing: where the error comes from, layer by layer, and which quantisation keeps every lab's
detections (issue 28, item 1). Prints JSON.

1. **Fields of every lab we have**, by split, each read at its own scale as the service reads it with the pixel
   size known: ZNSM-iDB MS-2 (the model's own, ×1), ZNSM-iDB MS-1 (×2.10, ``docs/results.md`` section 13), UFAM
   DDS1 negative fields and positive centre patches as uploaded (×1: a lab that gives no pixel size) and at its
   profile's scale (×2.5). Train splits calibrate, validation splits choose, test splits report.
2. **Per layer**: static int8 copies of the dense network (the refinement's) with one convolution quantised at a
   time (the others in float), then the candidate recipes, each against fp32 on the validation windows of each
   lab: largest |ΔP|, mean |ΔP| where fp32 is within 0.2 of 0.5, and outputs on the other side of 0.5.
3. **Recipes**: ``--recipes`` (convolutions kept in float; calibration windows from ZNSM only or every lab).
   Each recipe's dense and coarse copies are written into a temporary model folder beside the shipped networks
   and read whole fields in fast mode against fast fp32 (which is exact mode's result on every test field,
   sections 10 and 15): kept bacilli found / missed / added (object overlap) per lab, recall at UFAM's centres,
   and seconds per ZNSM field (median over the fields, 2 runs each).
4. **Choice, on validation only**: the fastest recipe that keeps ≥ 99% of fp32's kept bacilli and adds ≤ 1% on
   every lab's validation data (UFAM: at its centres and on its negative fields); then the test splits, reported.

    .venv/bin/python bench/int8_calibration.py --out bench/results/int8_calibration_cpu_2cores.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.json_output import emit_json  # noqa: E402
from service.engine.loading import SegmenterConfig, load_segmenter  # noqa: E402
from service.engine.model import OnnxModel  # noqa: E402
from service.engine.model_folder import (  # noqa: E402
    COARSE_INT8_ONNX,
    COARSE_ONNX,
    DENSE_INT8_ONNX,
    DENSE_ONNX,
    open_folder,
)
from service.engine.segmenter import Mode, Segmentation, Segmenter  # noqa: E402
from training.data.every_lab import MS1_FACTOR, UFAM_FACTOR, every_lab_fields, scaled, ufam_part  # noqa: E402
from training.data.ufam import CENTRE_PX, UfamSet, patch_centre, read_positives  # noqa: E402
from training.model.fast_variants import int8_metadata, quantise, sample_windows  # noqa: E402
from training.model.quant_recipe import QuantRecipe  # noqa: E402
from training.paths import SHIPPED_DIR  # noqa: E402

CPU = ("CPUExecutionProvider",)
EIGHT = np.ones((3, 3), dtype=bool)
CONVS = ("conv1", "conv2", "conv3", "conv4")
RECIPES = {
    "shipped": None,  # the folder's own int8 files (before issue 28: ZNSM windows, softmax in float)
    "every lab, softmax in float": QuantRecipe(float_convs=()),
    "every lab, conv1 in float": QuantRecipe(float_convs=("conv1",)),
    "every lab, conv1 and conv4 in float": QuantRecipe(float_convs=("conv1", "conv4")),
}


def window_stats(
    fp32: OnnxModel, int8: OnnxModel, windows: Sequence[npt.NDArray[np.float32]]
) -> dict[str, float | int]:
    channel = fp32.meta.positive_index
    diffs, near, flips, outputs = [], [], 0, 0
    for window in windows:
        a = fp32.run(window[None])[0, :, :, channel]
        b = int8.run(window[None])[0, :, :, channel]
        diff = np.abs(a - b)
        diffs.append(diff.ravel())
        near.append(diff[np.abs(a - 0.5) < 0.2])
        flips += int(((a > 0.5) != (b > 0.5)).sum())
        outputs += a.size
    every, close = np.concatenate(diffs), np.concatenate(near)
    return {
        "max_abs_dp": round(float(every.max()), 4),
        "mean_abs_dp_near_0_5": round(float(close.mean()), 4) if close.size else 0.0,
        "outputs_across_0_5": flips,
        "outputs": outputs,
    }


def kept_agreement(reference: Segmentation, other: Segmentation) -> dict[str, int]:
    ref_labels, n_ref = ndi.label(reference.objects, EIGHT)
    other_labels, n_other = ndi.label(other.objects, EIGHT)
    found = len(set(np.unique(ref_labels[other.objects])) - {0})
    matched = len(set(np.unique(other_labels[reference.objects])) - {0})
    return {
        "reference_kept": n_ref,
        "kept": n_other,
        "found": found,
        "missed": n_ref - found,
        "added": n_other - matched,
    }


def segmenter(folder: Path, precision: str) -> Segmenter:
    opened = open_folder(folder)
    paths = opened.fast_files(precision)
    assert paths is not None, f"{folder}: no {precision} fast networks"
    config = SegmenterConfig(
        opened.dense, providers=CPU, object_filter_path=opened.object_filter, fast_paths=paths, fast_precision=precision
    )
    made = load_segmenter(config)
    made.warm_up(Mode.FAST)
    return made


def detections(
    fp32: Segmenter,
    int8: Segmenter,
    fields: dict[str, list[tuple[str, npt.NDArray[np.uint8]]]],
    part: UfamSet,
    repeats: int,
) -> dict[str, Any]:
    """int8 against fp32, fast mode, whole fields of every lab and UFAM's centre patches at both scales."""
    out: dict[str, Any] = {}
    for lab, items in fields.items():
        totals: dict[str, Any] = {
            "fields": len(items),
            "reference_kept": 0,
            "kept": 0,
            "found": 0,
            "missed": 0,
            "added": 0,
        }
        seconds: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _, rgb in tqdm(items, desc=lab, unit="field", file=sys.stderr):
            runs: dict[str, Segmentation] = {}
            for name, seg in (("fp32", fp32), ("int8", int8)):
                times = []
                for _ in range(repeats if lab == "znsm-ms2" else 1):
                    started = time.perf_counter()
                    runs[name] = seg.segment(rgb, mode=Mode.FAST)
                    times.append(time.perf_counter() - started)
                seconds[name].append(statistics.median(times))
            for key, value in kept_agreement(runs["fp32"], runs["int8"]).items():
                totals[key] += value
        totals["seconds_median"] = {k: round(statistics.median(v), 3) for k, v in seconds.items() if v}
        out[lab] = totals
    images, backgrounds = read_positives(part, fp32.model.meta.normalisation)
    for factor in (1.0, UFAM_FACTOR):
        found = {"fp32": 0, "int8": 0, "both": 0}
        for p in tqdm(part.positives, desc=f"ufam centres ×{factor:g}", unit="patch", file=sys.stderr):
            rgb = scaled(images[p.patch_id], factor)
            cy, cx = patch_centre(rgb)
            hits = {}
            for name, seg in (("fp32", fp32), ("int8", int8)):
                result = seg.segment(rgb, background=backgrounds.get(p.field), mode=Mode.FAST)
                near = result.objects[
                    max(cy - CENTRE_PX, 0) : cy + CENTRE_PX + 1, max(cx - CENTRE_PX, 0) : cx + CENTRE_PX + 1
                ]
                hits[name] = bool(near.any())
                found[name] += hits[name]
            found["both"] += hits["fp32"] and hits["int8"]
        out[f"ufam-dds1 centres ×{factor:g}"] = {
            "patches": len(part.positives),
            "reference_kept": found["fp32"],
            "kept": found["int8"],
            "found": found["both"],
            "missed": found["fp32"] - found["both"],
            "added": found["int8"] - found["both"],
        }
    return out


def meets(rows: dict[str, Any], keep: float, add: float) -> bool:
    """≥ ``keep`` of fp32's kept bacilli found and ≤ ``add`` of them added, on every lab."""
    for row in rows.values():
        reference = row["reference_kept"]
        if row["found"] < keep * reference or row["added"] > add * reference:
            return False
    return True


def write_recipe(
    folder: Path, name: str, recipe: QuantRecipe, windows: dict[str, list[npt.NDArray[np.float32]]]
) -> Path:
    """A model folder of links to the shipped files, with this recipe's int8 copies."""
    out = folder / name.replace(" ", "-").replace(",", "").replace(":", "")
    out.mkdir(parents=True)
    for item in SHIPPED_DIR.iterdir():
        if item.name not in (DENSE_INT8_ONNX, COARSE_INT8_ONNX):
            (out / item.name).symlink_to(item.resolve())
    dense = OnnxModel(SHIPPED_DIR / DENSE_ONNX, providers=CPU)
    for source, target, key in ((DENSE_ONNX, DENSE_INT8_ONNX, "dense"), (COARSE_ONNX, COARSE_INT8_ONNX, "coarse")):
        fp32 = OnnxModel(SHIPPED_DIR / source, providers=CPU)
        metadata = int8_metadata(fp32, dense.meta.model_id, key, {"float_nodes": recipe.describe()})
        quantise(SHIPPED_DIR / source, out / target, windows[key], metadata, recipe)
    return out


def shipped_on_test(limit: int, repeats: int, out: Path | None) -> None:
    """The shipped folder's int8 networks against its fp32 ones on every lab's test data, as the rule reads it."""
    started = time.perf_counter()
    fp32, int8 = segmenter(SHIPPED_DIR, "fp32"), segmenter(SHIPPED_DIR, "int8")
    fast = json.loads((SHIPPED_DIR / "fast_variants.json").read_text())
    test = every_lab_fields("test", limit)
    rows = detections(fp32, int8, test, ufam_part("test"), repeats)
    report = {
        "bench": "int8_calibration --shipped-on-test",
        "model_id": fp32.model.meta.model_id,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "quantisation": fast.get("quantisation"),
        "calibration": fast.get("calibration"),
        "fields": {lab: len(items) for lab, items in test.items()},
        "detections": rows,
        "meets": meets(rows, 0.99, 0.01),
        "seconds": round(time.perf_counter() - started, 1),
    }
    emit_json(report, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration-fields", type=int, default=12, help="train fields per lab (default 12)")
    parser.add_argument("--windows", type=int, default=8, help="windows per field and network (default 8)")
    parser.add_argument("--limit", type=int, default=12, help="validation / test fields per ZNSM lab (default 12)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per ZNSM field for its seconds (median)")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer study")
    parser.add_argument(
        "--shipped-on-test", action="store_true", help="only the shipped folder's int8 against fp32 on the test splits"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.shipped_on_test:
        shipped_on_test(args.limit, args.repeats, args.out)
        return

    started = time.perf_counter()
    dense = OnnxModel(SHIPPED_DIR / DENSE_ONNX, providers=CPU)
    coarse = OnnxModel(SHIPPED_DIR / COARSE_ONNX, providers=CPU)
    calibration = every_lab_fields("train", args.calibration_fields)
    validation = every_lab_fields("validation", args.limit)
    every: dict[str, list[npt.NDArray[np.float32]]] = {"dense": [], "coarse": []}
    for items in calibration.values():
        d, c = sample_windows(dense, coarse, [rgb for _, rgb in items], args.windows, 0)
        every["dense"] += d
        every["coarse"] += c
    checks = {
        lab: sample_windows(dense, coarse, [rgb for _, rgb in items], args.windows, 1)[0]
        for lab, items in validation.items()
    }
    report: dict[str, Any] = {
        "bench": "int8_calibration",
        "model_id": dense.meta.model_id,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "calibration": {lab: len(items) for lab, items in calibration.items()},
        "calibration_windows": {k: len(v) for k, v in every.items()},
        "validation": {lab: len(items) for lab, items in validation.items()},
        "scales": {"znsm-ms1": MS1_FACTOR, "ufam-dds1": [1.0, UFAM_FACTOR]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.no_layers:
            layers: dict[str, Any] = {}
            for conv in CONVS:
                target = work / f"only-{conv}.onnx"
                only = QuantRecipe(float_convs=tuple(c for c in CONVS if c != conv))
                quantise(SHIPPED_DIR / DENSE_ONNX, target, every["dense"], dense.meta.raw, only)
                int8 = OnnxModel(target, providers=CPU)
                layers[f"only {conv} in int8"] = {lab: window_stats(dense, int8, w) for lab, w in checks.items()}
                print(conv, json.dumps(layers[f"only {conv} in int8"]), file=sys.stderr, flush=True)
            report["per_layer_dense_windows"] = layers
        fp32 = segmenter(SHIPPED_DIR, "fp32")
        folders: dict[str, Path] = {}
        recipes: dict[str, Any] = {}
        for name, recipe in RECIPES.items():
            folders[name] = SHIPPED_DIR if recipe is None else write_recipe(work, name, recipe, every)
            int8_dense = OnnxModel(folders[name] / DENSE_INT8_ONNX, providers=CPU)
            seg = segmenter(folders[name], "int8")
            recipes[name] = {
                "float_convs": list(recipe.float_convs) if recipe else [],
                "windows": {lab: window_stats(dense, int8_dense, w) for lab, w in checks.items()},
                "validation": detections(fp32, seg, validation, ufam_part("validation"), args.repeats),
            }
            recipes[name]["meets_on_validation"] = meets(recipes[name]["validation"], 0.99, 0.01)
            print(name, json.dumps(recipes[name]), file=sys.stderr, flush=True)
        passing = [n for n, r in recipes.items() if r["meets_on_validation"]]
        chosen = min(
            passing,
            key=lambda n: recipes[n]["validation"]["znsm-ms2"]["seconds_median"]["int8"],
            default=None,
        )
        report["recipes"] = recipes
        report["chosen_on_validation"] = chosen
        if chosen is not None:
            test = every_lab_fields("test", args.limit)
            seg = segmenter(folders[chosen], "int8")
            report["test"] = {
                "recipe": chosen,
                "fields": {lab: len(items) for lab, items in test.items()},
                "detections": detections(fp32, seg, test, ufam_part("test"), args.repeats),
            }
            report["test"]["meets"] = meets(report["test"]["detections"], 0.99, 0.01)
            shipped = segmenter(SHIPPED_DIR, "int8")
            report["test"]["shipped_int8"] = detections(fp32, shipped, test, ufam_part("test"), 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    emit_json(report, args.out)


if __name__ == "__main__":
    main()
