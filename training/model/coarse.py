"""The coarse network: the patch CNN run convolutionally at its *own* strides (fast mode's screening pass).

A patch CNN of valid convolutions and strided poolings, applied to a whole (padded) field instead of one patch,
gives one output per ``stride`` pixels: output (i, j) is the patch CNN on the patch whose top-left corner is
``(stride·i, stride·j)`` of its input. Fed the field mirror-padded by the halo, that patch is centred on field
pixel ``(stride·i, stride·j)``: the coarse output there equals the dense network's (:mod:`training.model.to_fcn`)
exactly, at about 1/28 of its multiply-adds for the paper's network (pool 2 then pool 3: stride 6).

The stride and the phase (which field pixel grid point (0, 0) is) are derived from the layer list and written to
the ONNX metadata (``output_stride``, ``output_phase``), with the dense model's id (``dense_model_id``) so the
service never pairs a coarse pass with another model's refinement.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import onnx

from training.model.export import fully_convolutional_onnx, set_metadata
from training.model.to_fcn import ConversionError, _pair, dense_plan

# Metadata the coarse file copies from the dense one: how the field is prepared is the same.
SHARED_KEYS = (
    "receptive_field",
    "halo",
    "input_layout",
    "input_scale",
    "input_padding",
    "classes",
    "input_normalisation",
    "recipe",
    "training_data",
    "format_version",
)


def output_stride(model: keras.Model) -> tuple[int, int]:
    """The product of the strides of the patch model's spatial layers: one coarse output per that many pixels."""
    stride = [1, 1]
    for step in dense_plan(model):
        layer = step.layer
        if isinstance(layer, keras.layers.Conv2D | keras.layers.MaxPooling2D):
            own = _pair(layer.strides)
            stride = [stride[0] * own[0], stride[1] * own[1]]
    return stride[0], stride[1]


def patch_cnn_to_strided(model: keras.Model, name: str = "coarse_fcn") -> keras.Model:
    """The patch model with every spatial layer kept as it is (same strides, same weights) but any input size.

    Returns:
        a model from ``[n, H, W, c]`` to ``[n, ⌊(H − R)/s⌋ + 1, ⌊(W − R)/s⌋ + 1, classes]`` (R the receptive field,
        s :func:`output_stride`) whose output (i, j) equals ``model`` on the patch at ``(s·i, s·j)``.

    Raises:
        ConversionError: a layer :func:`dense_plan <training.model.to_fcn.dense_plan>` refuses.
    """
    inputs = keras.Input((None, None, model.input_shape[-1]), name="image")
    x = inputs
    for step in dense_plan(model):
        layer = step.layer
        if isinstance(layer, keras.layers.Conv2D):
            copy = keras.layers.Conv2D.from_config({**layer.get_config(), "name": f"{layer.name}_coarse"})
            x = copy(x)
            copy.set_weights(layer.get_weights())
        elif isinstance(layer, keras.layers.MaxPooling2D):
            x = keras.layers.MaxPooling2D.from_config({**layer.get_config(), "name": f"{layer.name}_coarse"})(x)
        elif isinstance(layer, keras.layers.Softmax | keras.layers.Activation | keras.layers.ReLU):
            x = layer.__class__.from_config({**layer.get_config(), "name": f"{layer.name}_coarse"})(x)
        elif not isinstance(layer, keras.layers.Dropout):
            raise ConversionError(f"layer {layer.name!r} has no strided equivalent")
    return keras.Model(inputs, x, name=name)


def coarse_onnx(patch_model: keras.Model, dense_metadata: Mapping[str, str]) -> onnx.ModelProto:
    """The coarse network as ONNX, with metadata: the dense file's (how a field is prepared), its stride and phase,
    and ``dense_model_id``.

    The phase is 0: the service pads the field by the halo, as for the dense network, so grid point (i, j) is
    field pixel ``(stride·i, stride·j)``.
    """
    stride_y, stride_x = output_stride(patch_model)
    if stride_y != stride_x:
        raise ConversionError(f"strides {stride_y}×{stride_x}: the service expects one stride for both axes")
    proto = fully_convolutional_onnx(patch_cnn_to_strided(patch_model))
    dense_id = dense_metadata["model_id"]
    metadata = {k: dense_metadata[k] for k in SHARED_KEYS if k in dense_metadata}
    metadata.update(
        {
            "model_id": f"{dense_id}-coarse",
            "dense_model_id": dense_id,
            "variant": "coarse",
            "precision": "fp32",
            "output_stride": str(stride_y),
            "output_phase": "0,0",
        }
    )
    set_metadata(proto, metadata)
    proto.doc_string = (
        f"Coarse (strided) network of the patch CNN: P(background), P(bacillus) every {stride_y} px. Input: RGB × "
        "input_scale, NHWC, mirror-padded by halo px; output (i, j) is field pixel (stride·i, stride·j)."
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto
