"""Strided-kernel conversion: a patch classifier rewritten as a dense network over a whole tile.

A patch CNN of valid convolutions and poolings maps an R×R patch to one output. Sliding it over every pixel
repeats most of the work. The dense network (Li et al. 2014, Tschopp et al. 2016, the paper's section 3.3) keeps
every layer's weights and runs each layer at stride 1, dilating every kernel that comes after a stride-s layer
by s (products accumulate): the dense output at (y, x) is then exactly the patch CNN's output for the patch
whose top-left corner is (y, x). An input of (H + R − 1) × (W + R − 1) gives H × W outputs.

Pooling at stride 1 with dilation d is the maximum over the k × k inputs spaced d apart; it is written as a max
over shifted slices (separably, rows then columns), which every ONNX Runtime execution provider runs, CUDA
included (cuDNN's pooling has no dilation).

The dilations are derived from the layer list, never hard-coded: :func:`dense_plan` walks the layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
from keras import ops


class ConversionError(ValueError):
    """The patch model has a layer or setting the strided-kernel conversion does not handle; names the layer."""


Tensor = Any  # a Keras (backend) tensor: Keras ships no types


@keras.saving.register_keras_serializable(package="tbseg")
class DilatedMaxPool2D(keras.layers.Layer):
    """Max pooling at stride 1 over a ``pool_size`` window whose taps are ``dilation`` apart (NHWC, valid).

    Output size per axis: ``n − (k − 1) · d``.
    """

    def __init__(self, pool_size: tuple[int, int], dilation: tuple[int, int], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.pool_size = tuple(int(k) for k in pool_size)
        self.dilation = tuple(int(d) for d in dilation)

    @staticmethod
    def _max_of_shifts(x: Tensor, axis: int, k: int, d: int) -> Tensor:
        span = (k - 1) * d
        result = None
        for i in range(k):
            start, stop = i * d, i * d - span
            index = [slice(None)] * 4
            index[axis] = slice(start, stop if stop != 0 else None)
            shifted = x[tuple(index)]
            result = shifted if result is None else ops.maximum(result, shifted)
        return result

    def call(self, x: Tensor) -> Tensor:
        x = self._max_of_shifts(x, 1, self.pool_size[0], self.dilation[0])
        return self._max_of_shifts(x, 2, self.pool_size[1], self.dilation[1])

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "pool_size": self.pool_size, "dilation": self.dilation}


@dataclass(frozen=True)
class DenseStep:
    """One layer of the dense network: the patch layer it comes from and the dilation it runs at."""

    layer: keras.layers.Layer
    dilation: tuple[int, int]


def _pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _check_valid(layer: keras.layers.Layer) -> None:
    if getattr(layer, "padding", "valid") != "valid":
        raise ConversionError(f"layer {layer.name!r}: padding {layer.padding!r}; only 'valid' converts exactly")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ConversionError(f"layer {layer.name!r}: only channels_last (NHWC) is supported")


# Layers that act per position (or not at all at inference) and carry over unchanged.
_POINTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout, keras.layers.Softmax)
# Layers that only reshape a 1×1 spatial map into a vector at the end of the patch network.
_FLATTENING = (keras.layers.Flatten, keras.layers.Reshape)


def dense_plan(model: keras.Model) -> list[DenseStep]:
    """The layers of ``model`` with the dilation each runs at in the dense network.

    Raises:
        ConversionError: a layer that is not a valid Conv2D, a valid MaxPooling2D, a point-wise layer, or a
            flattening of a 1×1 map, or a flattening before the end of the spatial layers.
    """
    steps: list[DenseStep] = []
    dilation = (1, 1)
    flattened = False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Conv2D):
            if flattened:
                raise ConversionError(f"layer {layer.name!r}: convolution after a flattening")
            _check_valid(layer)
            if getattr(layer, "groups", 1) != 1:
                raise ConversionError(f"layer {layer.name!r}: grouped convolutions are not supported")
            own = _pair(layer.dilation_rate)
            steps.append(DenseStep(layer, (dilation[0] * own[0], dilation[1] * own[1])))
            stride = _pair(layer.strides)
            if stride != (1, 1) and own != (1, 1):
                raise ConversionError(f"layer {layer.name!r}: strided and dilated at once")
        elif isinstance(layer, keras.layers.MaxPooling2D):
            if flattened:
                raise ConversionError(f"layer {layer.name!r}: pooling after a flattening")
            _check_valid(layer)
            steps.append(DenseStep(layer, dilation))
            stride = _pair(layer.strides)
        elif isinstance(layer, _POINTWISE):
            steps.append(DenseStep(layer, dilation))
            continue
        elif isinstance(layer, _FLATTENING):
            flattened = True
            continue
        else:
            raise ConversionError(
                f"layer {layer.name!r} ({type(layer).__name__}) has no dense equivalent here; supported: "
                "Conv2D, MaxPooling2D (valid), Activation/ReLU/Softmax/Dropout, a final Flatten/Reshape"
            )
        dilation = (dilation[0] * stride[0], dilation[1] * stride[1])
    return steps


def receptive_field_px(model: keras.Model) -> tuple[int, int]:
    """Receptive field ``(height, width)`` of the patch model's output, from its layer list.

    Each spatial layer with kernel k running at dilation d in the dense network (its own dilation times the
    strides before it) widens the field by (k − 1) · d.
    """
    field = [1, 1]
    for step in dense_plan(model):
        layer = step.layer
        if isinstance(layer, keras.layers.Conv2D):
            kernel = _pair(layer.kernel_size)
        elif isinstance(layer, keras.layers.MaxPooling2D):
            kernel = _pair(layer.pool_size)
        else:
            continue
        field[0] += (kernel[0] - 1) * step.dilation[0]
        field[1] += (kernel[1] - 1) * step.dilation[1]
    return field[0], field[1]


def patch_cnn_to_fcn(model: keras.Model, name: str = "dense_fcn") -> keras.Model:
    """Rewrite a patch classifier as the equivalent dense network, sharing its trained weights.

    Args:
        model: a patch CNN whose spatial layers are valid Conv2D / MaxPooling2D (any strides), followed by
            point-wise layers and possibly a flattening of its 1×1 output.
        name: name of the returned model.

    Returns:
        a model from ``[n, H, W, c]`` to ``[n, H − R + 1, W − R + 1, classes]`` (R: :func:`receptive_field_px`)
        whose output at (y, x) equals ``model`` on the patch with top-left corner (y, x).
    """
    channels = model.input_shape[-1]
    inputs = keras.Input((None, None, channels), name="image")
    x = inputs
    for step in dense_plan(model):
        layer = step.layer
        if isinstance(layer, keras.layers.Conv2D):
            dense = keras.layers.Conv2D(
                layer.filters,
                layer.kernel_size,
                strides=1,
                padding="valid",
                dilation_rate=step.dilation,
                activation=layer.activation,
                use_bias=layer.use_bias,
                name=f"{layer.name}_dense",
            )
            x = dense(x)
            dense.set_weights(layer.get_weights())
        elif isinstance(layer, keras.layers.MaxPooling2D):
            x = DilatedMaxPool2D(_pair(layer.pool_size), step.dilation, name=f"{layer.name}_dense")(x)
        elif isinstance(layer, keras.layers.Softmax | keras.layers.Activation | keras.layers.ReLU):
            x = layer.__class__.from_config({**layer.get_config(), "name": f"{layer.name}_dense"})(x)
        # Dropout: identity at inference
    return keras.Model(inputs, x, name=name)
