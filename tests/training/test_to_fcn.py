"""The strided-kernel converter: general over layer stacks, dilations derived from the layers, clear refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.model.patch_cnn import build_patch_cnn
from training.model.to_fcn import ConversionError, dense_plan, patch_cnn_to_fcn, receptive_field_px


def _scan_patches(model: keras.Model, image: np.ndarray, patch_hw: tuple[int, int]) -> np.ndarray:
    """The patch model on every window of ``image`` of its input size (no padding): the slow reference."""
    windows = np.lib.stride_tricks.sliding_window_view(image, patch_hw, axis=(0, 1))
    h, w = windows.shape[:2]
    flat = windows.transpose(0, 1, 3, 4, 2).reshape(h * w, *patch_hw, image.shape[-1])
    return model.predict(flat, batch_size=1024, verbose=0).reshape(h, w, -1)


def test_paper_network_dilations_and_field() -> None:
    model = build_patch_cnn()
    plan = {s.layer.name: s.dilation for s in dense_plan(model)}
    assert plan == {
        "conv1": (1, 1),
        "pool1": (1, 1),
        "conv2": (2, 2),
        "pool2": (2, 2),
        "conv3": (6, 6),
        "conv4": (6, 6),
        "softmax": (6, 6),
    }
    assert receptive_field_px(model) == (45, 45)


def _other_stack() -> keras.Model:
    """Strided convolution, overlapping pooling, a dilated convolution, unequal strides, no softmax."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((29, 33, 2)),
            keras.layers.Conv2D(5, 3, strides=2, activation="relu"),  # 29×33 → 14×16
            keras.layers.MaxPooling2D(3, strides=(2, 1)),  # → 6×14
            keras.layers.Conv2D(4, (2, 3), dilation_rate=(1, 2), activation="tanh"),  # → 5×10
            keras.layers.MaxPooling2D((5, 10), strides=1),  # → 1×1
            keras.layers.Conv2D(3, 1),
            keras.layers.Flatten(),
        ]
    )


def test_a_different_stack_converts_exactly() -> None:
    model = _other_stack()
    assert model.output_shape == (None, 3)
    # 29 input rows, but the strides leave the last two unread: 1 + 2·1 + 2·2 + 1·4 + 4·4 = 27
    assert receptive_field_px(model) == (27, 33)
    dense = patch_cnn_to_fcn(model)
    image = np.random.default_rng(0).random((40, 45, 2), dtype=np.float32)
    got = np.asarray(dense(image[None]))[0]
    assert got.shape == (40 - 27 + 1, 45 - 33 + 1, 3)
    expected = _scan_patches(model, image, (29, 33))
    assert expected.shape == (12, 13, 3)
    np.testing.assert_allclose(got[:12], expected, atol=1e-5)


def test_receptive_field_measured_by_impulse_matches_the_derivation() -> None:
    """StarDist-style: which outputs change when one input pixel changes, versus the arithmetic."""
    model = build_patch_cnn(seed=2)
    dense = patch_cnn_to_fcn(model)
    base = np.full((1, 120, 120, 3), 0.5, dtype=np.float32)
    poked = base.copy()
    poked[0, 60, 60] = 1.0
    changed = np.abs(np.asarray(dense(poked)) - np.asarray(dense(base)))[0].max(-1) > 0
    ys, xs = np.nonzero(changed)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == receptive_field_px(model) == (45, 45)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (keras.layers.Conv2D(4, 3, padding="same"), "padding 'same'"),
        (keras.layers.BatchNormalization(), "BatchNormalization"),
        (keras.layers.AveragePooling2D(2), "AveragePooling2D"),
    ],
)
def test_unsupported_layers_are_refused_by_name(layer: keras.layers.Layer, message: str) -> None:
    model = keras.Sequential([keras.Input((9, 9, 3)), keras.layers.Conv2D(4, 3), layer])
    with pytest.raises(ConversionError, match=message):
        patch_cnn_to_fcn(model)
