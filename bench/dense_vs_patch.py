"""Patch-by-patch scanning versus the dense network, same weights, same crop, same runtime (ONNX Runtime, CPU).

Prints JSON: seconds for each way on one crop (median of repeats), the ratio, the ratio of multiply-adds, and
the dense network's throughput on a whole field through the engine's exact tiling.

    .venv/bin/python bench/dense_vs_patch.py [--model models/patch_cnn.keras] [--crop 256] [--field IMAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort

from service.engine.mosaic import predict_tiled
from training.dataset import read_rgb
from training.export import dense_onnx, multiply_adds_per_output, patch_onnx
from training.patch_cnn import INPUT_SCALE, build_patch_cnn, to_model_input
from training.paths import REPO_ROOT, ZNSM_MS2
from training.sampling import extract_patches, mirror_pad


def timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "patch_cnn.keras")
    parser.add_argument("--crop", type=int, default=256, help="side of the square crop scanned both ways")
    parser.add_argument("--field", type=Path, default=ZNSM_MS2 / "images" / "19.jpg")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()

    model = keras.models.load_model(args.model) if args.model.is_file() else build_patch_cnn()
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(patch_onnx(model), f"{tmp}/patch.onnx")
        onnx.save(dense_onnx(model), f"{tmp}/dense.onnx")
        patch_session = ort.InferenceSession(f"{tmp}/patch.onnx", options, providers=["CPUExecutionProvider"])
        dense_session = ort.InferenceSession(f"{tmp}/dense.onnx", options, providers=["CPUExecutionProvider"])

    field = read_rgb(args.field)
    c = args.crop
    y0, x0 = (field.shape[0] - c) // 2, (field.shape[1] - c) // 2
    ys, xs = np.mgrid[y0 : y0 + c, x0 : x0 + c]
    patches = to_model_input(extract_patches(field, np.stack([ys.ravel(), xs.ravel()], 1)))
    window = to_model_input(mirror_pad(field, 22)[y0 : y0 + c + 44, x0 : x0 + c + 44])[None]

    def by_patch() -> np.ndarray:
        return np.concatenate(
            [patch_session.run(None, {"patch": patches[i : i + 1024]})[0] for i in range(0, len(patches), 1024)]
        )

    def by_dense() -> np.ndarray:
        return dense_session.run(None, {"image": window})[0][0]

    patch_s, patch_out = timed(by_patch, args.repeats)
    dense_s, dense_out = timed(by_dense, args.repeats)
    difference = float(np.abs(np.asarray(patch_out).reshape(c, c, 2) - np.asarray(dense_out)).max())

    def whole_field() -> np.ndarray:
        return predict_tiled(
            field,
            lambda batch: dense_session.run(None, {"image": batch})[0],
            halo_px=22,
            input_scale=INPUT_SCALE,
            tile_px=args.tile,
        )

    whole_s, _ = timed(whole_field, 1)
    megapixels = field.shape[0] * field.shape[1] / 1e6
    whole = {
        "field": args.field.name,
        "field_hw": list(field.shape[:2]),
        "tile_px": args.tile,
        "seconds": round(whole_s, 2),
        "megapixels_per_second": round(megapixels / whole_s, 4),
    }
    macs = multiply_adds_per_output(model)
    print(
        json.dumps(
            {
                "runtime": f"onnxruntime {ort.__version__} CPU, {options.intra_op_num_threads} threads",
                "cpus": os.cpu_count(),
                "crop": [c, c],
                "patch_by_patch_seconds": round(patch_s, 3),
                "dense_seconds": round(dense_s, 3),
                "speedup": round(patch_s / dense_s, 2),
                "max_abs_difference": difference,
                "multiply_adds_per_pixel": macs,
                "multiply_add_ratio": round(macs["patch_by_patch"] / macs["dense"], 2),
                "dense_crop_overhead_from_halo": round(((c + 44) / c) ** 2, 3),
                "whole_field": whole,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
