"""Fields per second on this machine: the plain batch command against ``batch-ray`` with 1 and 2 workers.

Each run is a fresh process on the same fields, written to a fresh output folder, timed from start to exit (start-up
included: loading the model; for Ray, starting a local Ray and its actors). For Ray the summary's own figures are
kept too: its run time (after ``ray.init``) and each worker's busy seconds. Prints JSON (and writes it with
``--out``); run it alone on the machine.

    .venv/bin/python bench/ray_batch.py --fields 8 --out bench/results/ray_batch_cpu_2cores.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "znsm-ms2"


def fields_of(data: Path, count: int) -> list[Path]:
    images = sorted(p for p in data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff"})
    if len(images) < count:
        raise SystemExit(f"{data}: {len(images)} images, {count} asked for")
    return images[:count]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of fields (default: ZNSM-iDB)")
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--mode", default="fast", choices=("fast", "exact"))
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (default 1,2)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    fields = fields_of(args.data, args.fields)
    env = {**os.environ, "TBSEG_PROVIDERS": "CPUExecutionProvider", "TBSEG_LOG_LEVEL": "warning"}
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        listing = Path(scratch) / "fields.txt"
        listing.write_text("".join(f"{f}\n" for f in fields))
        seconds, _ = timed(
            [
                sys.executable,
                "-m",
                "service",
                "segment",
                *map(str, fields),
                "-o",
                f"{scratch}/plain",
                "--mode",
                args.mode,
            ],
            env,
        )
        runs.append(
            {
                "runner": "segment (plain batch command)",
                "workers": 1,
                "seconds": round(seconds, 2),
                "fields_per_second": round(len(fields) / seconds, 4),
            }
        )
        print(json.dumps(runs[-1]), file=sys.stderr)
        for workers in (int(w) for w in args.workers.split(",")):
            out = f"{scratch}/ray-{workers}"
            seconds, stdout = timed(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "batch-ray",
                    str(listing),
                    "-o",
                    out,
                    "--mode",
                    args.mode,
                    "--workers",
                    str(workers),
                    "--batch-fields",
                    "1",
                ],
                env,
            )
            summary = json.loads(stdout)
            runs.append(
                {
                    "runner": "batch-ray (local Ray)",
                    "workers": workers,
                    "cpus_per_worker": max(1, (os.cpu_count() or 1) // workers),
                    "seconds": round(seconds, 2),
                    "fields_per_second": round(len(fields) / seconds, 4),
                    "ray_run_seconds": summary["seconds"],
                    "ray_fields_per_second": summary["fields_per_second"],
                    "per_worker": summary["per_worker"],
                    "done": summary["done"],
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr)
    result = {
        "benchmark": "ray_batch",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "fields": [f.name for f in fields],
        "mode": args.mode,
        "runs": runs,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
