"""Whole-field timings of the service: engine, HTTP, and one untiled ONNX pass, at several tile sizes. Prints JSON.

For each field size (2592×1944: ZNSM-iDB; 2816×2112: the paper's camera) and tile size:

* ``engine_s``: the service's engine in this process (decode excluded), with ``onnx_run_s`` the part spent inside
  ONNX Runtime's ``run`` (the bare network work) and ``engine_overhead`` = engine_s / onnx_run_s − 1;
* ``http_s``: a real ``python -m service serve`` on 127.0.0.1 answering ``POST /v1/segment`` (upload, decode,
  inference, PNG encode, download), ``http_overhead`` = http_s / onnx_run_s − 1, and the server's peak RSS;
* ``untiled_s``: the whole padded field in one ``run`` call, when its ~2 KB/pixel fits in memory.

Seconds are medians over ``--repeats`` runs; every run's seconds are listed beside them.

    .venv/bin/python bench/service_bench.py [--tiles 256 512 1024] [--repeats 1] [--field IMAGE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.engine.model import OnnxModel  # noqa: E402
from service.engine.mosaic import predict_tiled  # noqa: E402
from tests.service.e2e.conftest import start_server, stop_server  # noqa: E402
from training.paths import SHIPPED_MODEL, ZNSM_MS2  # noqa: E402

MODEL = SHIPPED_MODEL
BYTES_PER_PIXEL_UNTILED = 2_300  # measured order of ONNX Runtime's peak for this network, per input pixel


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def untiled_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    return options


def fields(source: Path) -> dict[str, np.ndarray]:
    base = np.asarray(Image.open(source).convert("RGB"))
    paper = np.asarray(Image.fromarray(base).resize((2816, 2112), Image.Resampling.BILINEAR))
    return {"2592x1944": base, "2816x2112": paper}


def engine_run(model: OnnxModel, image: np.ndarray, tile: int) -> tuple[float, float]:
    inside = []

    def timed_run(batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = model.run(batch)
        inside.append(time.perf_counter() - started)
        return out

    started = time.perf_counter()
    meta = model.meta
    predict_tiled(
        image,
        timed_run,
        halo_px=meta.halo_px,
        input_scale=meta.input_scale,
        padding=meta.input_padding,
        tile_px=tile,
        channel=meta.positive_index,
    )
    return time.perf_counter() - started, sum(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--field", type=Path, default=ZNSM_MS2 / "images" / "19.jpg")
    parser.add_argument("--no-untiled", action="store_true", help="skip the single untiled pass")
    parser.add_argument("--untiled-only", action="store_true", help="only the single untiled pass")
    args = parser.parse_args()

    model = OnnxModel(MODEL, providers=("CPUExecutionProvider",))
    results: dict[str, object] = {
        "model_id": model.meta.model_id,
        "cpus": os.cpu_count(),
        "providers": list(model.providers),
        "runs": [],
    }
    images = fields(args.field)
    for name, image in [] if args.untiled_only else images.items():
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        megapixels = image.shape[0] * image.shape[1] / 1e6
        for tile in args.tiles:
            engine = [engine_run(model, image, tile) for _ in range(args.repeats)]
            engine_s = statistics.median(e[0] for e in engine)
            onnx_s = statistics.median(e[1] for e in engine)
            log = Path(f"/tmp/tbseg-bench-{tile}.log")
            server = start_server(MODEL, log, tile_px=str(tile), max_upload_bytes=str(200 * 2**20))
            try:
                http = []
                with httpx.Client(timeout=900) as client:
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        response = client.post(
                            f"{server.url}/v1/segment", content=png.getvalue(), headers={"content-type": "image/png"}
                        )
                        http.append(time.perf_counter() - started)
                        response.raise_for_status()
                server_rss = peak_rss_mb(server.process.pid)
            finally:
                stop_server(server)
            http_s = statistics.median(http)
            run = {
                "field": name,
                "tile_px": tile,
                "megapixels": round(megapixels, 3),
                "repeats": args.repeats,
                "engine_s": round(engine_s, 2),
                "engine_runs_s": [round(e[0], 2) for e in engine],
                "onnx_run_s": round(onnx_s, 2),
                "engine_overhead": round(engine_s / onnx_s - 1, 4),
                "http_s": round(http_s, 2),
                "http_runs_s": [round(t, 2) for t in http],
                "http_overhead": round(http_s / onnx_s - 1, 4),
                "megapixels_per_second_http": round(megapixels / http_s, 4),
                "server_peak_rss_mb": round(server_rss, 1),
            }
            results["runs"].append(run)  # type: ignore[union-attr]
            print(json.dumps(run), file=sys.stderr)
    # Untiled passes last, each in a session without ONNX Runtime's memory arena: the arena keeps a pass's ~12 GB
    # for the life of the session, which starved the servers started after it (an earlier version was OOM-killed).
    for name, image in images.items():
        needed = (image.shape[0] + 44) * (image.shape[1] + 44) * BYTES_PER_PIXEL_UNTILED
        if args.no_untiled or needed > 0.8 * available_memory():
            results[f"untiled_{name}"] = {
                "skipped": f"needs ~{needed / 2**30:.1f} GiB, {available_memory() / 2**30:.1f} GiB available"
            }
            continue
        session = ort.InferenceSession(str(MODEL), untiled_options(), providers=["CPUExecutionProvider"])
        padded = np.pad(image, ((22, 22), (22, 22), (0, 0)), mode="reflect").astype(np.float32) / 255
        started = time.perf_counter()
        session.run(None, {session.get_inputs()[0].name: padded[None]})
        seconds = time.perf_counter() - started
        del session
        results[f"untiled_{name}"] = {
            "seconds": round(seconds, 2),
            "megapixels_per_second": round(image.shape[0] * image.shape[1] / 1e6 / seconds, 4),
            "bench_process_peak_rss_mb": round(peak_rss_mb(), 1),
        }
        print(json.dumps({name: results[f"untiled_{name}"]}), file=sys.stderr)
    results["bench_process_peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
