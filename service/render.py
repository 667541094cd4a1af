"""Images for people and for clients: mask PNG, heatmap PNG/TIFF, overlay with bacilli outlined."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image
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


def thumbnail(
    rgb: npt.NDArray[np.uint8], bbox: tuple[int, int, int, int], size: int, context: float = 1.0, min_px: int = 48
) -> npt.NDArray[np.uint8]:
    """A crop of the field around ``bbox`` (x, y, width, height) with ``context`` × its size around it (at least
    ``min_px`` square, clipped to the field), reduced to fit ``size`` pixels (never enlarged), with the object's
    box marked by its corners."""
    height, width = rgb.shape[:2]
    x, y, w, h = bbox
    side = max(int(max(w, h) * (1 + 2 * context)), min_px)
    x0, y0 = max(int(x + w / 2 - side / 2), 0), max(int(y + h / 2 - side / 2), 0)
    x1, y1 = min(x0 + side, width), min(y0 + side, height)
    crop = rgb[y0:y1, x0:x1]
    scale = min(1.0, size / max(crop.shape[:2]))
    if scale < 1.0:
        shape = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = np.asarray(Image.fromarray(crop).resize(shape, Image.Resampling.BOX), dtype=np.uint8)
    shown = crop.copy()
    rows, cols = shown.shape[:2]
    left, top = int((x - x0) * scale) - 1, int((y - y0) * scale) - 1
    right, bottom = int((x - x0 + w) * scale), int((y - y0 + h) * scale)
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, cols - 1), min(bottom, rows - 1)
    arm = max(2, min(right - left, bottom - top) // 3)
    for yy in (top, bottom):
        shown[yy, left : min(left + arm, cols)] = OUTLINE_COLOUR
        shown[yy, max(right - arm + 1, 0) : right + 1] = OUTLINE_COLOUR
    for xx in (left, right):
        shown[top : min(top + arm, rows), xx] = OUTLINE_COLOUR
        shown[max(bottom - arm + 1, 0) : bottom + 1, xx] = OUTLINE_COLOUR
    return shown
