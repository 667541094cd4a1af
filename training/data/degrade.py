"""Degraded copies of real fields: what a badly taken photograph of a smear looks like (issue 27's quality check).

Blur is applied to the field, then the camera's own pixel noise (its standard deviation measured on the field, as
the difference from a slightly smoothed copy) is added back: a defocused microscope still has a noisy sensor, and a
blur that also wipes the noise would make focus look easier to judge than it is.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage as ndi

Rgb = npt.NDArray[np.uint8]


def pixel_noise(rgb: Rgb) -> float:
    """The field's pixel noise: the standard deviation of green minus its σ = 1 px smoothing (every 2nd pixel)."""
    green = rgb[..., 1].astype(np.float32)
    return float(np.std((green - ndi.gaussian_filter(green, 1.0))[::2, ::2]))


def _with_noise(blurred: npt.NDArray[np.float32], noise: float, seed: int) -> Rgb:
    rng = np.random.default_rng(seed)
    return np.clip(blurred + rng.normal(0.0, noise, blurred.shape), 0, 255).astype(np.uint8)


def gaussian_blur(rgb: Rgb, sigma: float, seed: int = 0) -> Rgb:
    """Defocus: a Gaussian blur of ``sigma`` px, the field's pixel noise added back."""
    x = rgb.astype(np.float32)
    blurred = np.stack([ndi.gaussian_filter(x[..., c], sigma) for c in range(3)], axis=-1)
    return _with_noise(blurred, pixel_noise(rgb), seed)


def motion_blur(rgb: Rgb, length: int, seed: int = 0) -> Rgb:
    """A shaken stage or camera: a horizontal streak of ``length`` px, the field's pixel noise added back."""
    x = rgb.astype(np.float32)
    blurred = np.stack([ndi.uniform_filter1d(x[..., c], max(1, length), axis=1) for c in range(3)], axis=-1)
    return _with_noise(blurred, pixel_noise(rgb), seed)


def exposure(rgb: Rgb, gain: float) -> Rgb:
    """The lamp too bright (``gain`` > 1: highlights clip) or too dim (< 1)."""
    return np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def colour_cast(rgb: Rgb, rgb_gains: tuple[float, float, float]) -> Rgb:
    """A white balance gone wrong: each channel multiplied by its gain."""
    return np.clip(rgb.astype(np.float32) * np.asarray(rgb_gains, dtype=np.float32), 0, 255).astype(np.uint8)


def jpeg(rgb: Rgb, quality: int) -> Rgb:
    """The field saved as a JPEG of ``quality`` and read back."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.uint8)
