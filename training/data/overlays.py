"""Pictures for a person checking derived masks: whole-field overlays and galleries of zoomed boxes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from training.data.annotations import Box, BoxLabel

BOX_COLOURS: dict[BoxLabel, tuple[int, int, int]] = {
    BoxLabel.SINGLE_BACILLUS: (255, 215, 0),
    BoxLabel.BACILLI_CLUSTER: (255, 140, 0),
    BoxLabel.UNCLASSIFIED: (0, 200, 255),
    BoxLabel.ARTIFACT: (255, 255, 255),
}
MASK_COLOUR = (0, 230, 0)


def outline(mask: npt.NDArray[np.bool_], thickness: int = 1) -> npt.NDArray[np.bool_]:
    """The pixels of ``mask`` within ``thickness`` of its edge."""
    return mask & ~ndi.binary_erosion(mask, iterations=thickness, border_value=0)


def draw_overlay(
    image: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], boxes: tuple[Box, ...], line_px: int = 3
) -> Image.Image:
    """The field with the mask outlined in green and each box in its label's colour."""
    shown = image.copy()
    shown[outline(mask, max(1, line_px - 1))] = MASK_COLOUR
    picture = Image.fromarray(shown)
    draw = ImageDraw.Draw(picture)
    for b in boxes:
        draw.rectangle([b.x, b.y, b.x + b.width - 1, b.y + b.height - 1], outline=BOX_COLOURS[b.label], width=line_px)
    return picture


def box_gallery(
    image: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    boxes: tuple[Box, ...],
    context_px: int = 16,
    zoom: int = 2,
    tile_px: int = 200,
    per_row: int = 6,
) -> Image.Image:
    """One tile per box: the crop as it is (left) and with the mask outlined (right), zoomed.

    Boxes are drawn in their label's colour, so unclassified and artifact boxes (which must stay empty) are
    as easy to check as bacillus boxes.
    """
    tiles = []
    height, width = image.shape[:2]
    for b in boxes:
        y0, y1 = max(b.y - context_px, 0), min(b.y + b.height + context_px, height)
        x0, x1 = max(b.x - context_px, 0), min(b.x + b.width + context_px, width)
        crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        marked = crop.copy()
        marked[outline(crop_mask)] = MASK_COLOUR
        pair = Image.fromarray(np.concatenate([crop, marked], axis=1))
        pair = pair.resize((pair.width * zoom, pair.height * zoom), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(pair)
        for left in (0, crop.shape[1] * zoom):
            corner = (left + (b.x - x0) * zoom, (b.y - y0) * zoom)
            draw.rectangle(
                [corner, (corner[0] + b.width * zoom - 1, corner[1] + b.height * zoom - 1)],
                outline=BOX_COLOURS[b.label],
            )
        pair.thumbnail((2 * tile_px, tile_px))
        tiles.append(pair)
    rows = max(1, -(-len(tiles) // per_row))
    sheet = Image.new("RGB", (per_row * 2 * tile_px, rows * tile_px), (24, 24, 24))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % per_row) * 2 * tile_px, (i // per_row) * tile_px))
    return sheet
