"""Images for people and for clients: mask PNG, heatmap PNG/TIFF, overlay with bacilli outlined."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from service.engine.image_io import encode_png
from service.engine.segmenter import Segmentation

OUTLINE_COLOUR = (0, 255, 0)


def mask_png_array(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """0 / 255 greyscale, same size as the field."""
    return np.where(mask, 255, 0).astype(np.uint8)


def mask_pngs(segmentation: Segmentation) -> dict[str, bytes]:
    """A field's two masks as PNG, by the kind every output names them with: ``mask`` (the paper's
    P > threshold) and ``objects`` (the kept bacilli only)."""
    return {
        "mask": encode_png(mask_png_array(segmentation.mask)),
        "objects": encode_png(mask_png_array(segmentation.objects)),
    }


def heatmap_png_array(heatmap: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """P(bacillus) × 255, rounded, as 8-bit greyscale."""
    scaled: npt.NDArray[np.float32] = np.clip(np.rint(heatmap * np.float32(255.0)), 0, 255)
    return scaled.astype(np.uint8)


def overlay(rgb: npt.NDArray[np.uint8], objects: npt.NDArray[np.bool_], thickness: int = 2) -> npt.NDArray[np.uint8]:
    """The field with each kept object's outline drawn just outside it."""
    ring = ndi.binary_dilation(objects, iterations=thickness) & ~objects
    shown = rgb.copy()
    shown[ring] = OUTLINE_COLOUR
    return shown
