"""Ground truth of a field as the metrics see it: the image, per-pixel labels and the boxes.

Pixel labels come from a ``masks`` folder when given (``<id>.png`` or ``<id>_mask.png``, nonzero = bacillus),
else from the data set's own mask, else are derived from its boxes (:mod:`training.data.box_masks`). A field
known only by a mask gets one box per mask component (:func:`training.evaluation.metrics.boxes_from_mask`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.data.annotations import Box, BoxLabel, read_mask_png
from training.data.box_masks import MaskDerivation, PixelClass, label_map
from training.data.dataset import FieldFiles, image_size, read_annotation, read_rgb
from training.evaluation.metrics import boxes_from_mask

GROUND_TRUTH_NOTES = {
    "exact": "exact pixel masks",
    "derived": "pixel masks derived from boxes (approximate): see training/data/box_masks.py",
    "override": "pixel masks from the --masks folder",
}


def image_digest(image: npt.NDArray[np.uint8]) -> str:
    """A short digest of the pixels (not the file), naming cached heatmaps."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:12]


@dataclass
class FieldTruth:
    """One field as the metrics see it."""

    field_id: str
    image: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]  # PixelClass per pixel
    boxes: tuple[Box, ...]
    source: str  # a GROUND_TRUTH_NOTES key
    boxes_from_mask: bool = False
    digest: str = ""


def _override_mask(masks: Path, files: FieldFiles) -> Path:
    for name in (f"{files.field_id}.png", f"{files.field_id}_mask.png"):
        if (masks / name).is_file():
            return masks / name
    raise FileNotFoundError(f"{masks}: no {files.field_id}.png or {files.field_id}_mask.png for field {files.field_id}")


def read_truth(files: FieldFiles, masks: Path | None = None, params: MaskDerivation | None = None) -> FieldTruth:
    """Image, pixel labels and boxes of a field (module docstring)."""
    annotation, image = read_annotation(files), read_rgb(files.image)
    digest = image_digest(image)
    truth_mask: npt.NDArray[np.bool_] | None
    if masks is not None:
        override = read_mask_png(_override_mask(masks, files), files.image, image_size(files.image)).mask
        if override is None:
            raise ValueError(f"{masks}: the mask of field {files.field_id} could not be read")
        labels = np.full(image.shape[:2], PixelClass.BACKGROUND, dtype=np.uint8)
        for box in annotation.boxes_with(BoxLabel.UNCLASSIFIED):
            labels[box.slices] = PixelClass.IGNORE
        labels[override] = PixelClass.BACILLUS
        source, truth_mask = "override", override
    else:
        labels = label_map(annotation, image, params or MaskDerivation())
        source = "exact" if annotation.mask is not None else "derived"
        truth_mask = annotation.mask
    boxes, from_mask = annotation.boxes, False
    if not boxes and truth_mask is not None:
        boxes, from_mask = boxes_from_mask(truth_mask), True
    return FieldTruth(files.field_id, image, labels, boxes, source, from_mask, digest)
