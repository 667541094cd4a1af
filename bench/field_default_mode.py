"""Issue 28's field target on its own: a 2592×1944 field in the service's default mode, alone on the machine. Prints
JSON.

The whole field through ``Segmenter.segment`` as the service runs it by default (fast mode, its cascade, the grid
and refined pixels read as the model folder's ``cascade.json`` says, the quality and domain checks, the object
filter), every ZNSM-iDB MS-2 test field ``--repeats`` times one after another (one warm-up read first), the median of
each field's runs, and the median over the fields: the figure the target (≤ 1.2 s on 2 cores) is about. The stages of
one more read per field (coarse pass, refinement) are reported beside it. ``bench/fast_cascade.py`` compares the
ways of reading with each other and with reading everything; this measures only the default, with nothing else
loaded.

    .venv/bin/python bench/field_default_mode.py --out bench/results/field_default_mode_cpu_2cores.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.json_output import emit_json  # noqa: E402
from service.engine.fast import fast_heatmap  # noqa: E402
from service.engine.loading import load_segmenter  # noqa: E402
from service.engine.model_folder import open_folder  # noqa: E402
from service.engine.segmenter import Mode  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data.dataset import discover_fields, read_rgb  # noqa: E402
from training.data.split import DatasetSplit  # noqa: E402
from training.paths import SHIPPED_DIR, ZNSM_MS2, ZNSM_MS2_SPLIT  # noqa: E402

TARGET_S = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per field (default: 5)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    settings = Settings(providers="CPUExecutionProvider")
    segmenter = load_segmenter(settings.segmenter_config(open_folder(SHIPPED_DIR)))
    fast = segmenter.fast
    if fast is None:
        raise SystemExit(f"{SHIPPED_DIR}: no fast networks")
    by_id = {f.field_id: f for f in discover_fields(ZNSM_MS2)}
    ids = DatasetSplit.load(ZNSM_MS2_SPLIT).subset("test")
    fields = {i: read_rgb(by_id[i].image) for i in ids}
    segmenter.segment(next(iter(fields.values())), mode=Mode.FAST)  # warm-up
    per_field: dict[str, dict[str, object]] = {}
    for field_id, rgb in tqdm(fields.items(), desc="ZNSM MS-2 test fields", unit="field"):
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = segmenter.segment(rgb, mode=Mode.FAST)
            runs.append(time.perf_counter() - started)
        heat = fast_heatmap(segmenter.prepare(rgb), fast, segmenter.fast_settings, segmenter.threshold)
        per_field[field_id] = {
            "median_seconds": round(statistics.median(runs), 3),
            "runs": [round(r, 3) for r in runs],
            "coarse_seconds": round(heat.coarse_seconds, 3),
            "refine_seconds": round(heat.refine_seconds, 3),
            "kept_bacilli": len(result.bacilli),
        }
    cascade = fast.cascade
    median = statistics.median(float(v["median_seconds"]) for v in per_field.values())  # type: ignore[arg-type]
    record = {
        "bench": "field_default_mode",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "model": SHIPPED_DIR.name,
        "mode": "fast",
        "cascade": cascade is not None,
        "screening": None if cascade is None or cascade.screening is None else "int8",
        "fp32_band_logit": None if cascade is None or cascade.screening is None else cascade.screening.band_logit,
        "repeats": args.repeats,
        "fields": len(per_field),
        "median_seconds_per_field": round(median, 3),
        "median_coarse_seconds": statistics.median(float(v["coarse_seconds"]) for v in per_field.values()),  # type: ignore[arg-type]
        "median_refine_seconds": statistics.median(float(v["refine_seconds"]) for v in per_field.values()),  # type: ignore[arg-type]
        "target_seconds": TARGET_S,
        "meets_target": median <= TARGET_S,
        "per_field": per_field,
    }
    emit_json(record, args.out)


if __name__ == "__main__":
    main()
