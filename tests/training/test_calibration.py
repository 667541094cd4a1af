"""Platt calibration: the fit recovers known parameters, and folding it into conv4 is exact."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from training.model.calibration import PlattFit, expected_calibration_error, fit_platt, fold_into_last_conv, logit
from training.model.patch_cnn import build_patch_cnn


def test_fit_recovers_scale_and_shift() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 200_000)
    y = rng.random(z.size) < expit(0.5 * z - 2.0)
    fit = fit_platt(z, y, np.ones_like(z))
    assert abs(fit.scale - 0.5) < 0.02 and abs(fit.shift + 2.0) < 0.05
    assert fit.nll_after < fit.nll_before
    calibrated = expit(fit.scale * z + fit.shift)
    w = np.ones_like(z)
    assert expected_calibration_error(calibrated, y, w) < 0.01 < expected_calibration_error(expit(z), y, w)


def test_folding_into_conv4_applies_the_fit_exactly() -> None:
    model = build_patch_cnn(seed=1)
    fit = PlattFit(scale=0.7, shift=-3.0, nll_before=0, nll_after=0)
    folded = fold_into_last_conv(model, fit)
    x = np.random.default_rng(1).random((16, 45, 45, 3), dtype=np.float32)
    before, after = model.predict(x, verbose=0)[:, 1], folded.predict(x, verbose=0)[:, 1]
    np.testing.assert_allclose(after, expit(0.7 * logit(before) - 3.0), atol=1e-5)
    # the original is untouched
    np.testing.assert_allclose(model.predict(x, verbose=0)[:, 1], before)
