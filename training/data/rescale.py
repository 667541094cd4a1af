"""A lab's annotated fields at another scale: what fine-tuning trains on when the lab's pixel size is not the model's.

The service reads a field at the model's scale (:mod:`service.engine.scale`); a model fine-tuned on a lab's fields
must learn them at that scale too. :func:`rescaled_copy` writes the fields resampled with the engine's own
:func:`~service.engine.scale.resample` (area averaging down, bicubic up) and their annotations scaled with them, in
the layout they came in (ZNSM CSV, VOC XML, points CSV; masks by nearest neighbour), so every reader and sampler of
the data layer works on the copy unchanged. Points keep their place; the box a point stands for is drawn at the
model's scale by the reader, as for any point.

UFAM-style folders (negative fields laid back from patches, with interpolated rows at fixed positions) are not
rescaled: their interpolated rows are defined at the set's own scale.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from service.engine.scale import resample, resample_mask
from training.data.annotations import (
    Box,
    write_mask_png,
    write_points_csv,
    write_voc_xml,
    write_znsm_csv,
)
from training.data.dataset import ZNSM_SUFFIX, AnnotationKind, discover_fields, read_annotation, read_rgb

log = logging.getLogger(__name__)


def _scaled(box: Box, factor: float, size: tuple[int, int]) -> Box:
    x0, y0 = round(box.x * factor), round(box.y * factor)
    x1 = min(size[0], max(x0 + 1, round((box.x + box.width) * factor)))
    y1 = min(size[1], max(y0 + 1, round((box.y + box.height) * factor)))
    return Box(box.label, x0, y0, x1 - x0, y1 - y0)


def rescaled_copy(root: Path, factor: float, cache: Path) -> Path:
    """``root``'s fields resampled by ``factor`` under ``cache`` (made once per folder content and factor); ``root``
    itself at factor 1.

    Raises:
        ValueError: a UFAM-style folder (module docstring).
        AnnotationError: an unreadable annotation, naming the file.
    """
    if factor == 1.0:
        return root
    if (root / "negatives").is_dir() or (root / "positives").is_dir():
        raise ValueError(
            f"{root}: a UFAM-style folder cannot be rescaled (its interpolated rows lie at its own scale); give "
            "whole annotated fields"
        )
    fields = discover_fields(root)
    key = hashlib.sha256(
        json.dumps([round(factor, 6), [(str(f.image), f.image.stat().st_mtime_ns) for f in fields]]).encode()
    ).hexdigest()[:12]
    out = cache / "rescaled" / f"{root.name}-x{factor:.3g}-{key}"
    done = out / ".done"
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for files in tqdm(fields, desc=f"rescale ×{factor:.3g}", unit="field", leave=False):
        rgb = read_rgb(files.image)
        size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
        name = f"{files.field_id}.png"
        annotation = read_annotation(files)
        boxes = tuple(_scaled(b, factor, size) for b in annotation.boxes)
        if files.kind is AnnotationKind.VOC_XML:  # flat: image and XML side by side
            Image.fromarray(resample(rgb, size)).save(out / name)
            write_voc_xml(out / f"{files.field_id}.xml", name, size, boxes)
            continue
        (out / "images").mkdir(exist_ok=True)
        Image.fromarray(resample(rgb, size)).save(out / "images" / name)
        if files.kind is AnnotationKind.ZNSM_CSV:
            (out / "annotations").mkdir(exist_ok=True)
            write_znsm_csv(out / "annotations" / f"{files.field_id}{ZNSM_SUFFIX}", name, size, boxes)
        elif files.kind is AnnotationKind.POINTS_CSV:
            (out / "annotations").mkdir(exist_ok=True)
            write_points_csv(out / "annotations" / f"{files.field_id}.csv", boxes)
        else:
            mask = annotation.mask if annotation.mask is not None else np.zeros(rgb.shape[:2], bool)
            (out / "masks").mkdir(exist_ok=True)
            write_mask_png(out / "masks" / name, resample_mask(mask, size))
    done.write_text(json.dumps({"source": str(root), "factor": factor, "fields": len(fields)}) + "\n")
    log.info("%s: %d fields rescaled ×%.3g to the model's scale → %s", root, len(fields), factor, out)
    return out
