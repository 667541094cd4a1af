"""The one static int8 setting every int8 copy in a model folder is made with (ONNX Runtime's quantiser): QDQ
format, weights int8 per output channel, activations uint8 per tensor, min-max ranges on the calibration inputs
given, and the named nodes kept in float."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


class CalibrationInputs(Protocol):
    """An ONNX Runtime calibration data reader: the next input feed, or None when done."""

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None: ...


def described(float_nodes: str) -> dict[str, str]:
    """The setting in words, for ``fast_variants.json``, ``cascade.json`` and the card (``float_nodes``: the nodes
    kept in float, e.g. ``QuantRecipe.describe()``)."""
    return {
        "format": "QDQ",
        "weights": "int8 per channel",
        "activations": "uint8 per tensor",
        "calibration": "min-max",
        "float_nodes": float_nodes,
    }


def static_int8(source: Path, target: Path, inputs: CalibrationInputs, float_nodes: list[str]) -> None:
    """Write the static int8 (QDQ) copy of ``source`` to ``target``, ranges calibrated on ``inputs``, the nodes
    named in ``float_nodes`` in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(source),
        str(target),
        inputs,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=float_nodes,
    )
