"""Fast mode with its cascade (its coarse grid read in fp32, and in int8) against fast mode reading everything, on
every lab's test data. Prints JSON.

The cascade (:mod:`service.engine.cascade`) reads the network's last convolution at every other coarse grid point
first and at the rest only around what that saw, then at every other pixel of a refined tile and at the rest only
next to what that saw. Where it reads, it gives the network's output; what it can change is an output above the
screening or mask threshold that its first level did not see. So the comparison is with fast mode reading every grid
point and every refined pixel (exact mode's heatmap wherever refined, ``docs/results.md`` sections 10 and 15):

* every candidate and every kept bacillus the same (their boxes), and the mask the same pixel for pixel;
* seconds per image of the whole field read in fast mode (``Segmenter.segment``, median of ``--repeats`` runs, the
  ways alternating), and of the coarse pass and the refinement alone;
* the outputs the network computed (grid points and refined pixels) and the tiles refined;
* inside the mask, whether the pixels above the object filter's sure level are the same, and the largest difference
  of P (the fp32 band leaves int8's readings inside the mask away from the levels).

Four ways: reading everything; the cascade with its grid read in fp32 (``TBSEG_FAST_SCREENING=fp32``); the cascade
with its grid (and each refined tile's first level) read by the folder's int8 screening parts, screening at the
threshold less the model's margin, every pixel near a hot lattice point read in fp32 (the default before the band);
and the same with the model's fp32 band: those pixels read in int8 and again in fp32 only near the mask threshold or
the sure level (the default).

The data: ZNSM-iDB MS-2's test fields (×1), MS-1's test fields at its pixel size (×2.10), UFAM's test negative fields
and test positive centre patches as uploaded (×1) and at its lab profile's scale (×2.5). The cascade's thresholds
were chosen on validation fields (``cascade.json``); this reads test data only. Run it alone on the machine.

    .venv/bin/python bench/fast_cascade.py --out bench/results/fast_cascade_cpu_2cores.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.json_output import emit_json  # noqa: E402
from service.engine.candidates import SURE_P  # noqa: E402
from service.engine.fast import fast_heatmap  # noqa: E402
from service.engine.loading import load_segmenter  # noqa: E402
from service.engine.model_folder import open_folder  # noqa: E402
from service.engine.segmenter import Mode, Segmenter  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data.dataset import discover_fields, read_rgb  # noqa: E402
from training.data.every_lab import MS1_FACTOR, UFAM_FACTOR, scaled, ufam_part  # noqa: E402
from training.data.split import DatasetSplit  # noqa: E402
from training.data.ufam import read_positives  # noqa: E402
from training.paths import SHIPPED_DIR, ZNSM_MS1, ZNSM_MS1_SPLIT, ZNSM_MS2, ZNSM_MS2_SPLIT  # noqa: E402

Rgb = npt.NDArray[np.uint8]
WAYS = ("everything", "cascade", "cascade_int8_screening", "cascade_int8_band")
SETTINGS = {
    "everything": {"fast_cascade": False},
    "cascade": {"fast_cascade": True, "fast_screening": "fp32"},
    "cascade_int8_screening": {"fast_cascade": True, "fast_screening": "int8"},  # with its band taken off below
    "cascade_int8_band": {"fast_cascade": True, "fast_screening": "int8"},
}


def test_sets(patches: bool, subset: str = "test") -> dict[str, tuple[list[Rgb], bool]]:
    """Every lab's images of ``subset`` of its split by set, each with whether it is made of whole fields."""
    ms2 = {f.field_id: f for f in discover_fields(ZNSM_MS2)}
    ms1 = {f.field_id: f for f in discover_fields(ZNSM_MS1)}
    ms2_ids, ms1_ids = (
        DatasetSplit.load(ZNSM_MS2_SPLIT).subset(subset),
        DatasetSplit.load(ZNSM_MS1_SPLIT).subset(subset),
    )
    sets: dict[str, tuple[list[Rgb], bool]] = {
        f"znsm-ms2 {subset} fields ×1": ([read_rgb(ms2[i].image) for i in ms2_ids], True),
        f"znsm-ms1 {subset} fields ×{MS1_FACTOR:.2f}": (
            [scaled(read_rgb(ms1[i].image), MS1_FACTOR) for i in ms1_ids],
            True,
        ),
    }
    part = ufam_part(subset)
    for factor in (1.0, UFAM_FACTOR):
        sets[f"ufam-dds1 {subset} negative fields ×{factor:g}"] = (
            [scaled(read_rgb(n.path), factor) for n in part.negatives],
            True,
        )
    if patches:
        found, _ = read_positives(part, None)
        for factor in (1.0, UFAM_FACTOR):
            sets[f"ufam-dds1 {subset} positive centre patches ×{factor:g}"] = (
                [scaled(found[p.patch_id], factor) for p in part.positives],
                False,
            )
    return sets


def read(segmenter: Segmenter, rgb: Rgb) -> tuple[float, Any]:
    started = time.perf_counter()
    result = segmenter.segment(rgb, mode=Mode.FAST, object_threshold=None)
    return time.perf_counter() - started, result


def boxes(objects: Any) -> list[tuple[int, ...]]:
    return sorted(tuple(o.bbox) for o in objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs per whole field and way (default: 2)")
    parser.add_argument("--no-patches", action="store_true", help="whole fields only")
    parser.add_argument(
        "--subset", default="test", choices=("train", "validation", "test"), help="which part of each lab's split"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    folder = open_folder(SHIPPED_DIR)
    segmenters = {
        way: load_segmenter(
            Settings(providers="CPUExecutionProvider", **SETTINGS[way]).segmenter_config(folder)  # type: ignore[arg-type]
        )
        for way in WAYS
    }
    for way in WAYS[1:]:
        fast = segmenters[way].fast
        if fast is None or fast.cascade is None:
            raise SystemExit(f"{folder.path}: no cascade (python -m training cascade)")
        if "int8" in way and fast.cascade.screening is None:
            raise SystemExit(f"{folder.path}: no int8 screening (python -m training screening)")
        if way == "cascade_int8_band" and fast.cascade.screening.band_logit is None:
            raise SystemExit(f"{folder.path}: its int8 screening has no fp32 band (python -m training screening)")
    # the int8 screening of before the band: every pixel near a hot lattice point read in fp32
    unbanded = segmenters["cascade_int8_screening"].fast
    assert unbanded is not None and unbanded.cascade is not None and unbanded.cascade.screening is not None
    unbanded.cascade.screening = replace(unbanded.cascade.screening, band_logit=None)
    cascade_json = json.loads((folder.path / "cascade.json").read_text(encoding="utf-8"))
    record: dict[str, Any] = {
        "bench": "fast_cascade",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "model": SHIPPED_DIR.name,
        "rule": cascade_json["rule"],
        "screening": {
            k: cascade_json.get("screening", {}).get(k)
            for k in ("margin", "first_threshold", "refine_threshold", "fp32_band_logit")
        },
        "repeats": args.repeats,
        "subset": args.subset,
        "sets": {},
    }
    for name, (images, whole) in test_sets(not args.no_patches, args.subset).items():
        repeats = args.repeats if whole else 1
        seconds: dict[str, list[float]] = {w: [] for w in WAYS}
        stages: dict[str, dict[str, list[float]]] = {w: {"coarse": [], "refine": []} for w in WAYS}
        reads: dict[str, list[int]] = {w: [0, 0, 0] for w in WAYS}
        same = {w: {"candidates": 0, "kept": 0, "mask": 0, "sure_pixels": 0} for w in WAYS[1:]}
        mask_error = dict.fromkeys(WAYS[1:], 0.0)
        kept_total, mask_px = 0, 0
        for rgb in tqdm(images, desc=name, unit="image"):
            runs: dict[str, list[float]] = {w: [] for w in WAYS}
            results: dict[str, Any] = {}
            for r in range(repeats):
                for way in WAYS if r % 2 == 0 else WAYS[::-1]:
                    spent, results[way] = read(segmenters[way], rgb)
                    runs[way].append(spent)
            for way in WAYS:
                seconds[way].append(statistics.median(runs[way]))
                segmenter = segmenters[way]
                assert segmenter.fast is not None
                field = segmenter.prepare(rgb)
                heat = fast_heatmap(field, segmenter.fast, segmenter.fast_settings, segmenter.threshold)
                stages[way]["coarse"].append(heat.coarse_seconds)
                stages[way]["refine"].append(heat.refine_seconds)
                reads[way][0] += heat.coarse_read
                reads[way][1] += heat.refine_read
                reads[way][2] += heat.refined_tiles
            a = results["everything"]
            for way in WAYS[1:]:
                b = results[way]
                same[way]["candidates"] += boxes((*a.bacilli, *a.rejected)) == boxes((*b.bacilli, *b.rejected))
                same[way]["kept"] += boxes(a.bacilli) == boxes(b.bacilli)
                same[way]["mask"] += bool(np.array_equal(a.mask, b.mask))
                both = a.mask & b.mask
                same[way]["sure_pixels"] += bool(np.array_equal(a.heatmap[both] > SURE_P, b.heatmap[both] > SURE_P))
                if both.any():
                    mask_error[way] = max(mask_error[way], float(np.abs(a.heatmap[both] - b.heatmap[both]).max()))
            kept_total += len(a.bacilli)
            mask_px += int(a.mask.sum())
        record["sets"][name] = {
            "images": len(images),
            "kept_bacilli_reading_everything": kept_total,
            "mask_px_reading_everything": mask_px,
            "images_with_the_same_as_reading_everything": same,
            "largest_p_difference_inside_the_mask": {w: round(e, 6) for w, e in mask_error.items()},
            "by_way": {
                way: {
                    "median_seconds": round(statistics.median(seconds[way]), 3),
                    "total_seconds": round(sum(seconds[way]), 2),
                    "median_coarse_seconds": round(statistics.median(stages[way]["coarse"]), 3),
                    "median_refine_seconds": round(statistics.median(stages[way]["refine"]), 3),
                    "grid_points_read": reads[way][0],
                    "refined_pixels_read": reads[way][1],
                    "refined_tiles": reads[way][2],
                }
                for way in WAYS
            },
        }
        print(json.dumps({name: record["sets"][name]}), file=sys.stderr, flush=True)
    emit_json(record, args.out)


if __name__ == "__main__":
    main()
