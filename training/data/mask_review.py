"""Bacillus masks of a data set for a person to check (``python -m training masks``).

For each field: ``<id>_mask.png`` (the mask: the data set's own, or derived from its boxes), ``<id>_overlay.png``
(the field with the mask and boxes drawn) and ``<id>_boxes.png`` (a zoomed gallery of every box with the mask's
outline); and ``masks_summary.csv`` with the boxes and mask pixels of every field.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from dataclasses import fields as columns
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from training.data.annotations import AnnotationError, BoxLabel
from training.data.box_masks import BoxMask, MaskDerivation, derive_bacillus_mask
from training.data.dataset import discover_fields, read_annotation, read_rgb
from training.data.overlays import box_gallery, draw_overlay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldMasks:
    """One row of ``masks_summary.csv``."""

    field: str
    single_bacillus_boxes: int
    cluster_boxes: int
    unclassified_boxes: int
    artifact_boxes: int
    bacillus_pixels: int
    bacillus_fraction: float
    empty_bacillus_boxes: int
    median_box_fill: float | None  # share of a bacillus box's pixels in the mask; None for mask-only fields


def write_mask_review(
    data: Path, out: Path, params: MaskDerivation, field_ids: Iterable[str] | None = None
) -> list[FieldMasks]:
    """Write the masks, overlays and galleries of ``data`` (all fields, or ``field_ids``) into ``out``.

    Returns:
        the rows of ``masks_summary.csv``.

    Raises:
        AnnotationError: an unknown field id, or a field that cannot be read.
    """
    fields = discover_fields(data)
    if field_ids is not None:
        wanted = set(field_ids)
        unknown = wanted - {f.field_id for f in fields}
        if unknown:
            raise AnnotationError(data, f"no such field(s): {', '.join(sorted(unknown))}")
        fields = [f for f in fields if f.field_id in wanted]
    out.mkdir(parents=True, exist_ok=True)
    rows: list[FieldMasks] = []
    for files in tqdm(fields, desc="masks", unit="field"):
        annotation = read_annotation(files)
        image = read_rgb(files.image)
        found: list[BoxMask] = []
        if annotation.mask is not None:
            mask = annotation.mask
        else:
            mask, found = derive_bacillus_mask(image, annotation.boxes, params)
        fid = files.field_id
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(out / f"{fid}_mask.png")
        draw_overlay(image, mask, annotation.boxes).save(out / f"{fid}_overlay.png")
        if annotation.boxes:
            box_gallery(image, mask, annotation.boxes).save(out / f"{fid}_boxes.png")
        labels = Counter(b.label for b in annotation.boxes)
        fills = [s.pixels_inside_box / (s.box.width * s.box.height) for s in found]
        rows.append(
            FieldMasks(
                field=fid,
                single_bacillus_boxes=labels[BoxLabel.SINGLE_BACILLUS],
                cluster_boxes=labels[BoxLabel.BACILLI_CLUSTER],
                unclassified_boxes=labels[BoxLabel.UNCLASSIFIED],
                artifact_boxes=labels[BoxLabel.ARTIFACT],
                bacillus_pixels=int(mask.sum()),
                bacillus_fraction=round(float(mask.mean()), 6),
                empty_bacillus_boxes=sum(1 for s in found if s.pixels == 0),
                median_box_fill=round(float(np.median(fills)), 4) if fills else None,
            )
        )
    with (out / "masks_summary.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c.name for c in columns(FieldMasks)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    log.info(
        "%d fields: %d bacillus pixels (%.3f%% of all), %d bacillus boxes with no derived pixel; written to %s",
        len(rows),
        sum(r.bacillus_pixels for r in rows),
        100 * float(np.mean([r.bacillus_fraction for r in rows])),
        sum(r.empty_bacillus_boxes for r in rows),
        out,
    )
    return rows
