"""The size of a lab's bacilli in pixels, from its annotated single bacilli: the pixel size of its microscope.

Inside each ``single bacillus`` box the stained rod is the largest connected set of pixels markedly redder than the
field (CIE a* more than :data:`REDDER` above the field's median); its length is that of the rectangle with the same
second moments along its principal axis (``sqrt(12 λ₁)``). *M. tuberculosis* rods are 2–4 µm long
(:data:`ROD_LENGTH_UM` = 3 µm is taken), so a lab's pixel size is ``3 µm / median rod length``: an estimate good to
about ±33% in absolute terms, but the same measure on two labs' fields gives the ratio of their scales, which is what
resampling needs. The rod width is reported too, and not used: optics blur it by more than it measures (a 0.4 µm rod
images 0.6–0.8 µm wide).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from tqdm import tqdm

from training.data.annotations import BoxLabel
from training.data.colour import srgb_to_lab
from training.data.dataset import FieldFiles, read_annotation, read_rgb

REDDER = 15.0
ROD_LENGTH_UM = 3.0
MIN_ROD_PX = 4


@dataclass(frozen=True)
class RodSizes:
    """Rods measured in a lab's single-bacillus boxes."""

    rods: int
    boxes: int
    length_px_median: float
    length_px_iqr: tuple[float, float]
    width_px_median: float

    @property
    def pixel_size_um(self) -> float:
        return ROD_LENGTH_UM / self.length_px_median

    def evidence(self) -> dict[str, object]:
        return {
            "single_bacillus_boxes": self.boxes,
            "rods_measured": self.rods,
            "rod_length_px_median": round(self.length_px_median, 2),
            "rod_length_px_iqr": [round(v, 2) for v in self.length_px_iqr],
            "rod_width_px_median": round(self.width_px_median, 2),
            "rod_length_um_assumed": ROD_LENGTH_UM,
        }


def measure_rods(fields: list[FieldFiles]) -> RodSizes:
    """The rods of the fields' single-bacillus boxes (module docstring).

    Raises:
        ValueError: no rod could be measured.
    """
    lengths, widths, boxes = [], [], 0
    for files in tqdm(fields, desc="rods", unit="field", leave=False):
        rgb = read_rgb(files.image)
        redness = srgb_to_lab(rgb.astype(np.float32))[..., 1]
        redness -= np.median(redness[::4, ::4])
        for box in read_annotation(files).boxes_with(BoxLabel.SINGLE_BACILLUS):
            boxes += 1
            labels, n = ndi.label(redness[box.slices] > REDDER)
            if n == 0:
                continue
            largest = int(np.argmax(ndi.sum_labels(np.ones_like(labels), labels, range(1, n + 1)))) + 1
            ys, xs = np.nonzero(labels == largest)
            if len(ys) < MIN_ROD_PX:
                continue
            eig = np.sort(np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(np.float64))))[::-1]
            lengths.append(float(np.sqrt(12 * eig[0])))
            widths.append(float(np.sqrt(12 * max(eig[1], 1 / 12))))
    if not lengths:
        raise ValueError(f"no rod measured in {boxes} single-bacillus boxes of {len(fields)} fields")
    q1, q3 = np.percentile(lengths, [25, 75])
    return RodSizes(len(lengths), boxes, float(np.median(lengths)), (float(q1), float(q3)), float(np.median(widths)))


def fields_of(root: Path, ids: tuple[str, ...] | None = None) -> list[FieldFiles]:
    from training.data.dataset import discover_fields

    fields = discover_fields(root)
    return [f for f in fields if ids is None or f.field_id in set(ids)]
