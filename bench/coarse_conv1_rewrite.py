"""The coarse pass's first layer, rewritten exactly: is it faster? (issue 28, item 2). Prints JSON.

The coarse network's first stage is a 4×4 convolution (3 → 32 channels, stride 1) at the field's full resolution,
a ReLU and a 2×2 max pool of stride 2. Its output equals, at every pooled pixel, the largest of four convolutions
taken at the four phases of the 2×2 block, so the stage can be rewritten on a space-to-depth view of the field
(12 channels at half resolution) as a 3×3 convolution per phase followed by the max of the phases, the bias and the
ReLU (both commute with the max). Three exact forms are measured against the layer as exported, on one
2592×1944 field's worth of random input, with the session's threads as the service uses them:

- ``one conv, split, max``: one 3×3 convolution to 4×32 channels, split into the phases, element-wise max;
- ``one conv, 3-D max pool``: the same convolution, its channels ordered by output then phase, pooled by 4;
- ``four convs, max``: one 3×3 convolution (12 → 32) per phase, element-wise max.

Each reports the median of ``--repeats`` runs and its largest difference from the exported layer (must be ≤ 1e-5).
The rewrite does 2.25× the multiply-adds of the exported layer (a 3×3×12 window per phase against 4×4×3), which
the memory it saves has to pay for.

    .venv/bin/python bench/coarse_conv1_rewrite.py --out bench/results/coarse_conv1_rewrite_cpu_2cores.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.json_output import emit_json  # noqa: E402
from service.engine.model_folder import COARSE_ONNX  # noqa: E402
from training.paths import SHIPPED_DIR  # noqa: E402

Array = npt.NDArray[np.float32]
OPSET, IR = 17, 8


def first_layer(path: Path) -> tuple[Array, Array]:
    """The coarse network's first convolution: weights (32, 3, 4, 4) and bias (32,)."""
    graph = onnx.load(str(path)).graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return values[conv.input[1]].astype(np.float32), values[conv.input[2]].astype(np.float32)


def phase_kernels(weights: Array) -> Array:
    """(4 phases, out, 12, 3, 3): the 4×4 kernel at phase (p, q) laid on the space-to-depth view.

    Space-to-depth (ONNX, block 2) puts input pixel (2i + a, 2j + b, c) at channel (a·2 + b)·3 + c of block (i, j).
    """
    out = weights.shape[0]
    kernels = np.zeros((4, out, 2, 2, 3, 3, 3), np.float32)
    for p in range(2):
        for q in range(2):
            for ky in range(4):
                for kx in range(4):
                    y, x = p + ky, q + kx
                    kernels[p * 2 + q, :, y % 2, x % 2, :, y // 2, x // 2] = weights[:, :, ky, kx]
    return kernels.reshape(4, out, 12, 3, 3)


def model(nodes: list[onnx.NodeProto], initialisers: list[onnx.TensorProto]) -> bytes:
    graph = helper.make_graph(
        nodes,
        "conv1",
        [helper.make_tensor_value_info("field", TensorProto.FLOAT, [1, None, None, 3])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)],
        initialisers,
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR)
    return bytes(built.SerializeToString())


def to_blocks() -> list[onnx.NodeProto]:
    return [
        helper.make_node("Transpose", ["field"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("SpaceToDepth", ["nchw"], ["blocks"], blocksize=2),
    ]


def bias_relu(name: str) -> list[onnx.NodeProto]:
    return [helper.make_node("Add", [name, "bias"], ["biased"]), helper.make_node("Relu", ["biased"], ["pooled"])]


def exported(weights: Array, bias: Array) -> bytes:
    nodes = [
        helper.make_node("Transpose", ["field"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], kernel_shape=[4, 4]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    return model(nodes, [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])


def split_max(weights: Array, bias: Array) -> bytes:
    kernels = phase_kernels(weights).reshape(-1, 12, 3, 3)  # phase-major channels
    out = weights.shape[0]
    nodes = [
        *to_blocks(),
        helper.make_node("Conv", ["blocks", "w"], ["conv"], kernel_shape=[3, 3]),
        helper.make_node("Split", ["conv", "parts"], ["p0", "p1", "p2", "p3"], axis=1),
        helper.make_node("Max", ["p0", "p1", "p2", "p3"], ["most"]),
        *bias_relu("most"),
    ]
    return model(
        nodes,
        [
            numpy_helper.from_array(kernels, "w"),
            numpy_helper.from_array(np.full(4, out, np.int64), "parts"),
            numpy_helper.from_array(bias.reshape(1, -1, 1, 1), "bias"),
        ],
    )


def pool3d_max(weights: Array, bias: Array) -> bytes:
    kernels = phase_kernels(weights).transpose(1, 0, 2, 3, 4).reshape(-1, 12, 3, 3)  # output-major channels
    nodes = [
        *to_blocks(),
        helper.make_node("Conv", ["blocks", "w"], ["conv"], kernel_shape=[3, 3]),
        helper.make_node("Unsqueeze", ["conv", "axis"], ["volume"]),
        helper.make_node("MaxPool", ["volume"], ["volume_max"], kernel_shape=[4, 1, 1], strides=[4, 1, 1]),
        helper.make_node("Squeeze", ["volume_max", "axis"], ["most"]),
        *bias_relu("most"),
    ]
    return model(
        nodes,
        [
            numpy_helper.from_array(kernels, "w"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(bias.reshape(1, -1, 1, 1), "bias"),
        ],
    )


def four_convs(weights: Array, bias: Array) -> bytes:
    kernels = phase_kernels(weights)
    nodes = [
        *to_blocks(),
        *(helper.make_node("Conv", ["blocks", f"w{i}"], [f"p{i}"], kernel_shape=[3, 3]) for i in range(4)),
        helper.make_node("Max", ["p0", "p1", "p2", "p3"], ["most"]),
        *bias_relu("most"),
    ]
    initialisers = [numpy_helper.from_array(kernels[i], f"w{i}") for i in range(4)]
    return model(nodes, [*initialisers, numpy_helper.from_array(bias.reshape(1, -1, 1, 1), "bias")])


FORMS: dict[str, Callable[[Array, Array], bytes]] = {
    "exported: conv 4×4, relu, max pool 2×2": exported,
    "one conv, split, max": split_max,
    "one conv, 3-D max pool": pool3d_max,
    "four convs, max": four_convs,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1944)
    parser.add_argument("--width", type=int, default=2592)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    weights, bias = first_layer(SHIPPED_DIR / COARSE_ONNX)
    field = np.random.default_rng(0).random((1, args.height, args.width, 3), dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    reference: Array | None = None
    forms: dict[str, Any] = {}
    out, _, k, _ = weights.shape
    exported_macs = out * 3 * k * k * (args.height - k + 1) * (args.width - k + 1)
    for name, build in FORMS.items():
        session = ort.InferenceSession(build(weights, bias), options, providers=["CPUExecutionProvider"])
        pooled = np.asarray(session.run(None, {"field": field})[0], np.float32)
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            session.run(None, {"field": field})
            seconds.append(time.perf_counter() - started)
        reference = pooled if reference is None else reference
        rewritten = name != next(iter(FORMS))
        forms[name] = {
            "seconds_median": round(statistics.median(seconds), 4),
            "max_abs_difference": float(np.abs(pooled - reference).max()),
            "exact_to_1e-5": bool(np.abs(pooled - reference).max() <= 1e-5),
            "multiply_adds": int(out * 4 * 12 * 9 * pooled.shape[2] * pooled.shape[3]) if rewritten else exported_macs,
        }
    first = forms[next(iter(FORMS))]["seconds_median"]
    for record in forms.values():
        record["times_the_exported_layer"] = round(record["seconds_median"] / first, 2)
    emit_json(
        {
            "bench": "coarse_conv1_rewrite",
            "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform()},
            "field": [args.height, args.width],
            "pooled": list(reference.shape) if reference is not None else None,
            "forms": forms,
            "fastest": min(forms, key=lambda n: forms[n]["seconds_median"]),
        },
        args.out,
    )


if __name__ == "__main__":
    main()
