"""The engine on a GPU: one field through ONNX Runtime's CUDA provider and its CPU provider. Prints JSON.

Checks what the service does when CUDA is present (``TBSEG_PROVIDERS`` default: CUDA first, then CPU): the
shipped model loads on the CUDA provider (the CUDA and cuDNN libraries found through ``service.engine.model``'s
pip-package preload where they come from pip), its heatmap agrees with the CPU provider's on a whole field, the
object filter keeps the same bacilli, and how long a whole field takes at several tile sizes (medians of
``--repeats`` after one warm-up per tile size; every run listed). Uses ``service.engine`` only (no HTTP).

    python bench/cuda_check.py --field FIELD.jpg [--tiles 256 512 1024 2048] [--repeats 3] [--out result.json]
    python bench/cuda_check.py --field small.png --tiles 128 --repeats 1 --rehearse   # a dry run on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

from service.engine.image_io import decode_image  # noqa: E402
from service.engine.model import OnnxModel  # noqa: E402
from service.engine.object_filter import ObjectFilter  # noqa: E402
from service.engine.segmenter import Segmentation, Segmenter  # noqa: E402
from training.paths import SHIPPED_FILTER, SHIPPED_MODEL  # noqa: E402

MODEL = SHIPPED_MODEL
FILTER = SHIPPED_FILTER


def gpu_name() -> str:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout.strip() or done.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"


def summary(result: Segmentation) -> dict[str, object]:
    return {
        "count": len(result.bacilli),
        "estimated_bacilli": result.estimated_bacilli,
        "rejected": len(result.rejected),
        "mask_pixels": int(result.mask.sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--field", type=Path, required=True, help="a field image (PNG, JPEG or TIFF)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-tile", type=int, default=256, help="tile size of the CPU reference run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--rehearse", action="store_true", help="go on without CUDA (a dry run of the script on a CPU)")
    args = parser.parse_args()

    image = decode_image(args.field.read_bytes(), max_pixels=100_000_000)
    object_filter = ObjectFilter(FILTER)
    report: dict[str, object] = {
        "field": args.field.name,
        "field_hw": list(image.rgb.shape[:2]),
        "gpu": gpu_name(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    started = time.perf_counter()
    cuda = OnnxModel(MODEL, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    report["cuda_session_s"] = round(time.perf_counter() - started, 2)
    report["providers_in_use"] = list(cuda.providers)
    if cuda.providers[0] != "CUDAExecutionProvider" and not args.rehearse:
        print(json.dumps(report, indent=1))
        sys.stderr.write("the CUDA provider did not load\n")
        return 1

    cpu = Segmenter(
        OnnxModel(MODEL, providers=("CPUExecutionProvider",)), tile_px=args.cpu_tile, object_filter=object_filter
    )
    started = time.perf_counter()
    reference = cpu.segment(image.rgb)
    report["cpu"] = {"tile_px": args.cpu_tile, "seconds": round(time.perf_counter() - started, 2), **summary(reference)}

    runs: list[dict[str, object]] = []
    for tile in args.tiles:
        segmenter = Segmenter(cuda, tile_px=tile, object_filter=object_filter)
        try:
            warm = segmenter.warm_up()
        except Exception as exc:  # e.g. cuDNN refusing a tensor of 2**31 elements or more
            runs.append({"tile_px": tile, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
            continue
        seconds, infer = [], []
        result = None
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = segmenter.segment(image.rgb)
            seconds.append(time.perf_counter() - started)
            infer.append(result.infer_seconds)
        assert result is not None
        difference = np.abs(result.heatmap - reference.heatmap)
        same_bacilli = [b.bbox for b in result.bacilli] == [b.bbox for b in reference.bacilli]
        runs.append(
            {
                "tile_px": tile,
                "warm_up_s": round(warm, 3),
                "seconds_median": round(statistics.median(seconds), 3),
                "inference_s_median": round(statistics.median(infer), 3),
                "seconds": [round(s, 3) for s in seconds],
                "tiles": result.tiles,
                "max_abs_difference_vs_cpu": float(difference.max()),
                "mask_pixels_differing_vs_cpu": int((result.mask != reference.mask).sum()),
                "same_kept_bacilli_as_cpu": same_bacilli,
                **summary(result),
            }
        )
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report["cuda"] = runs
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
