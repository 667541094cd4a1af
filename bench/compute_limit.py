"""Where the limit is: multiply-adds per field against this machine's measured GEMM throughput. Prints JSON.

Issue 28, item 5. For the shipped model's fast mode (the service's default) on the ZNSM-iDB MS-2 test fields:

* **multiply-adds** of each convolution, counted from the ONNX graphs with ONNX shape inference at the shapes the
  engine feeds them: the coarse network per block of grid points (``FastSettings.block_points``) times the blocks
  of a field, and the dense network per refinement tile times the tiles a field refines (measured per field);
* **measured seconds** of the coarse pass and the refinement per field (the engine's own timings), and each
  coarse layer's share of its time (ONNX Runtime's profiler, one block);
* **the limit**: a float32 GEMM (NumPy's BLAS on every core) at the shapes of the largest convolutions lowered to
  matrix products, timed in the same run; each stage's multiply-adds per second as a share of it.

A stage far below the GEMM rate is bound by something else (memory traffic, small matrices, overhead); one close to
it can only get faster with fewer multiply-adds (int8, a smaller network, less refinement). Both ways fast mode reads:
every grid point and refined pixel (``TBSEG_FAST_CASCADE=false``), and with the folder's cascade (the default:
:mod:`service.engine.cascade`), whose multiply-adds are its trunks' (counted like the networks') and the head's per
output it reads (counted from the head's weights). Writes a figure of the time per stage with ``--figure``.

    .venv/bin/python bench/compute_limit.py --out bench/results/compute_limit_cpu_2cores.json \\
        --figure docs/figures/compute_limit.png
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
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.json_output import emit_json  # noqa: E402
from service.engine.cascade import TRUNK_BLOCK, Cascade  # noqa: E402
from service.engine.fast import fast_heatmap, grid_shape  # noqa: E402
from service.engine.image_io import decode_image  # noqa: E402
from service.engine.loading import load_segmenter  # noqa: E402
from service.engine.model_folder import open_folder  # noqa: E402
from service.engine.segmenter import Mode  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data.split import DatasetSplit  # noqa: E402
from training.paths import SHIPPED_DIR, ZNSM_MS2, ZNSM_MS2_SPLIT  # noqa: E402


def conv_macs(path: Path, height: int, width: int) -> list[dict[str, Any]]:
    """Multiply-adds of every Conv of an NHWC-input ONNX network fed one ``height × width`` image."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, height, width, 3), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.output)
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out_channels, in_channels, k_h, k_w = weights[node.input[1]]
        output = shapes[node.output[0]]
        per_output = in_channels * k_h * k_w
        layers.append(
            {
                "node": node.name,
                "kernel": [out_channels, in_channels, k_h, k_w],
                "output": output,
                "macs": int(np.prod(output)) * per_output,
            }
        )
    return layers


_BLOCK_MACS: dict[tuple[Path, int, int], int] = {}


def coarse_field_macs(path: Path, height: int, width: int, stride: int, halo: int, block: int) -> tuple[int, int]:
    """Blocks and multiply-adds of the coarse pass over a field, as :func:`service.engine.fast.predict_grid` cuts it
    (full blocks of ``block`` grid points, smaller ones at the far edges)."""
    rows, cols = (height - 1) // stride + 2, (width - 1) // stride + 2
    total, blocks = 0, 0
    for n_i in [min(block, rows - i) for i in range(0, rows, block)]:
        for n_j in [min(block, cols - j) for j in range(0, cols, block)]:
            side = (stride * (n_i - 1) + 2 * halo + 1, stride * (n_j - 1) + 2 * halo + 1)
            key = (path, *side)
            if key not in _BLOCK_MACS:
                _BLOCK_MACS[key] = sum(layer["macs"] for layer in conv_macs(path, *side))
            total += _BLOCK_MACS[key]
            blocks += 1
    return blocks, total


def head_macs_per_read(path: Path) -> int:
    """Multiply-adds of the cascade's head for one window: its two matrix products' weights."""
    weights = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    total = 0
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Gemm":
            total += int(np.prod(weights[node.input[1]].dims))
    return total


def coarse_trunk_macs(cascade: Cascade, height: int, width: int) -> int:
    """Multiply-adds of the cascade's coarse trunk over a field, in the blocks it reads them in."""
    rows, cols = grid_shape((height, width), cascade.geometry)
    total = 0
    size = (rows + cascade.window - 1, cols + cascade.window - 1)
    for block in cascade.geometry.blocks(*size, TRUNK_BLOCK, cascade.trunk_rf):
        n, m = block.shape
        side = (
            cascade.geometry.stride * (n - 1) + cascade.trunk_rf,
            cascade.geometry.stride * (m - 1) + cascade.trunk_rf,
        )
        key = (cascade.files.coarse_trunk, *side)
        if key not in _BLOCK_MACS:
            _BLOCK_MACS[key] = sum(layer["macs"] for layer in conv_macs(cascade.files.coarse_trunk, *side))
        total += _BLOCK_MACS[key]
    return total


def gemm_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Multiply-adds per second of ``[m, k] @ [k, n]`` float32 on every core (NumPy's BLAS), the best of runs."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return m * k * n / best


def ort_gemm_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    """The same product as one MatMul node in ONNX Runtime (CPU provider, every core), the best of runs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k), dtype=np.float32)
    session.run(None, {"a": a})
    best = min(_timed(lambda: session.run(None, {"a": a})) for _ in range(repeats))
    return m * k * n / best


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def coarse_layer_shares(path: Path, side: int, repeats: int = 5) -> dict[str, float]:
    """Each op's share of the coarse network's time on one block (ONNX Runtime's profiler)."""
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "coarse")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        batch = np.random.default_rng(0).random((1, side, side, 3), dtype=np.float32)
        name = session.get_inputs()[0].name
        for _ in range(repeats):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_node: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            by_node[f"{op} {event['name'].removesuffix('_kernel_time')}"] += event["dur"]
    total = sum(by_node.values())
    return {k: round(v / total, 3) for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=10, help="ZNSM-iDB MS-2 test fields (default: all 10)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()

    settings = Settings(providers="CPUExecutionProvider", fast_cascade=False)
    folder = open_folder(SHIPPED_DIR)
    config = settings.segmenter_config(folder)  # the service's settings (TBSEG_FAST_TILE_PX and the others)
    segmenter = load_segmenter(config)
    cascading = load_segmenter(Settings(providers="CPUExecutionProvider").segmenter_config(folder))
    cascade = cascading.fast.cascade if cascading.fast is not None else None
    if cascade is None:
        raise SystemExit(f"{folder.path}: no cascade (python -m training cascade)")
    head_macs = head_macs_per_read(cascade.files.head)
    fast = config.fast_settings
    coarse_path, dense_path = folder.path / "bacilli_coarse.onnx", folder.dense
    coarse_meta = {p.key: p.value for p in onnx.load(str(coarse_path)).metadata_props}
    stride, halo = int(coarse_meta["output_stride"]), int(coarse_meta["halo"])
    block_side = stride * (fast.block_points - 1) + 2 * halo + 1
    tile_side = fast.tile_px + 2 * halo
    coarse_layers = conv_macs(coarse_path, block_side, block_side)
    dense_layers = conv_macs(dense_path, tile_side, tile_side)
    coarse_block_macs = sum(layer["macs"] for layer in coarse_layers)
    dense_tile_macs = sum(layer["macs"] for layer in dense_layers)
    dense_trunk_tile_macs = sum(layer["macs"] for layer in conv_macs(cascade.files.dense_trunk, tile_side, tile_side))

    ids = list(DatasetSplit.load(ZNSM_MS2_SPLIT).test)[: args.fields]
    per_field = []
    for field_id in ids:
        rgb = decode_image((ZNSM_MS2 / "images" / f"{field_id}.jpg").read_bytes(), settings.max_pixels).rgb
        started = time.perf_counter()
        result = segmenter.segment(rgb, mode=Mode.FAST, find_objects=False)
        total = time.perf_counter() - started
        assert result.coarse_seconds is not None and result.refined_tiles is not None
        height, width = rgb.shape[:2]
        blocks, coarse_macs = coarse_field_macs(coarse_path, height, width, stride, halo, fast.block_points)
        per_field.append(
            {
                "field": field_id,
                "segment_s": round(total, 3),
                "coarse_s": round(result.coarse_seconds, 3),
                "refine_s": round(result.infer_seconds - result.coarse_seconds, 3),
                "coarse_blocks": blocks,
                "refined_tiles": result.refined_tiles,
                "tiles": result.tiles,
                "coarse_gmac": round(coarse_macs / 1e9, 2),
                "refine_gmac": round(result.refined_tiles * dense_tile_macs / 1e9, 2),
            }
        )
        assert cascading.fast is not None
        heat = fast_heatmap(cascading.prepare(rgb), cascading.fast, cascading.fast_settings, cascading.threshold)
        trunk_macs = coarse_trunk_macs(cascade, height, width)
        per_field[-1]["cascade"] = {
            "coarse_s": round(heat.coarse_seconds, 3),
            "refine_s": round(heat.refine_seconds, 3),
            "grid_points_read": heat.coarse_read,
            "refined_pixels_read": heat.refine_read,
            "refined_tiles": heat.refined_tiles,
            "coarse_trunk_gmac": round(trunk_macs / 1e9, 2),
            "coarse_head_gmac": round(heat.coarse_read * head_macs / 1e9, 2),
            "refine_trunk_gmac": round(heat.refined_tiles * dense_trunk_tile_macs / 1e9, 2),
            "refine_head_gmac": round(heat.refine_read * head_macs / 1e9, 2),
        }
        c = per_field[-1]["cascade"]
        c["coarse_gmac"] = round(c["coarse_trunk_gmac"] + c["coarse_head_gmac"], 2)
        c["refine_gmac"] = round(c["refine_trunk_gmac"] + c["refine_head_gmac"], 2)
        print(json.dumps(per_field[-1]), file=sys.stderr, flush=True)

    # the largest convolutions as matrix products: [output pixels, in·k·k] @ [in·k·k, out]
    shapes = {
        "coarse conv3 (m 4096, k 2304, n 512)": (4096, 2304, 512),
        "coarse conv2 (m 12321, k 512, n 64)": (12321, 512, 64),
        "square (2048³)": (2048, 2048, 2048),
    }
    gemms = {f"NumPy BLAS, {name}": gemm_rate(*shape) for name, shape in shapes.items()}
    gemms |= {f"ONNX Runtime MatMul, {name}": ort_gemm_rate(*shape) for name, shape in shapes.items()}
    peak = max(gemms.values())

    def stage(seconds_key: str, gmac_key: str, way: str | None = None) -> dict[str, float]:
        rows = [f[way] if way else f for f in per_field]
        seconds = statistics.median(r[seconds_key] for r in rows)
        gmac = statistics.median(r[gmac_key] for r in rows)
        rate = gmac * 1e9 / seconds
        return {
            "median_seconds": round(seconds, 3),
            "median_gmac": round(gmac, 2),
            "gmac_per_second": round(rate / 1e9, 2),
            "share_of_gemm_peak": round(rate / peak, 3),
        }

    record = {
        "bench": "compute_limit",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "model": folder.model_id,
        "precision": "fp32",
        "fast_settings": {"block_points": fast.block_points, "tile_px": fast.tile_px, "batch_tiles": fast.batch_tiles},
        "coarse": {
            "block_input_px": block_side,
            "gmac_per_block": round(coarse_block_macs / 1e9, 3),
            "layers": [{**layer, "gmac": round(layer["macs"] / 1e9, 3)} for layer in coarse_layers],
            "time_shares_one_block": coarse_layer_shares(coarse_path, block_side),
            **stage("coarse_s", "coarse_gmac"),
        },
        "refinement": {
            "tile_input_px": tile_side,
            "gmac_per_tile": round(dense_tile_macs / 1e9, 3),
            "gmac_per_output_pixel_k": round(dense_tile_macs / fast.tile_px**2 / 1e3, 1),
            **stage("refine_s", "refine_gmac"),
        },
        "cascade": {
            "rule": json.loads(cascade.files.path.read_text(encoding="utf-8"))["rule"],
            "head_macs_per_read": head_macs,
            "dense_trunk_gmac_per_tile": round(dense_trunk_tile_macs / 1e9, 3),
            "coarse": stage("coarse_s", "coarse_gmac", "cascade"),
            "refinement": stage("refine_s", "refine_gmac", "cascade"),
        },
        "gemm_gmac_per_second": {k: round(v / 1e9, 2) for k, v in gemms.items()},
        "per_field": per_field,
    }
    emit_json(record, args.out)
    if args.figure:
        plot(record, args.figure)


def plot(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    fields = record["per_field"]
    names = [f["field"] for f in fields]
    x = np.arange(len(names))
    for offset, way, hatch in ((-0.2, None, ""), (0.2, "cascade", "//")):
        rows = [f[way] if way else f for f in fields]
        coarse = [r["coarse_s"] for r in rows]
        refine = [r["refine_s"] for r in rows]
        said = "with the cascade" if way else "reading everything"
        left.bar(x + offset, coarse, 0.38, color="tab:blue", hatch=hatch, label=f"coarse pass, {said}")
        left.bar(x + offset, refine, 0.38, bottom=coarse, color="tab:orange", hatch=hatch, label=f"refinement, {said}")
    left.set_xticks(x, names)
    left.set_xlabel("ZNSM-iDB MS-2 test field")
    left.set_ylabel("seconds (fast mode, fp32)")
    left.legend(fontsize=7)
    left.set_title(f"time per stage, {record['machine']['cpus']} cores")
    bars = [
        ("coarse", record["coarse"]),
        ("refinement", record["refinement"]),
        ("coarse\n(cascade)", record["cascade"]["coarse"]),
        ("refinement\n(cascade)", record["cascade"]["refinement"]),
    ]
    peak = max(record["gemm_gmac_per_second"].values())
    achieved = [b["gmac_per_second"] for _, b in bars]
    right.bar([n for n, _ in bars], achieved, color=["tab:blue", "tab:orange", "tab:blue", "tab:orange"])
    right.axhline(peak, color="k", linestyle="--", label=f"float32 GEMM, best shape: {peak:.0f} GMAC/s")
    for k, (_, b) in enumerate(bars):
        right.text(
            k,
            b["gmac_per_second"],
            f"{b['share_of_gemm_peak']:.0%}\n{b['median_gmac']:.0f} G in {b['median_seconds']:.2f} s",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    right.set_ylabel("multiply-adds per second (G)")
    right.set_title("achieved against the machine's GEMM rate (medians)")
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
