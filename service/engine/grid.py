"""Where a coarse network's outputs lie on a field: its grid's stride and phase (fast mode and its cascade)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.engine.errors import ModelContractError
from service.engine.model import OnnxModel


@dataclass(frozen=True)
class GridGeometry:
    """Where the coarse network's outputs lie: grid point (i, j) is field pixel ``(phase_y + stride·i,
    phase_x + stride·j)``."""

    stride: int
    phase: tuple[int, int]

    def points(self, length: int, axis: int) -> int:
        """Grid points along an axis of ``length`` pixels: every pixel has one at or after it (one past the end)."""
        return (length - 1 - self.phase[axis]) // self.stride + 2

    def index_range(self, start: int, stop: int, axis: int, points: int) -> tuple[int, int]:
        """The grid indices ``[lo, hi)`` whose pixels lie in ``[start, stop)`` along ``axis``."""
        lo = max(0, math.ceil((start - self.phase[axis]) / self.stride))
        hi = min(points, (stop - 1 - self.phase[axis]) // self.stride + 1)
        return lo, max(lo, hi)

    @staticmethod
    def of(model: OnnxModel) -> GridGeometry:
        """The geometry a coarse model's metadata declares (``output_stride``, ``output_phase``).

        Raises:
            ModelContractError: missing or malformed, naming the model.
        """
        raw = model.meta.raw
        try:
            stride = int(raw["output_stride"])
            phase_y, phase_x = (int(v) for v in raw["output_phase"].split(","))
        except (KeyError, ValueError) as exc:
            raise ModelContractError(
                f"{model.path}: a coarse network must declare output_stride and output_phase 'y,x' ({exc})"
            ) from exc
        if stride < 1 or not (0 <= phase_y < stride and 0 <= phase_x < stride):
            raise ModelContractError(f"{model.path}: output_stride {stride} and output_phase {raw['output_phase']}")
        return GridGeometry(stride, (phase_y, phase_x))

    def blocks(self, rows: int, cols: int, block: int, receptive_field: int) -> Iterator[GridBlock]:
        """The ``[rows, cols]`` outputs of a strided network in blocks of ``block``² and the padded field's pixels
        each block reads (its outputs' windows of ``receptive_field`` px): exact at any block size."""
        for i0 in range(0, rows, block):
            n = min(block, rows - i0)
            y0 = self.phase[0] + self.stride * i0
            for j0 in range(0, cols, block):
                m = min(block, cols - j0)
                x0 = self.phase[1] + self.stride * j0
                yield GridBlock(
                    slice(i0, i0 + n),
                    slice(j0, j0 + m),
                    slice(y0, y0 + self.stride * (n - 1) + receptive_field),
                    slice(x0, x0 + self.stride * (m - 1) + receptive_field),
                )


@dataclass(frozen=True)
class GridBlock:
    """Outputs ``[rows, cols]`` of a strided network and the padded field's pixels ``[read_y, read_x]`` they read."""

    rows: slice
    cols: slice
    read_y: slice
    read_x: slice

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    def batch(self, padded: npt.NDArray[np.uint8], scale: float) -> npt.NDArray[np.float32]:
        """The pixels it reads as a scaled float32 batch of one ``[1, h, w, 3]``."""
        batch = padded[self.read_y, self.read_x][None].astype(np.float32)
        batch *= np.float32(scale)
        return batch
