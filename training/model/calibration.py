"""Platt calibration of the dense network on validation fields, folded into its last convolution.

The net is trained on 50/50 patches, but under 1% of a field's pixels are bacillus, so its probabilities are
far too high on real fields. A logistic fit ``P = σ(a·z + b)`` of the logit difference ``z = l₁ − l₀`` against
the validation fields' pixel labels fixes both the scale (a) and the prior (b). Since ``l₀ → a·l₀`` and
``l₁ → a·l₁ + b`` give exactly that, the fit is folded into conv4's weights and bias: the calibrated model is
the same architecture, so the dense conversion, the ONNX export and the equivalence proof are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import expit, log_expit

LOGIT_CLIP = 1e-7


def logit(p: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``log(p / (1 − p))`` with p clipped away from 0 and 1 (float32 heatmaps saturate)."""
    q = np.clip(np.asarray(p, dtype=np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(q) - np.log1p(-q)


@dataclass(frozen=True)
class PlattFit:
    """``P = σ(scale·z + shift)``, with the weighted negative log-likelihood before and after."""

    scale: float
    shift: float
    nll_before: float
    nll_after: float


def _nll(
    params: npt.NDArray[np.float64],
    z: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
) -> tuple[float, npt.NDArray[np.float64]]:
    a, b = params
    s = a * z + b
    loss = -(w * (y * log_expit(s) + (1 - y) * log_expit(-s))).sum() / w.sum()
    residual = w * (expit(s) - y) / w.sum()
    return float(loss), np.array([(residual * z).sum(), residual.sum()])


def fit_platt(z: npt.NDArray[np.floating], y: npt.NDArray[np.bool_], weights: npt.NDArray[np.floating]) -> PlattFit:
    """Weighted logistic fit of labels ``y`` on logits ``z`` (L-BFGS with the analytic gradient)."""
    z64, y64, w64 = (np.asarray(v, dtype=np.float64) for v in (z, y, weights))
    before, _ = _nll(np.array([1.0, 0.0]), z64, y64, w64)
    result = minimize(_nll, np.array([1.0, 0.0]), args=(z64, y64, w64), jac=True, method="L-BFGS-B")
    return PlattFit(float(result.x[0]), float(result.x[1]), before, float(result.fun))


def expected_calibration_error(
    p: npt.NDArray[np.floating], y: npt.NDArray[np.bool_], weights: npt.NDArray[np.floating], bins: int = 10
) -> float:
    """Weighted ECE over equal-width probability bins."""
    p64, y64, w = (np.asarray(v, dtype=np.float64) for v in (p, y, weights))
    which = np.minimum((p64 * bins).astype(int), bins - 1)
    total, error = w.sum(), 0.0
    for k in range(bins):
        sel = which == k
        if sel.any():
            gap = abs(np.average(p64[sel], weights=w[sel]) - np.average(y64[sel], weights=w[sel]))
            error += w[sel].sum() / total * gap
    return float(error)


def fold_into_last_conv(model: keras.Model, fit: PlattFit) -> keras.Model:
    """A copy of the two-class patch model whose softmax gives ``σ(scale·z + shift)``.

    Raises:
        ValueError: the model's last convolution does not output two classes.
    """
    calibrated = keras.models.clone_model(model)
    calibrated.set_weights(model.get_weights())
    last = [layer for layer in calibrated.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    kernel, bias = last.get_weights()
    if kernel.shape[-1] != 2:
        raise ValueError(f"layer {last.name!r} has {kernel.shape[-1]} outputs; calibration needs 2 classes")
    bias = fit.scale * bias + np.array([0.0, fit.shift], dtype=bias.dtype)
    last.set_weights([(fit.scale * kernel).astype(kernel.dtype), bias.astype(bias.dtype)])
    return calibrated
