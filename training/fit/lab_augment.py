"""Augmentation for what differs between labs: scale, stain, illumination, focus, noise and JPEG compression.

Used by the multi-lab recipes (:mod:`training.fit.recipes`). Patches are sampled larger than the receptive field
(:data:`SOURCE_PATCH_PX`), so a zoom out or a rotation still has real pixels in every corner; each is then mapped
to a ``45 × 45`` patch around the same centre pixel, so its label stays true. In order:

1. geometry: a rotation by any angle, a mirror flip, and a zoom by :data:`ZOOM` (bacilli from about 3 to 8 px
   wide, as on other microscopes and cameras), bilinear;
2. stain: in optical density against the reference background (fields are normalised to it first,
   :mod:`service.engine.normalisation`), the density scaled by a factor in :data:`STAIN_DENSITY` and each channel
   by ``1 ± STAIN_HUE`` (paler or heavier stain, another carbol fuchsin or counterstain hue);
3. illumination: a per-channel gain ``1 ± ILLUMINATION_GAIN`` (what the normalisation leaves) times a linear
   gradient across the patch of up to ``ILLUMINATION_GRADIENT`` (uneven Köhler illumination);
4. defocus: a Gaussian blur (probability :data:`BLUR_PROBABILITY`, sigma in :data:`BLUR_SIGMA`);
5. sensor noise: Gaussian (probability :data:`NOISE_PROBABILITY`, sigma up to :data:`NOISE_SIGMA`);
6. JPEG: re-encoded at a quality in :data:`JPEG_QUALITY` (probability :data:`JPEG_PROBABILITY`).

A patch's draws come from the generator passed in: epochs and batches are seeded, so a run repeats.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage as ndi

PATCH_PX = 45
SOURCE_PATCH_PX = 91  # a 45 px patch rotated by 45° and zoomed out by 0.7 reads pixels up to 45 px from the centre
ZOOM = (0.7, 1.45)
STAIN_DENSITY = (0.6, 1.5)
STAIN_HUE = 0.15
ILLUMINATION_GAIN = 0.1
ILLUMINATION_GRADIENT = 0.1
BLUR_PROBABILITY, BLUR_SIGMA = 0.3, (0.3, 1.5)
NOISE_PROBABILITY, NOISE_SIGMA = 0.5, 0.03
JPEG_PROBABILITY, JPEG_QUALITY = 0.3, (30, 90)


def _grid(size: int) -> npt.NDArray[np.float64]:
    offsets = np.arange(size, dtype=np.float64) - size // 2
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()])


def geometry(
    patch: npt.NDArray[np.float32], angle: float, zoom: float, flip: bool, out_px: int = PATCH_PX
) -> npt.NDArray[np.float32]:
    """The ``out_px`` patch around ``patch``'s centre pixel, rotated by ``angle`` (radians), flipped and zoomed
    (``zoom`` > 1 makes objects larger). Bilinear; pixels beyond the source patch are mirrored."""
    centre = patch.shape[0] // 2
    points = _grid(out_px)
    if flip:
        points[1] = -points[1]
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]]) / zoom
    source = rotation @ points + centre
    out = np.empty((out_px, out_px, patch.shape[2]), dtype=np.float32)
    for c in range(patch.shape[2]):
        out[..., c] = ndi.map_coordinates(patch[..., c], source, order=1, mode="mirror").reshape(out_px, out_px)
    return out


def augment_labs(
    patches: npt.NDArray[np.uint8], rng: np.random.Generator, reference_rgb: tuple[float, float, float]
) -> npt.NDArray[np.float32]:
    """``[n, SOURCE_PATCH_PX, SOURCE_PATCH_PX, 3]`` uint8 → ``[n, 45, 45, 3]`` float32 in [0, 1], augmented
    (module docstring). ``reference_rgb``: the normalisation's reference background (0..255)."""
    n = patches.shape[0]
    background = np.asarray(reference_rgb, dtype=np.float32) / 255.0
    out = np.empty((n, PATCH_PX, PATCH_PX, 3), dtype=np.float32)
    ramp = _grid(PATCH_PX).reshape(2, PATCH_PX, PATCH_PX).astype(np.float32) / (PATCH_PX // 2)
    for i in range(n):
        x = patches[i].astype(np.float32) / 255.0
        x = geometry(x, rng.uniform(0, 2 * np.pi), float(np.exp(rng.uniform(*np.log(ZOOM)))), bool(rng.random() < 0.5))
        density = -np.log(np.clip(x / background, 1e-3, None))
        scale = rng.uniform(*STAIN_DENSITY) * (1 + rng.uniform(-STAIN_HUE, STAIN_HUE, 3)).astype(np.float32)
        x = background * np.exp(-density * scale)
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-9
        gradient = 1 + rng.uniform(0, ILLUMINATION_GRADIENT) * (direction[0] * ramp[0] + direction[1] * ramp[1])
        x = x * gradient[..., None] * (1 + rng.uniform(-ILLUMINATION_GAIN, ILLUMINATION_GAIN, 3)).astype(np.float32)
        if rng.random() < BLUR_PROBABILITY:
            x = ndi.gaussian_filter(x, sigma=(*(rng.uniform(*BLUR_SIGMA),) * 2, 0), mode="mirror")
        if rng.random() < NOISE_PROBABILITY:
            x = x + rng.normal(0, rng.uniform(0, NOISE_SIGMA), x.shape).astype(np.float32)
        x = np.clip(x, 0.0, 1.0)
        if rng.random() < JPEG_PROBABILITY:
            buffer = io.BytesIO()
            Image.fromarray(np.rint(x * 255).astype(np.uint8)).save(
                buffer, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
            )
            x = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
        out[i] = x
    return out


def centre_crop(patches: npt.NDArray[np.uint8], out_px: int = PATCH_PX) -> npt.NDArray[np.uint8]:
    """The ``out_px`` centre of each patch (validation patches: no augmentation)."""
    start = patches.shape[1] // 2 - out_px // 2
    return patches[:, start : start + out_px, start : start + out_px]
