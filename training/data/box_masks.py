"""Bacillus pixel masks derived from boxes, and the per-pixel training labels built on them.

Most public TB data sets mark bacilli with loose boxes, not masks. Inside each ``single bacillus`` or
``bacilli cluster`` box the rod is the red carbol-fuchsin stain against the local background, so:

1. smooth the RGB window around the box (Gaussian, ``smoothing_sigma_px``) and convert it to CIELAB;
2. estimate the background a* as the median over a ring of ``context_px`` around the box, or the field's
   median a* when that is higher (a box lying on a blue cell must not take the cell for background);
3. threshold a* inside the box at Otsu's cut, but never below background + ``min_contrast`` nor below the
   absolute ``min_a`` (near-neutral black debris on a green field is "redder" than the field, not red), and
   drop deep-blue pixels (b* under ``min_b``: dark methylene-blue nuclei have a positive a* too);
4. keep the connected components that touch the box, letting them run up to ``overshoot_px`` past its
   edge (annotators' boxes often clip the ends of a rod), and drop specks under ``min_area_px``;
5. fill holes.

``unclassified red structures`` boxes are left out of both classes (:data:`PixelClass.IGNORE`);
``artifacts`` boxes are ordinary background.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from training.data.annotations import Box, BoxLabel, FieldAnnotation
from training.data.colour import otsu_threshold, srgb_to_lab


class PixelClass(IntEnum):
    """Values of a label map: what the sampler may draw at each pixel."""

    BACKGROUND = 0
    BACILLUS = 1
    IGNORE = 255


@dataclass(frozen=True)
class MaskDerivation:
    """Parameters of the box-to-mask derivation (defaults measured on ZNSM-iDB fields at 2592×1944).

    Attributes:
        smoothing_sigma_px: Gaussian sigma applied to RGB before thresholding, against JPEG noise.
        context_px: width of the ring around a box whose median a* is the local background.
        min_contrast: least a* above the background a kept pixel must reach (CIELAB units).
    min_a: least absolute a* of a kept pixel.
    min_b: least b* of a kept pixel (deep blue below it).
        overshoot_px: how far a component seeded inside a box may extend past the box's edge.
        min_area_px: components smaller than this are specks and are dropped.
    """

    smoothing_sigma_px: float = 1.0
    context_px: int = 20
    min_contrast: float = 5.0
    min_a: float = 2.0
    min_b: float = -30.0
    overshoot_px: int = 8
    min_area_px: int = 30


@dataclass(frozen=True)
class BoxMask:
    """What the derivation found in one box, for reports and for a person checking it."""

    box: Box
    background_a: float
    field_background_a: float
    threshold_a: float
    pixels: int
    pixels_inside_box: int
    components: int


def _expand(box: Box, margin: int, width: int, height: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the box grown by ``margin`` on every side, clipped to the image."""
    return (
        max(box.y - margin, 0),
        min(box.y + box.height + margin, height),
        max(box.x - margin, 0),
        min(box.x + box.width + margin, width),
    )


def _smoothed_lab(rgb: npt.NDArray[np.uint8], sigma: float) -> npt.NDArray[np.float32]:
    window = rgb.astype(np.float32)
    if sigma > 0:
        window = ndi.gaussian_filter(window, sigma=(sigma, sigma, 0))
    return srgb_to_lab(window)


def field_background_a(image: npt.NDArray[np.uint8], step: int = 4) -> float:
    """Median a* of the field (on every ``step``-th pixel): its background, since rods cover under 1%."""
    return float(np.median(srgb_to_lab(image[::step, ::step])[..., 1]))


def _mask_one_box(
    image: npt.NDArray[np.uint8], box: Box, field_background: float, params: MaskDerivation
) -> tuple[tuple[int, int, int, int], npt.NDArray[np.bool_], BoxMask]:
    height, width = image.shape[:2]
    margin = max(params.context_px, params.overshoot_px)
    y0, y1, x0, x1 = _expand(box, margin, width, height)
    lab = _smoothed_lab(image[y0:y1, x0:x1], params.smoothing_sigma_px)
    a_star = lab[..., 1]

    inside = np.zeros(a_star.shape, dtype=bool)
    inside[box.y - y0 : box.y - y0 + box.height, box.x - x0 : box.x - x0 + box.width] = True
    gy0, gy1, gx0, gx1 = _expand(box, params.overshoot_px, width, height)
    reach = np.zeros_like(inside)
    reach[gy0 - y0 : gy1 - y0, gx0 - x0 : gx1 - x0] = True
    cy0, cy1, cx0, cx1 = _expand(box, params.context_px, width, height)
    ring = np.zeros_like(inside)
    ring[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = True
    ring &= ~inside

    local = float(np.median(a_star[ring] if ring.any() else a_star[inside]))
    background = max(local, field_background)
    threshold = max(otsu_threshold(a_star[inside]), background + params.min_contrast, params.min_a)
    candidate = (a_star > threshold) & (lab[..., 2] >= params.min_b) & reach
    labels, count = ndi.label(candidate)
    keep = np.zeros(count + 1, dtype=bool)
    if count:
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        touches = np.bincount(labels[inside].ravel(), minlength=count + 1) > 0
        keep = touches & (areas >= params.min_area_px)
        keep[0] = False
    mask = ndi.binary_fill_holes(keep[labels])
    stats = BoxMask(
        box=box,
        background_a=background,
        field_background_a=field_background,
        threshold_a=threshold,
        pixels=int(mask.sum()),
        pixels_inside_box=int((mask & inside).sum()),
        components=int(keep.sum()),
    )
    return (y0, y1, x0, x1), mask, stats


def derive_bacillus_mask(
    image: npt.NDArray[np.uint8], boxes: tuple[Box, ...], params: MaskDerivation | None = None
) -> tuple[npt.NDArray[np.bool_], list[BoxMask]]:
    """Derive the bacillus pixel mask of a field from its boxes (method in the module docstring).

    Args:
        image: ``[y, x, 3]`` uint8 RGB field.
        boxes: the field's boxes; only ``single bacillus`` and ``bacilli cluster`` boxes contribute.
        params: derivation parameters; defaults when None.

    Returns:
        the ``[y, x]`` bool mask, and one :class:`BoxMask` per bacillus box in input order.
    """
    params = params or MaskDerivation()
    mask = np.zeros(image.shape[:2], dtype=bool)
    found = []
    bacillus_boxes = [b for b in boxes if b.label.is_bacillus]
    field_background = field_background_a(image) if bacillus_boxes else 0.0
    for box in bacillus_boxes:
        (y0, y1, x0, x1), box_mask, stats = _mask_one_box(image, box, field_background, params)
        mask[y0:y1, x0:x1] |= box_mask
        found.append(stats)
    return mask, found


def label_map(
    annotation: FieldAnnotation, image: npt.NDArray[np.uint8], params: MaskDerivation | None = None
) -> npt.NDArray[np.uint8]:
    """Per-pixel training labels of a field (:class:`PixelClass` values), from its mask or its boxes.

    Bacillus pixels come from the exact mask when the data set has one, else from
    :func:`derive_bacillus_mask`. Pixels of ``unclassified red structures`` boxes are IGNORE unless they are
    bacillus pixels of an overlapping bacillus box; everything else, ``artifacts`` included, is BACKGROUND.
    """
    labels = np.full(image.shape[:2], PixelClass.BACKGROUND, dtype=np.uint8)
    for box in annotation.boxes_with(BoxLabel.UNCLASSIFIED):
        labels[box.slices] = PixelClass.IGNORE
    if annotation.mask is not None:
        bacillus = annotation.mask
    else:
        bacillus, _ = derive_bacillus_mask(image, annotation.boxes, params)
    labels[bacillus] = PixelClass.BACILLUS
    return labels
