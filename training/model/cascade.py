"""Fast mode's cascade parts, cut from a folder's own networks (:mod:`service.engine.cascade` reads them).

* ``bacilli_trunk_coarse.onnx``: the coarse network up to its last spatial convolution's input (the field to the
  features under every coarse grid point);
* ``bacilli_trunk_dense.onnx``: the dense network up to the same convolution's (dilated) input;
* ``bacilli_head.onnx``: that convolution as one matrix product over a ``[n, 6, 6, 64]`` window (channels last),
  its ReLU, the 1×1 classifier and the softmax, with the dense network's weights.

Nothing is retrained or approximated: the head on the trunk's features is the network. ``cascade.json`` records
the parts, the rule of where the cascade reads (:class:`service.engine.cascade.CascadeRule`, chosen on validation
fields of every lab: :data:`RULE_CHOICE`), and the largest difference between the cascade reading everything and the
networks themselves, measured on the fields given when it is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper
from onnx.utils import Extractor

from service.engine.cascade import CASCADE_JSON, Cascade, CascadeFiles, CascadeRule
from service.engine.fast import FastSettings, predict_grid
from service.engine.grid import GridGeometry
from service.engine.model import OnnxModel
from service.engine.model_folder import COARSE_ONNX, DENSE_ONNX
from service.engine.mosaic import PaddedField
from training.model.export import read_metadata, set_metadata

log = logging.getLogger(__name__)

CASCADE_CHECK_FIELDS = 2  # fields the cascade reading everything is compared with the networks on
COARSE_TRUNK_ONNX = "bacilli_trunk_coarse.onnx"
DENSE_TRUNK_ONNX = "bacilli_trunk_dense.onnx"
HEAD_ONNX = "bacilli_head.onnx"
RULE_CHOICE = (
    "chosen before any test field was read, on the validation fields of every lab (ZNSM-iDB MS-2 3, MS-1 ×2.10 6, "
    "UFAM negatives ×1 and ×2.5 5 each): a first coarse level of every other grid point missed no grid point above "
    "the screening threshold 0.3 with a first threshold up to 0.02 (0.01 kept: half of it); refinement from every "
    "2nd, 3rd or 4th pixel of a tile missed no pixel above the mask threshold with a first threshold up to 0.2 "
    "and read 0.39-0.45, 0.29-0.35 and 0.25-0.32 of the refined pixels at 0.1: every 3rd kept, at 0.1"
)


class CascadeCutError(ValueError):
    """The network does not end as the cascade expects (spatial conv, ReLU, 1×1 conv, softmax)."""


def _attribute(node: onnx.NodeProto, name: str) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(helper.get_attribute_value(a))
    return []


def head_nodes(proto: onnx.ModelProto) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The last spatial convolution and the 1×1 classifier after it.

    Raises:
        CascadeCutError: anything else between them and the output than ReLU, softmax and a transpose.
    """
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    spatial = [n for n in convs if _attribute(n, "kernel_shape") not in ([1, 1], [])]
    if not spatial:
        raise CascadeCutError("no spatial convolution")
    last = spatial[-1]
    tail = list(proto.graph.node)[list(proto.graph.node).index(last) + 1 :]
    kinds = [n.op_type for n in tail]
    if kinds[:3] != ["Relu", "Conv", "Softmax"] or any(k != "Transpose" for k in kinds[3:]):
        raise CascadeCutError(f"after the last spatial convolution: {kinds}, expected Relu, Conv 1×1, Softmax")
    return last, tail[1]


def trunk(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` from its input to its last spatial convolution's input (NCHW features)."""
    last, _ = head_nodes(proto)
    inferred = onnx.shape_inference.infer_shapes(proto)
    part = Extractor(inferred).extract_model([proto.graph.input[0].name], [last.input[0]])
    part.graph.output[0].name = last.input[0]
    return part


def _pool_shapes(coarse: onnx.ModelProto) -> list[tuple[int, int]]:
    """(kernel, stride) of each of the coarse network's max pools, in order (square pools)."""
    return [
        (_attribute(n, "kernel_shape")[0], (_attribute(n, "strides") or [1])[0])
        for n in coarse.graph.node
        if n.op_type == "MaxPool"
    ]


def pools_as_maxpool(dense_trunk: onnx.ModelProto, coarse: onnx.ModelProto) -> onnx.ModelProto | None:
    """The dense trunk with each of its pools, exported as chains of strided slices and element-wise maxima, as one
    ``MaxPool`` (the coarse network's kernel, stride 1, dilated by the product of the earlier pools' strides): the
    same function, which ONNX Runtime runs about twice as fast (a tile batch 31 ms → 14 ms on 2 cores). None when the
    graph is not the expected conv, ReLU, (slices and maxima) sequence."""
    graph = dense_trunk.graph
    nodes = list(graph.node)
    producer = {out: n for n in nodes for out in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    pools = _pool_shapes(coarse)
    if len(convs) != len(pools) or not pools:
        return None
    removed: set[int] = set()
    added: list[onnx.NodeProto] = []
    dilation = 1
    for k, (conv, (kernel, stride)) in enumerate(zip(convs, pools, strict=True)):
        relus = [n for n in nodes if n.op_type == "Relu" and n.input[0] == conv.output[0]]
        if len(relus) != 1:
            return None
        start = relus[0].output[0]
        target = convs[k + 1].input[0] if k + 1 < len(convs) else graph.output[0].name
        # every node from the ReLU's output to the target: slices and maxima only
        todo, seen = [target], set()
        while todo:
            name = todo.pop()
            if name == start or name in seen:
                continue
            seen.add(name)
            node = producer.get(name)
            if node is None or node.op_type not in ("Slice", "Max"):
                return None
            removed.add(id(node))
            todo.extend(node.input[:1] if node.op_type == "Slice" else node.input)
        added.append(
            helper.make_node(
                "MaxPool",
                [start],
                [target],
                name=f"pool{k + 1}_maxpool",
                kernel_shape=[kernel, kernel],
                strides=[1, 1],
                dilations=[dilation, dilation],
            )
        )
        dilation *= stride
    kept = [n for n in nodes if id(n) not in removed]
    # each MaxPool goes where its pool began: after the ReLU it reads
    ordered: list[onnx.NodeProto] = []
    for n in kept:
        ordered.append(n)
        ordered.extend(p for p in added if p.input[0] in n.output)
    used = {name for n in ordered for name in n.input}
    rewritten = helper.make_graph(
        ordered,
        graph.name,
        list(graph.input),
        list(graph.output),
        [i for i in graph.initializer if i.name in used],
    )
    model = helper.make_model(
        rewritten, opset_imports=list(dense_trunk.opset_import), ir_version=dense_trunk.ir_version
    )
    model.metadata_props.extend(dense_trunk.metadata_props)
    onnx.checker.check_model(model)
    return model


def same_function(a: onnx.ModelProto, b: onnx.ModelProto, side: int, seed: int = 0) -> bool:
    """Whether two trunks give exactly the same features on random ``[2, side, side, 3]`` inputs in [0, 1]."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).random((2, side, side, 3), dtype=np.float32)
    outputs = []
    for proto in (a, b):
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    return bool(np.array_equal(outputs[0], outputs[1]))


def dense_trunk_part(dense: onnx.ModelProto, coarse: onnx.ModelProto, side: int) -> onnx.ModelProto:
    """The dense network's trunk, its pools as ``MaxPool`` nodes when that gives exactly the same features on
    ``side``-px tiles (:func:`pools_as_maxpool`), else as exported."""
    cut = trunk(dense)
    pooled = pools_as_maxpool(cut, coarse)
    if pooled is not None and same_function(cut, pooled, side):
        return pooled
    log.warning("the dense trunk's pools stay as exported (no exact MaxPool form found)")
    return cut


def head(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The last spatial convolution (as a matrix product over one window), ReLU, classifier, softmax."""
    last, classifier = head_nodes(proto)
    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}

    def weight_and_bias(conv: onnx.NodeProto) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        weight = weights[conv.input[1]]
        bias = weights[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else np.zeros(weight.shape[0])
        return weight.astype(np.float32), np.asarray(bias, dtype=np.float32)

    (w3, b3), (w4, b4) = weight_and_bias(last), weight_and_bias(classifier)
    out_channels, in_channels, kh, kw = w3.shape
    nodes = [
        helper.make_node("Reshape", ["window", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "conv_weight", "conv_bias"], ["conv"], name="conv3", transB=1),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu3"),
        helper.make_node(
            "Gemm", ["relu", "classifier_weight", "classifier_bias"], ["logits"], name="classifier", transB=1
        ),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    initialisers = [
        numpy_helper.from_array(np.array([-1, in_channels * kh * kw], dtype=np.int64), "flat_shape"),
        # windows come channels last ([n, kh, kw, channels]): the weights' taps in the same order
        numpy_helper.from_array(w3.transpose(0, 2, 3, 1).reshape(out_channels, -1).astype(np.float32), "conv_weight"),
        numpy_helper.from_array(b3.astype(np.float32), "conv_bias"),
        numpy_helper.from_array(w4.reshape(w4.shape[0], -1).astype(np.float32), "classifier_weight"),
        numpy_helper.from_array(b4.astype(np.float32), "classifier_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "cascade_head",
        [helper.make_tensor_value_info("window", onnx.TensorProto.FLOAT, ["n", kh, kw, in_channels])],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["n", w4.shape[0]])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=proto.ir_version)
    onnx.checker.check_model(model)
    return model


def _largest_differences(
    folder: Path, cascade: Cascade, fields: Sequence[npt.NDArray[np.uint8]], tile_px: int = 32
) -> dict[str, float]:
    """The cascade reading every output against the networks themselves on ``fields`` (normalised as the model
    declares): the coarse grid, and one batch of tiles of each field."""
    cpu = ("CPUExecutionProvider",)
    dense, coarse = OnnxModel(folder / DENSE_ONNX, providers=cpu), OnnxModel(folder / COARSE_ONNX, providers=cpu)
    everything = Cascade(
        replace(cascade.files, rule=CascadeRule(1, -1.0, 1, -1.0)),
        dense,
        cascade.geometry,
        cpu,
    )
    meta = dense.meta
    grid_diff, tile_diff = 0.0, 0.0
    for rgb in fields:
        field = rgb if meta.normalisation is None else meta.normalisation.apply(rgb)
        geometry = everything.geometry
        reference = predict_grid(field, coarse, geometry)
        rows, cols = reference.shape
        padded = np.pad(field, ((meta.halo_px,) * 2, (meta.halo_px,) * 2, (0, 0)), mode=meta.input_padding)
        need_y = geometry.phase[0] + geometry.stride * (rows - 1) + meta.receptive_field_px
        need_x = geometry.phase[1] + geometry.stride * (cols - 1) + meta.receptive_field_px
        padded = np.pad(
            padded,
            ((0, max(0, need_y - padded.shape[0])), (0, max(0, need_x - padded.shape[1])), (0, 0)),
            mode="edge",
        )
        grid = everything.grid(padded, rows, cols).values
        grid_diff = max(grid_diff, float(np.abs(grid - reference).max()))
        tiles = PaddedField(
            field, halo_px=meta.halo_px, input_scale=meta.input_scale, padding=meta.input_padding, tile_px=tile_px
        )
        chosen = tiles.tiles[:: max(1, len(tiles.tiles) // 4)][:4]
        exact = np.zeros(field.shape[:2], dtype=np.float32)
        read = np.zeros(field.shape[:2], dtype=np.float32)
        tiles.run(chosen, dense.run, exact, batch_tiles=4, channel=meta.positive_index)
        tiles.run(chosen, lambda b: everything.refine(b).values[..., None], read, batch_tiles=4, channel=0)
        tile_diff = max(tile_diff, float(np.abs(read - exact).max()))
    return {"coarse_grid": grid_diff, "dense_tiles": tile_diff}


def write_cascade(
    folder: Path, fields: Sequence[npt.NDArray[np.uint8]], fields_source: str, rule: CascadeRule | None = None
) -> dict[str, object]:
    """Cut ``folder``'s coarse and dense networks into the cascade's parts and write them with ``cascade.json``.

    Args:
        folder: a model folder with its dense and coarse networks (``python -m training fast``).
        fields: fields (uint8 RGB) on which the cascade reading everything is compared with the networks.
        fields_source: what those fields are, in words.
        rule: where the cascade reads (default: :class:`CascadeRule`'s, see :data:`RULE_CHOICE`).

    Raises:
        FileNotFoundError: the folder lacks its dense or coarse network.
        CascadeCutError: a network that does not end as the cascade expects.
    """
    rule = rule or CascadeRule()
    for needed in (DENSE_ONNX, COARSE_ONNX):
        if not (folder / needed).is_file():
            raise FileNotFoundError(f"{folder / needed}: needed to cut the cascade (python -m training fast)")
    dense_proto, coarse_proto = onnx.load(str(folder / DENSE_ONNX)), onnx.load(str(folder / COARSE_ONNX))
    dense_meta, coarse_meta = read_metadata(folder / DENSE_ONNX), read_metadata(folder / COARSE_ONNX)
    tile_side = FastSettings().tile_px + 2 * int(dense_meta["halo"])  # a refinement tile as read
    parts = (
        (COARSE_TRUNK_ONNX, trunk(coarse_proto), coarse_meta, "coarse trunk"),
        (DENSE_TRUNK_ONNX, dense_trunk_part(dense_proto, coarse_proto, tile_side), dense_meta, "dense trunk"),
        (HEAD_ONNX, head(dense_proto), dense_meta, "head"),
    )
    for name, proto, metadata, role in parts:
        set_metadata(proto, {**metadata, "cascade_part": role, "dense_model_id": dense_meta["model_id"]})
        onnx.save(proto, str(folder / name))
    last, _ = head_nodes(coarse_proto)
    window = int(_attribute(last, "kernel_shape")[0])
    stride = int(coarse_meta["output_stride"])
    report: dict[str, object] = {
        "dense_model_id": dense_meta["model_id"],
        "files": {"coarse_trunk": COARSE_TRUNK_ONNX, "dense_trunk": DENSE_TRUNK_ONNX, "head": HEAD_ONNX},
        "features_layout": "NCHW",
        "window_layout": "NHWC",
        "window": window,
        "trunk_receptive_field": int(dense_meta["receptive_field"]) - stride * (window - 1),
        "rule": asdict(rule),
        "rule_choice": RULE_CHOICE,
    }
    path = folder / CASCADE_JSON
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    cpu = ("CPUExecutionProvider",)
    dense = OnnxModel(folder / DENSE_ONNX, providers=cpu)
    cascade = Cascade(
        CascadeFiles.load(path), dense, GridGeometry.of(OnnxModel(folder / COARSE_ONNX, providers=cpu)), cpu
    )
    differences = _largest_differences(folder, cascade, fields) if fields else None
    report["check"] = {"fields": fields_source if fields else "none", "largest_difference": differences}
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("cascade written into %s: largest |ΔP| against the networks %s", folder, differences)
    return report
