"""Fast mode's refinement tile: its side against seconds and what is found, on every lab's test data. Prints JSON.

Fast mode refines a tile (through the dense network, exactly as exact mode) when a coarse grid point within 6 px
of it exceeds the screening threshold. The dense network's cost is nearly all its last convolutions, which run once
per *output* pixel: a smaller tile refines fewer pixels around the same hot grid points, while the halo (22 px each
side) it reads grows only the cheap first layers. Wherever two tile sides both refine, both give exact mode's
heatmap; they can differ only where one refines and the other does not. So each side is compared with the reference
side (``--reference``, the one measured equal to exact mode in ``docs/results.md`` section 10): every candidate and
every kept bacillus the same (their boxes), on the ZNSM test split, UFAM's test negative fields and its positive
centre patches (the lab's points).

Per side: seconds per field (median of ``--repeats`` runs), the refined pixels, the candidates and kept bacilli the
same as the reference's. Run it alone on the machine.

    .venv/bin/python bench/refinement_tiles.py --sides 64:4 32:8 32:16 24:16 16:32 \\
        --out bench/results/refinement_tiles_cpu_2cores.json
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
from service.engine.fast import FastSettings  # noqa: E402
from service.engine.loading import load_segmenter  # noqa: E402
from service.engine.model_folder import open_folder  # noqa: E402
from service.engine.segmenter import Mode, Segmenter  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data.dataset import read_rgb  # noqa: E402
from training.data.split import DatasetSplit  # noqa: E402
from training.data.ufam import read_positives, read_ufam  # noqa: E402
from training.paths import SHIPPED_DIR, UFAM_DDS1, UFAM_DDS1_SPLIT, ZNSM_MS2, ZNSM_MS2_SPLIT  # noqa: E402


def read(segmenter: Segmenter, rgb: npt.NDArray[np.uint8]) -> tuple[float, int, list[Any], list[Any]]:
    started = time.perf_counter()
    result = segmenter.segment(rgb, mode=Mode.FAST, object_threshold=None)
    seconds = time.perf_counter() - started
    candidates = sorted(tuple(o.bbox) for o in (*result.bacilli, *result.rejected))
    kept = sorted(tuple(o.bbox) for o in result.bacilli)
    return seconds, int(result.refined_tiles or 0), candidates, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", nargs="+", default=["64:4", "32:8", "32:16", "24:16", "16:32"], help="SIDE:BATCH")
    parser.add_argument("--reference", default="64:4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    settings = Settings(providers="CPUExecutionProvider")
    base = settings.segmenter_config(open_folder(SHIPPED_DIR))
    sides = [args.reference, *[s for s in args.sides if s != args.reference]]
    segmenters = {}
    for text in sides:
        side, batch = (int(v) for v in text.split(":"))
        fast = FastSettings(screen_threshold=base.fast_settings.screen_threshold, tile_px=side, batch_tiles=batch)
        segmenters[text] = load_segmenter(replace(base, fast_settings=fast))
    part = read_ufam(UFAM_DDS1).of_slides(list(DatasetSplit.load(UFAM_DDS1_SPLIT).test))
    patches, _ = read_positives(part, None)
    znsm_test = DatasetSplit.load(ZNSM_MS2_SPLIT).test
    sets = {
        "znsm test fields": [read_rgb(ZNSM_MS2 / "images" / f"{i}.jpg") for i in znsm_test],
        "ufam test negative fields": [read_rgb(n.path) for n in part.negatives],
        "ufam test positive centre patches": [patches[p.patch_id] for p in part.positives],
    }
    record: dict[str, Any] = {
        "bench": "refinement_tiles",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": SHIPPED_DIR.name,
        "reference": args.reference,
        "repeats": args.repeats,
        "sets": {},
    }
    for name, images in sets.items():
        repeats = args.repeats if name != "ufam test positive centre patches" else 1
        rows: dict[str, dict[str, Any]] = {
            s: {"seconds": [], "refined_px": 0, "same": 0, "kept_same": 0} for s in sides
        }
        reference: list[tuple[list[Any], list[Any]]] = []
        kept_total = 0
        for n, rgb in enumerate(tqdm(images, desc=name, unit="image")):
            for text in sides:
                side = int(text.split(":")[0])
                runs = [read(segmenters[text], rgb) for _ in range(repeats)]
                _, tiles, candidates, kept = runs[0]
                row = rows[text]
                row["seconds"].append(statistics.median(r[0] for r in runs))
                row["refined_px"] += tiles * side * side
                if text == args.reference:
                    reference.append((candidates, kept))
                    kept_total += len(kept)
                row["same"] += candidates == reference[n][0]
                row["kept_same"] += kept == reference[n][1]
        record["sets"][name] = {
            "images": len(images),
            "reference_kept_bacilli": kept_total,
            "by_side": {
                s: {
                    "median_seconds": round(statistics.median(r["seconds"]), 3),
                    "total_seconds": round(sum(r["seconds"]), 2),
                    "refined_px": r["refined_px"],
                    "images_with_the_same_candidates": r["same"],
                    "images_with_the_same_kept_bacilli": r["kept_same"],
                }
                for s, r in rows.items()
            },
        }
        print(json.dumps({name: record["sets"][name]}), file=sys.stderr, flush=True)
    emit_json(record, args.out)


if __name__ == "__main__":
    main()
