"""Whole fields of every lab we have, each at the scale the service reads it at with the lab's pixel size known.

* ZNSM-iDB MS-2, the model's own microscope: as stored (×1);
* ZNSM-iDB MS-1: at its pixel size against the model's (×2.10, from the rods: ``docs/results.md`` section 13);
* UFAM DDS1's negative fields: as uploaded (×1, a lab that gives no pixel size) and at its lab profile's pixel size
  (×2.5).

Which fields come from each lab's split (``train``, ``validation`` or ``test``: UFAM's by slide) is the caller's
choice; fine-tuning and int8 calibration take train fields, choices are made on validation fields, test fields
report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.engine.scale import resample
from training.data.dataset import discover_fields, read_rgb
from training.data.split import DatasetSplit
from training.data.ufam import UfamSet, read_ufam
from training.paths import UFAM_DDS1, UFAM_DDS1_SPLIT, ZNSM_MS1, ZNSM_MS1_SPLIT, ZNSM_MS2, ZNSM_MS2_SPLIT

MS1_FACTOR = 0.1357 / 0.06461  # MS-1's rods against MS-2's (docs/results.md section 13)
UFAM_FACTOR = 2.5  # UFAM's lab profile (labs/ufam-dds1, v3)

Rgb = npt.NDArray[np.uint8]


def scaled(rgb: Rgb, factor: float) -> Rgb:
    """``rgb`` resampled by ``factor`` as the engine resamples a field (itself when the factor is 1)."""
    if factor == 1.0:
        return rgb
    height, width = rgb.shape[:2]
    return resample(rgb, (round(width * factor), round(height * factor)))


def ufam_part(subset: str, root: Path = UFAM_DDS1, split: Path = UFAM_DDS1_SPLIT) -> UfamSet:
    """UFAM DDS1's patches and negative fields of the slides in ``subset`` of its split."""
    return read_ufam(root).of_slides(DatasetSplit.load(split).subset(subset))


def every_lab_fields(subset: str, limit: int) -> dict[str, list[tuple[str, Rgb]]]:
    """Fields of ``subset`` of every lab, at most ``limit`` per ZNSM microscope, by lab and scale (module doc)."""
    out: dict[str, list[tuple[str, Rgb]]] = {}
    for lab, data, split_path, factor in (
        ("znsm-ms2", ZNSM_MS2, ZNSM_MS2_SPLIT, 1.0),
        (f"znsm-ms1 ×{MS1_FACTOR:.2f}", ZNSM_MS1, ZNSM_MS1_SPLIT, MS1_FACTOR),
    ):
        fields = {f.field_id: f for f in discover_fields(data)}
        ids = DatasetSplit.load(split_path).subset(subset)[:limit]
        out[lab] = [(i, scaled(read_rgb(fields[i].image), factor)) for i in ids]
    negatives = ufam_part(subset).negatives
    for factor in (1.0, UFAM_FACTOR):
        out[f"ufam-dds1 negatives ×{factor:g}"] = [(n.field_id, scaled(read_rgb(n.path), factor)) for n in negatives]
    return out
