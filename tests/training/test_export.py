"""The ONNX export: valid graph, dynamic height and width, metadata the service reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from training.model.export import INPUT_NAME, OPSET, OUTPUT_NAME, read_metadata


def test_metadata_and_graph(random_dense_onnx: Path) -> None:
    meta = read_metadata(random_dense_onnx)
    assert meta["receptive_field"] == "45" and meta["halo"] == "22"
    assert meta["input_layout"] == "NHWC" and meta["input_padding"] == "reflect"
    assert abs(float(meta["input_scale"]) - 1 / 255) < 1e-12
    assert meta["classes"] == "background,bacillus"
    assert meta["recipe"] == "random" and meta["training_data"] == "none"
    assert json.loads(meta["validation_metrics"]) == {"loss": 0.0}
    assert len(meta["created_from"]) >= 40 or meta["created_from"] == "unknown"
    assert meta["model_id"].startswith("tbseg-random-")
    model = onnx.load(str(random_dense_onnx))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    # no pooling with dilations: every provider, CUDA included, runs Max/Slice
    assert not [n for n in model.graph.node if n.op_type == "MaxPool"]


def test_dynamic_height_and_width(random_dense_onnx: Path) -> None:
    session = ort.InferenceSession(str(random_dense_onnx), providers=["CPUExecutionProvider"])
    for h, w in ((45, 45), (45 + 7, 45 + 30), (100, 61)):
        out = session.run(None, {INPUT_NAME: np.random.default_rng(h).random((2, h, w, 3), dtype=np.float32)})[0]
        assert out.shape == (2, h - 44, w - 44, 2)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
