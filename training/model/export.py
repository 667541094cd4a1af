"""Export of the dense network to ONNX, with the metadata the service reads instead of guessing.

The ONNX graph takes ``image``: float32 NHWC ``[n, H, W, 3]``, RGB already multiplied by ``input_scale``, and
already mirror-padded by ``halo`` pixels on every side; it returns ``probabilities``: float32
``[n, H − 2·halo, W − 2·halo, 2]`` in the order of ``classes``. Height and width are dynamic.

Metadata properties (all strings; JSON where noted), described in ``docs/model-format.md``:
``format_version``, ``receptive_field``, ``halo``, ``input_layout``, ``input_scale``, ``input_padding``,
``classes``, ``recipe``, ``training_data``, ``validation_metrics`` (JSON), ``created_from``, ``model_id``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import keras
import onnx
import tensorflow as tf
import tf2onnx

from training.data.sampling import MIRROR_MODE
from training.model.patch_cnn import CLASSES, INPUT_SCALE
from training.model.to_fcn import patch_cnn_to_fcn, receptive_field_px
from training.paths import REPO_ROOT

OPSET = 17
FORMAT_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checkout's commit, with ``+dirty`` when tracked files have uncommitted changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def fully_convolutional_onnx(network: keras.Model) -> onnx.ModelProto:
    """A network of any input height and width as ONNX: ``image`` NHWC in, ``probabilities`` out (no metadata)."""
    spec = (tf.TensorSpec((None, None, None, network.input_shape[-1]), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: network(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    return proto


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace the ONNX metadata properties of ``proto`` by ``metadata``."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "tbseg.training"


def dense_onnx(patch_model: keras.Model) -> onnx.ModelProto:
    """Convert the patch model to its dense network and that to ONNX (no metadata yet)."""
    return fully_convolutional_onnx(patch_cnn_to_fcn(patch_model))


def export_onnx(
    patch_model: keras.Model,
    path: Path,
    *,
    recipe: str,
    training_data: str,
    validation_metrics: Mapping[str, object],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write the dense ONNX model of ``patch_model`` to ``path`` with its metadata, and check it.

    Returns:
        the metadata properties written.

    Raises:
        onnx.checker.ValidationError: the exported graph is not valid ONNX.
    """
    proto = dense_onnx(patch_model)
    rf_h, rf_w = receptive_field_px(patch_model)
    if rf_h != rf_w or rf_h % 2 == 0:
        raise ValueError(f"receptive field {rf_h}×{rf_w}: the service expects a square, odd field")
    weights_digest = hashlib.sha256(b"".join(w.tobytes() for w in patch_model.get_weights())).hexdigest()[:12]
    metadata = {
        "format_version": FORMAT_VERSION,
        "model_id": f"tbseg-{recipe}-{weights_digest}",
        "receptive_field": str(rf_h),
        "halo": str(rf_h // 2),
        "input_layout": "NHWC",
        "input_scale": f"{INPUT_SCALE!r}",
        "input_padding": MIRROR_MODE,
        "classes": ",".join(CLASSES),
        "recipe": recipe,
        "training_data": training_data,
        "validation_metrics": json.dumps(dict(validation_metrics), sort_keys=True),
        "created_from": git_commit(),
        **dict(extra or {}),
    }
    set_metadata(proto, metadata)
    proto.doc_string = (
        "Dense (strided-kernel) network of the paper's patch CNN: P(background), P(bacillus) per pixel. "
        "Input: RGB × input_scale, NHWC, mirror-padded by halo px; output: (H−2·halo)×(W−2·halo)×2."
    )
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return metadata


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata properties of an ONNX file."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def patch_onnx(patch_model: keras.Model) -> onnx.ModelProto:
    """The patch CNN itself as ONNX (``[n, 45, 45, 3]`` → ``[n, 2]``), for patch-by-patch benchmarks."""
    spec = (tf.TensorSpec((None, *patch_model.input_shape[1:]), tf.float32, name="patch"),)

    @tf.function(input_signature=spec)
    def forward(patch: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: patch_model(patch, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    onnx.checker.check_model(proto)
    return proto


def multiply_adds_per_output(patch_model: keras.Model) -> dict[str, int]:
    """Multiply-adds of the convolutions for one output pixel: patch by patch and in the dense network.

    Patch by patch, every layer runs at its full (reduced) resolution for each pixel's own patch; densely,
    every layer runs once per output pixel. Pooling and activations are left out (a few percent).
    """
    patch, dense_total = 0, 0
    for layer in patch_model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            per_position = kh * kw * layer.input.shape[-1] * layer.filters
            out_h, out_w = layer.output.shape[1:3]
            patch += per_position * out_h * out_w
            dense_total += per_position
    return {"patch_by_patch": patch, "dense": dense_total}
