"""The paper's patch CNN (its Figure 2): the class of the centre pixel of a 45×45×3 RGB patch.

    input 45×45×3 (RGB scaled to [0, 1])
    conv1 4×4, 32, stride 1, ReLU        → 42×42×32
    pool1 max 2×2, stride 2              → 21×21×32
    conv2 4×4, 64, stride 1, ReLU        → 18×18×64
    pool2 max 3×3, stride 3              → 6×6×64
    conv3 6×6, 512, stride 1, ReLU       → 1×1×512   (L2 on its weights)
    conv4 1×1, 2                         → 1×1×2     (L2 on its weights)
    softmax                              → [P(background), P(bacillus)]

All convolutions are valid (unpadded), so the same layers slide over a whole field once converted by
:mod:`training.model.to_fcn`.
"""

from __future__ import annotations

import keras
import numpy as np
import numpy.typing as npt

from training.data.sampling import PATCH_SIZE

CLASSES = ("background", "bacillus")
INPUT_SCALE = 1.0 / 255.0


def build_patch_cnn(l2: float = 5e-4, seed: int = 0) -> keras.Model:
    """Build the paper's patch CNN, untrained.

    Args:
        l2: L2 weight-regularisation factor of conv3 and conv4 (the paper regularises those two only).
        seed: seed of the weight initialisers, so two builds with one seed are identical.

    Returns:
        a Keras model mapping ``[n, 45, 45, 3]`` float32 in [0, 1] to ``[n, 2]`` class probabilities.
    """
    regulariser = keras.regularizers.L2(l2) if l2 > 0 else None

    def init(offset: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=seed * 100 + offset)

    return keras.Sequential(
        [
            keras.Input((PATCH_SIZE, PATCH_SIZE, 3), name="patch"),
            keras.layers.Conv2D(32, 4, activation="relu", kernel_initializer=init(1), name="conv1"),
            keras.layers.MaxPooling2D(2, strides=2, name="pool1"),
            keras.layers.Conv2D(64, 4, activation="relu", kernel_initializer=init(2), name="conv2"),
            keras.layers.MaxPooling2D(3, strides=3, name="pool2"),
            keras.layers.Conv2D(
                512,
                6,
                activation="relu",
                kernel_initializer=init(3),
                kernel_regularizer=regulariser,
                name="conv3",
            ),
            keras.layers.Conv2D(2, 1, kernel_initializer=init(4), kernel_regularizer=regulariser, name="conv4"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Softmax(name="softmax"),
        ],
        name="patch_cnn",
    )


def to_model_input(patches: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 RGB → float32 in [0, 1], the scaling the network was trained with (``INPUT_SCALE``)."""
    return np.asarray(patches, dtype=np.float32) * np.float32(INPUT_SCALE)
