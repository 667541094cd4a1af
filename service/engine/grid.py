"""Where a coarse network's outputs lie on a field: its grid's stride and phase (fast mode and its cascade)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
