"""Colour-space conversion used to tell the red carbol-fuchsin stain from its background."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# sRGB (D65) to CIE XYZ, IEC 61966-2-1.
_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=np.float32,
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def srgb_to_lab(rgb: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    """Convert sRGB to CIELAB (D65 white).

    Args:
        rgb: ``[..., 3]`` array, uint8 (0..255) or float (0..255).

    Returns:
        ``[..., 3]`` float32 array of L* (0..100), a* (green−/red+), b* (blue−/yellow+).
    """
    c = np.asarray(rgb, dtype=np.float32) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack(
        [116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1
    )
    return lab.astype(np.float32)


def otsu_threshold(values: npt.NDArray[np.floating], bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance of ``values``.

    Returns:
        a value ``t``; the upper class is ``values > t``. For constant input, that constant.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1]
    weight_high = v.size - weight_low
    sum_low = np.cumsum(counts * centres)[:-1]
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] + counts[-1] * centres[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1 + int(np.argmax(between))])
