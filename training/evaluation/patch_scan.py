"""Patch-by-patch scanning: the paper's original way of labelling a region, one 45×45 patch per pixel.

The patch CNN (not the dense rewrite) is exported to ONNX and run in ONNX Runtime, the same runtime the dense
network uses, so comparisons of numbers and of time are like for like. Patches are cut from the whole field with
the training sampler's mirror padding, so a crop scanned this way must equal the same crop of the dense heatmap.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import keras
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from training.data.sampling import extract_patches
from training.model.export import patch_onnx
from training.model.patch_cnn import CLASSES, to_model_input

BACILLUS = CLASSES.index("bacillus")


@dataclass(frozen=True)
class Region:
    """A rectangle ``[y0, y0+height) × [x0, x0+width)`` of a field."""

    y0: int
    x0: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)


class PatchScanner:
    """Label every pixel of a region by classifying its own 45×45 patch with the patch CNN."""

    def __init__(self, patch_model: keras.Model, threads: int | None = None, batch: int = 1024) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(patch_onnx(patch_model), f"{tmp}/patch.onnx")
            self.session = ort.InferenceSession(f"{tmp}/patch.onnx", options, providers=["CPUExecutionProvider"])
        self.batch = batch
        self.patch_px = int(patch_model.input_shape[1])

    def probabilities(self, patches: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``[n, 2]`` class probabilities of ``[n, 45, 45, 3]`` uint8 patches."""
        out = [
            self.session.run(None, {"patch": to_model_input(patches[i : i + self.batch])})[0]
            for i in range(0, len(patches), self.batch)
        ]
        return np.concatenate(out).reshape(len(patches), -1)

    def scan(self, field: npt.NDArray[np.uint8], region: Region) -> npt.NDArray[np.float32]:
        """P(bacillus) for every pixel of ``region`` of ``field``, ``[height, width]``."""
        ys, xs = np.mgrid[region.slices]
        centres = np.stack([ys.ravel(), xs.ravel()], axis=1)
        heat = np.empty(len(centres), dtype=np.float32)
        step = self.batch * 4  # cut patches in slices: 45×45×3 bytes each
        for i in range(0, len(centres), step):
            patches = extract_patches(field, centres[i : i + step], self.patch_px)
            heat[i : i + step] = self.probabilities(patches)[:, BACILLUS]
        return heat.reshape(region.height, region.width)
