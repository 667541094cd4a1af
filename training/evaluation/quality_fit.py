"""The field quality check's limits, chosen on validation fields of every lab (``python -m training quality``).

The fields (:func:`lab_fields`), each read at the model's scale as the service reads it with its pixel size:

* ZNSM-iDB MS-2 (the model's microscope): the split's train and validation fields, as they are;
* ZNSM-iDB MS-1: its split's train fields, at its pixel size against the model's (×2.10 from the rods);
* UFAM DDS1: the negative fields of its train and validation slides, at its lab profile's pixel size (×2.5).

Test fields (MS-2's test split, MS-1's validation and test fields, UFAM's test slides) are never read here: the
benchmark (``bench/quality_check.py``) reads them.

The rule (:func:`fit_limits`):

* **focus**: the line between readable and not is a Gaussian blur of :data:`BLUR_LINE_PX` px at the model's scale
  (0.52 µm at 0.0646 µm per pixel: the imaged width of a rod, beyond which a thin rod is no longer told from a
  smudge; the benchmark reports the model's recall on either side of it). Each validation field is blurred at the
  line, its pixel noise added back (:mod:`training.data.degrade`); the limit is midway between the least sharp real
  field and the sharpest blurred one when they separate, else just under the least sharp real field
  (:data:`FOCUS_MARGIN`), so that no real field is called unreadable, and the blurred copies above it are counted.
  Fields with almost nothing stained (under :data:`~service.engine.quality.FOCUS_MIN_STAINED`) have no edges and
  take no part in it (the service does not judge their focus either).
* every other measurement: the range of the real validation fields widened :data:`MARGIN` times about their
  median, on the side(s) where a bad field lies (:data:`SIDES`), with a floor for the shares a good field may
  have at zero (:data:`FLOORS`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.engine.quality import FOCUS_MIN_STAINED, MEASURES, Limit, QualityModel, measure_field
from service.engine.scale import resample
from training.data.dataset import discover_fields, read_rgb
from training.data.degrade import gaussian_blur
from training.data.every_lab import MS1_FACTOR, UFAM_FACTOR
from training.data.split import DatasetSplit
from training.data.ufam import read_ufam

BLUR_LINE_PX = 8.0
FOCUS_MARGIN = 0.98
MARGIN = 2.0
SIDES = {
    "focus": "low",
    "saturated_share": "high",
    "dark_share": "high",
    "dynamic_range": "low",
    "background_brightness": "low",
    "stained_share": "both",
    "fuchsin_share": "high",
    "background_share": "low",
    "background_red_green": "both",
    "background_blue_green": "both",
    "stain_blue_share": "both",
    "stain_chroma": "low",
    "edge_share": "high",
}
FLOORS = {"saturated_share": 0.05, "dark_share": 0.05}  # the high limit is at least this


@dataclass(frozen=True)
class LabFields:
    """A lab's fields for the quality check and the factor that brings them to the model's scale."""

    lab: str
    paths: tuple[Path, ...]
    factor: float

    def read(self) -> Iterator[tuple[Path, np.ndarray]]:
        for path in self.paths:
            rgb = read_rgb(path)
            if self.factor != 1.0:
                h, w = rgb.shape[:2]
                rgb = resample(rgb, (round(w * self.factor), round(h * self.factor)))
            yield path, rgb


def lab_fields(
    ms2: Path, ms2_split: Path, ms1: Path, ms1_split: Path, ufam: Path, ufam_split: Path, part: str
) -> list[LabFields]:
    """Every lab's fields of ``part``: ``validation`` (what limits are chosen on) or ``test`` (module docstring)."""
    s2, s1, su = DatasetSplit.load(ms2_split), DatasetSplit.load(ms1_split), DatasetSplit.load(ufam_split)
    if part == "validation":
        ids2, ids1, slides = {*s2.train, *s2.validation}, set(s1.train), {*su.train, *su.validation}
    elif part == "test":
        ids2, ids1, slides = set(s2.test), {*s1.validation, *s1.test}, set(su.test)
    else:
        raise ValueError(f"part {part!r}: validation or test")
    negatives = read_ufam(ufam).of_slides(sorted(slides)).negatives
    return [
        LabFields("znsm-ms2", tuple(f.image for f in discover_fields(ms2) if f.field_id in ids2), 1.0),
        LabFields("znsm-ms1", tuple(f.image for f in discover_fields(ms1) if f.field_id in ids1), MS1_FACTOR),
        LabFields("ufam-dds1", tuple(n.path for n in negatives), UFAM_FACTOR),
    ]


def _limit(name: str, values: np.ndarray, blurred: np.ndarray | None) -> tuple[Limit, dict[str, object]]:
    median, low, high = float(np.median(values)), float(values.min()), float(values.max())
    said: dict[str, object] = {"median": round(median, 4), "min": round(low, 4), "max": round(high, 4)}
    if name == "focus" and blurred is not None:
        sharpest_blurred = float(blurred.max())
        if low > sharpest_blurred:
            cut = (low + sharpest_blurred) / 2
            said["rule"] = "midway between the least sharp real field and the sharpest blurred copy"
        else:
            cut = low * FOCUS_MARGIN
            said["rule"] = (
                f"real and blurred overlap: {FOCUS_MARGIN:g} × the least sharp real field (no real field is called "
                "unreadable; blurred copies above it are counted)"
            )
        said["blurred_max"] = round(sharpest_blurred, 4)
        said["blurred_above_limit"] = int((blurred >= cut).sum())
        said["blurred_copies"] = len(blurred)
        return Limit(round(cut, 4), None), said
    side = SIDES[name]
    lower = median - MARGIN * (median - low) if side in ("low", "both") else None
    upper = median + MARGIN * (high - median) if side in ("high", "both") else None
    if upper is not None and name in FLOORS:
        upper = max(upper, FLOORS[name])
    if upper is not None and name.endswith("_share") and upper >= 1.0:
        upper = None  # a share cannot exceed 1: no bound
    if lower is not None and lower <= 0:
        lower = low / MARGIN  # a share or brightness: half the smallest seen rather than nothing
    return Limit(None if lower is None else round(lower, 5), None if upper is None else round(upper, 5)), said


def fit_limits(model_id: str, labs: list[LabFields]) -> QualityModel:
    """Measure every lab's validation fields and their blurred copies; the limits by the module's rule."""
    rows: list[dict[str, float]] = []
    blurred: list[float] = []  # focus of the blurred copies of the fields with something on them
    per_lab: dict[str, int] = {}
    for lab in labs:
        per_lab[lab.lab] = len(lab.paths)
        for _path, rgb in tqdm(lab.read(), total=len(lab.paths), desc=f"quality {lab.lab}", unit="field"):
            rows.append(measure_field(rgb))
            if rows[-1]["stained_share"] >= FOCUS_MIN_STAINED:
                blurred.append(measure_field(gaussian_blur(rgb, BLUR_LINE_PX, seed=len(rows)))["focus"])
    limits: dict[str, Limit] = {}
    evidence: dict[str, object] = {}
    for m in MEASURES:
        judged = [r for r in rows if m.name != "focus" or r["stained_share"] >= FOCUS_MIN_STAINED]
        values = np.asarray([r[m.name] for r in judged], dtype=np.float64)
        limit, said = _limit(m.name, values, np.asarray(blurred) if m.name == "focus" else None)
        limits[m.name], evidence[m.name] = limit, said
    readable = sum(QualityModel(model_id, limits, "", "").check_values(r).readable for r in rows)
    source = ", ".join(f"{lab}: {n}" for lab, n in per_lab.items())
    rule = (
        f"focus: the blur line σ = {BLUR_LINE_PX:g} px at the model's scale, the limit between the real validation "
        f"fields and their copies blurred at the line (pixel noise added back); other measurements: the validation "
        f"fields' range widened {MARGIN:g}× about the median on the side(s) a bad field lies (training/evaluation/"
        "quality_fit.py)"
    )
    evidence["validation_fields"] = len(rows)
    evidence["validation_fields_readable"] = readable
    evidence["blur_line_px"] = BLUR_LINE_PX
    return QualityModel(model_id, limits, f"validation fields of every lab ({source})", rule, evidence)
