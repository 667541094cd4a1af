"""Proof that the accelerated (dense) network equals patch-by-patch scanning with the patch CNN.

Patch by patch: the Keras patch CNN on every mirror-padded 45×45 patch of a crop, as the paper's original net.
Dense: the ONNX export of the converted network, run by ONNX Runtime on the mirror-padded crop. Crops include
the field's corners and edges (where the mirror padding is read) and its interior.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort

from training.data.sampling import extract_patches, mirror_pad
from training.data.synthetic import synthetic_field
from training.model.patch_cnn import to_model_input
from training.paths import SHIPPED_MODEL as SHIPPED_ONNX
from training.paths import SHIPPED_PATCH_MODEL as SHIPPED_KERAS

FIELD = synthetic_field(11, height=150, width=170, background="green").image
# (y0, y1, x0, x1) crops of FIELD: corners and edges read the mirror padding, the last one is interior
CROPS = [(0, 20, 0, 24), (130, 150, 150, 170), (0, 16, 80, 100), (60, 82, 0, 18), (60, 84, 70, 96)]


def patch_by_patch(model: keras.Model, image: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The patch CNN's output for every pixel of ``crop``, one 45×45 patch per pixel."""
    y0, y1, x0, x1 = crop
    ys, xs = np.mgrid[y0:y1, x0:x1]
    patches = extract_patches(image, np.stack([ys.ravel(), xs.ravel()], axis=1))
    return model.predict(to_model_input(patches), batch_size=1024, verbose=0).reshape(y1 - y0, x1 - x0, -1)


def dense(session: ort.InferenceSession, image: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """The dense ONNX network's output for ``crop``: the crop's window of the mirror-padded field, in one pass."""
    y0, y1, x0, x1 = crop
    window = mirror_pad(image, 22)[y0 : y1 + 44, x0 : x1 + 44]
    return session.run(None, {"image": to_model_input(window)[None]})[0][0]


def assert_equivalent(model: keras.Model, onnx_path: Path) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for crop in CROPS:
        expected, got = patch_by_patch(model, FIELD, crop), dense(session, FIELD, crop)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"crop {crop}")
        np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1), err_msg=f"crop {crop}")


def test_random_weights_dense_onnx_equals_patch_by_patch(random_patch_cnn, random_dense_onnx: Path) -> None:
    assert_equivalent(random_patch_cnn, random_dense_onnx)


def test_random_weights_give_both_classes(random_patch_cnn) -> None:
    """Guard against a vacuous proof: the outputs compared must vary and cross the decision boundary."""
    out = np.concatenate([patch_by_patch(random_patch_cnn, FIELD, c).reshape(-1, 2) for c in CROPS])
    assert 0.2 < (out.argmax(-1) == 1).mean() < 0.8
    assert out[:, 1].std() > 0.05


def test_shipped_weights_dense_onnx_equals_patch_by_patch() -> None:
    import training.model.to_fcn  # noqa: F401  (registers the custom layer)

    model = keras.models.load_model(SHIPPED_KERAS)
    assert_equivalent(model, SHIPPED_ONNX)


def test_whole_field_in_one_pass_equals_patches_at_sampled_pixels(random_patch_cnn, random_dense_onnx: Path) -> None:
    session = ort.InferenceSession(str(random_dense_onnx), providers=["CPUExecutionProvider"])
    whole = session.run(None, {"image": to_model_input(mirror_pad(FIELD, 22))[None]})[0][0]
    assert whole.shape[:2] == FIELD.shape[:2]
    rng = np.random.default_rng(0)
    centres = np.stack([rng.integers(0, 150, 200), rng.integers(0, 170, 200)], axis=1)
    expected = random_patch_cnn.predict(to_model_input(extract_patches(FIELD, centres)), verbose=0)
    np.testing.assert_allclose(whole[centres[:, 0], centres[:, 1]], expected, atol=1e-5)
