"""Figure 6: patch-by-patch scanning versus the dense network, same weights, same crop, same runtime (ONNX Runtime).

Prints JSON:

* seconds for each way on one crop: every repeat runs both ways back to back, so each repeat gives a ratio
  measured under the same machine load; medians of the seconds and of the per-repeat ratios;
* per field (2592×1944 and 2816×2112) extrapolated from the crop's seconds per pixel, beside the paper's
  105.68 s vs 2.42 s (GTX 1080 Ti, 2816×2112);
* floating-point operations per output pixel (2 per multiply-add of the convolutions), the achieved GFLOP/s of
  each way, and the machine's matrix-multiply peak measured in the same runtime (and in numpy), so the distance
  to the limit shows;
* the dense network on a whole field through the engine's exact tiling.

    .venv/bin/python bench/dense_vs_patch.py [--model models/<id>/patch_cnn.keras] [--crop 256] [--repeats 5]

Whole-field engine and HTTP timings at both field sizes: bench/service_bench.py; the plot: bench/plot_figure6.py.
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
from training.data.dataset import read_rgb
from training.data.sampling import extract_patches, mirror_pad
from training.model.export import dense_onnx, multiply_adds_per_output, patch_onnx
from training.model.patch_cnn import INPUT_SCALE, build_patch_cnn, to_model_input
from training.paths import SHIPPED_PATCH_MODEL, ZNSM_MS2


def timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


PAPER = {"patch_by_patch_s": 105.68, "dense_s": 2.42, "speedup": 44, "device": "GTX 1080 Ti", "field_hw": [2112, 2816]}
FIELDS_HW = {"2592x1944": (1944, 2592), "2816x2112": (2112, 2816)}


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of an n×n×n float32 matrix multiply: in ONNX Runtime (same threads) and in numpy."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, [n, n]) for k in ("a", "b")],
        [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [n, n])],
    )
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=9)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    session.run(None, {"a": a, "b": b})
    flops = 2 * n**3
    ort_s, _ = timed(lambda: session.run(None, {"a": a, "b": b}), repeats)
    np_s, _ = timed(lambda: a @ b, repeats)
    return {"n": n, "onnxruntime_gflops": round(flops / ort_s / 1e9, 1), "numpy_gflops": round(flops / np_s / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_PATCH_MODEL)
    parser.add_argument("--crop", type=int, default=256, help="side of the square crop scanned both ways")
    parser.add_argument("--field", type=Path, default=ZNSM_MS2 / "images" / "19.jpg")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-field pass")
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

    by_dense()  # warm-up: first-run allocations
    patch_times, dense_times, ratios = [], [], []
    patch_out, dense_out = None, None
    for _ in range(args.repeats):
        p_s, patch_out = timed(by_patch, 1)
        d_s, dense_out = timed(by_dense, 1)
        patch_times.append(p_s)
        dense_times.append(d_s)
        ratios.append(p_s / d_s)
    patch_s, dense_s = statistics.median(patch_times), statistics.median(dense_times)
    difference = float(np.abs(np.asarray(patch_out).reshape(c, c, 2) - np.asarray(dense_out)).max())
    macs = multiply_adds_per_output(model)
    flops = {k: 2 * v for k, v in macs.items()}
    pixels = c * c
    peak = matmul_peak(options.intra_op_num_threads)
    achieved = {
        "patch_by_patch": round(flops["patch_by_patch"] * pixels / patch_s / 1e9, 1),
        "dense_crop": round(flops["dense"] * pixels / dense_s / 1e9, 1),
    }

    def whole_field() -> np.ndarray:
        return predict_tiled(
            field,
            lambda batch: dense_session.run(None, {"image": batch})[0],
            halo_px=22,
            input_scale=INPUT_SCALE,
            tile_px=args.tile,
        )

    whole: dict[str, object] = {"skipped": True}
    if not args.no_whole:
        whole_s, _ = timed(whole_field, 1)
        megapixels = field.shape[0] * field.shape[1] / 1e6
        whole = {
            "field": args.field.name,
            "field_hw": list(field.shape[:2]),
            "tile_px": args.tile,
            "seconds": round(whole_s, 2),
            "megapixels_per_second": round(megapixels / whole_s, 4),
            "gflops": round(flops["dense"] * megapixels * 1e6 / whole_s / 1e9, 1),
        }
        achieved["dense_whole_field"] = whole["gflops"]  # type: ignore[assignment]
    per_field = {
        name: {
            "patch_by_patch_s": round(patch_s / pixels * h * w, 1),
            "dense_s": round(dense_s / pixels * h * w, 2),
        }
        for name, (h, w) in FIELDS_HW.items()
    }
    print(
        json.dumps(
            {
                "runtime": f"onnxruntime {ort.__version__} CPU, {options.intra_op_num_threads} threads",
                "cpus": os.cpu_count(),
                "crop": [c, c],
                "repeats": args.repeats,
                "patch_by_patch_seconds": round(patch_s, 3),
                "dense_seconds": round(dense_s, 3),
                "patch_by_patch_runs_s": [round(t, 3) for t in patch_times],
                "dense_runs_s": [round(t, 3) for t in dense_times],
                "speedup": round(patch_s / dense_s, 2),
                "speedup_median_of_paired_runs": round(statistics.median(ratios), 2),
                "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
                "max_abs_difference": difference,
                "multiply_adds_per_pixel": macs,
                "flops_per_pixel": flops,
                "multiply_add_ratio": round(macs["patch_by_patch"] / macs["dense"], 2),
                "dense_crop_overhead_from_halo": round(((c + 44) / c) ** 2, 3),
                "achieved_gflops": achieved,
                "matmul_peak_gflops": peak,
                "share_of_matmul_peak": {k: round(v / peak["onnxruntime_gflops"], 3) for k, v in achieved.items()},
                "per_field_extrapolated_from_crop": per_field,
                "paper": PAPER,
                "whole_field": whole,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
