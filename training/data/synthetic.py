"""Small synthetic Ziehl-Neelsen-like fields with exact masks, for fast tests that must not need real data.

A field has a pink, blue or yellow-green background with smooth uneven illumination and sensor noise, red
carbol-fuchsin rods (straight or bent capsules, some crossing in clusters), blue methylene-blue debris, dark
specks, and a faint red blob marked ``unclassified red structures``. The exact rod mask is the set of pixels
within the rod's half-width of its centre line; boxes are the rods' extents grown by a loose random margin,
as an annotator draws them. These images teach nothing about real smears: they only exercise the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage as ndi

from training.data.annotations import (
    Box,
    BoxLabel,
    write_mask_png,
    write_points_csv,
    write_voc_xml,
    write_znsm_csv,
)
from training.data.dataset import ZNSM_SUFFIX, AnnotationKind

BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "pink": (232.0, 198.0, 192.0),
    "blue": (188.0, 208.0, 222.0),
    "green": (206.0, 204.0, 168.0),
}
ROD_COLOUR = np.array([165.0, 45.0, 95.0])
DEBRIS_COLOUR = np.array([70.0, 85.0, 165.0])
SPECK_COLOUR = np.array([45.0, 40.0, 60.0])


@dataclass(frozen=True)
class SyntheticField:
    """A generated field: ``image`` ``[y, x, 3]`` uint8, exact bacillus ``mask`` ``[y, x]``, and its boxes."""

    field_id: str
    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.bool_]
    boxes: tuple[Box, ...]


def _rod_distance(
    shape: tuple[int, int], centre: npt.NDArray[np.float64], length: float, angle: float, bend: float
) -> npt.NDArray[np.float64]:
    """Distance of every pixel to a (possibly bent) rod centre line."""
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    t = np.linspace(-1.0, 1.0, 48)[:, None]
    line = centre + t * (length / 2) * direction + (1 - t**2) * bend * normal  # [48, 2] (y, x)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    pixels = np.stack([yy, xx], axis=-1).astype(np.float64)[..., None, :]  # [y, x, 1, 2]
    distance: npt.NDArray[np.float64] = np.sqrt(((pixels - line) ** 2).sum(-1)).min(-1)
    return distance


def _blend(image: npt.NDArray[np.float64], alpha: npt.NDArray[np.float64], colour: npt.NDArray[np.float64]) -> None:
    image *= 1 - alpha[..., None]
    image += alpha[..., None] * colour


def _loose_box(label: BoxLabel, region: npt.NDArray[np.bool_], rng: np.random.Generator) -> Box:
    ys, xs = np.nonzero(region)
    h, w = region.shape
    left, top, right, bottom = (int(m) for m in rng.integers(2, 7, size=4))
    x0, y0 = max(int(xs.min()) - left, 0), max(int(ys.min()) - top, 0)
    x1, y1 = min(int(xs.max()) + 1 + right, w), min(int(ys.max()) + 1 + bottom, h)
    return Box(label, x0, y0, x1 - x0, y1 - y0)


def synthetic_field(
    seed: int,
    height: int = 240,
    width: int = 320,
    background: str = "pink",
    rods: int = 6,
    clusters: int = 1,
    debris: int = 6,
    specks: int = 25,
    field_id: str | None = None,
) -> SyntheticField:
    """Generate one ZN-like field (see the module docstring).

    Args:
        seed: seeds everything; the same arguments give the same field.
        height, width: field size in pixels (at least 64 each).
        background: ``pink``, ``blue`` or ``green``.
        rods: single bacilli, each with a ``single bacillus`` box.
        clusters: pairs of crossing rods, each pair with one ``bacilli cluster`` box.
        debris: blue blobs; the first has an ``artifacts`` box.
        specks: small dark dots (not annotated: ordinary background).
        field_id: name of the field; ``synthetic-<seed>`` when None.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, got {background!r}")
    if height < 64 or width < 64:
        raise ValueError("synthetic fields are at least 64×64")
    rng = np.random.default_rng(seed)
    shape = (height, width)
    illumination = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma=min(shape) / 6)
    illumination *= 8.0 / max(float(np.abs(illumination).max()), 1e-9)
    image = np.array(BACKGROUNDS[background]) + illumination[..., None]
    boxes: list[Box] = []
    yy, xx = np.mgrid[0:height, 0:width]

    def random_centre(margin: float) -> npt.NDArray[np.float64]:
        return np.array([rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)])

    for index in range(debris):
        c, r = random_centre(16), rng.uniform(5, 12, size=2)
        d = np.sqrt(((yy - c[0]) / r[0]) ** 2 + ((xx - c[1]) / r[1]) ** 2)
        alpha = 0.85 * np.clip((1.0 - d) * 4, 0, 1)
        _blend(image, alpha, DEBRIS_COLOUR)
        if index == 0:
            boxes.append(_loose_box(BoxLabel.ARTIFACT, alpha > 0.1, rng))
    for _ in range(specks):
        c, radius = random_centre(4), rng.uniform(0.8, 2.0)
        _blend(image, np.clip(radius + 0.5 - np.hypot(yy - c[0], xx - c[1]), 0, 1), SPECK_COLOUR)
    # A faint, round red structure that an expert would not call a bacillus.
    c = random_centre(12)
    blob = np.clip(5.5 - np.hypot(yy - c[0], xx - c[1]), 0, 1) * 0.45
    _blend(image, blob, ROD_COLOUR)
    boxes.append(_loose_box(BoxLabel.UNCLASSIFIED, blob > 0.05, rng))

    mask = np.zeros(shape, dtype=bool)
    groups = [1] * rods + [2] * clusters
    for members in groups:
        group = np.zeros(shape, dtype=bool)
        centre, angle = random_centre(26), rng.uniform(0, np.pi)
        for member in range(members):
            length, half_width = rng.uniform(18, 34), rng.uniform(2.0, 3.0)
            offset = rng.normal(0, 3, size=2) if member else np.zeros(2)
            rod_angle = angle + (rng.uniform(0.6, 1.2) if member else 0.0)
            d = _rod_distance(shape, centre + offset, length, rod_angle, rng.uniform(-3, 3))
            colour = ROD_COLOUR + rng.normal(0, 8, size=3)
            _blend(image, np.clip(half_width + 0.5 - d, 0, 1), colour)
            group |= d <= half_width
        mask |= group
        label = BoxLabel.SINGLE_BACILLUS if members == 1 else BoxLabel.BACILLI_CLUSTER
        boxes.append(_loose_box(label, group, rng))

    image += rng.normal(0, 3.0, image.shape)
    pixels = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return SyntheticField(field_id or f"synthetic-{seed}", pixels, mask, tuple(boxes))


def write_dataset(root: Path, fields: list[SyntheticField], kind: AnnotationKind) -> Path:
    """Write fields as a data set folder that :func:`training.data.dataset.discover_fields` reads.

    Layouts: ZNSM-iDB CSVs as ``images/`` + ``annotations/``; Pascal VOC flat (image and XML side by side);
    masks as ``images/`` + ``masks/``; points as ``images/`` + ``annotations/<stem>.csv`` (box
    centres). Images are PNG, so pixels are exact.

    Returns:
        ``root``.
    """
    root = Path(root)
    flat = kind is AnnotationKind.VOC_XML
    image_dir = root if flat else root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for field in fields:
        name = f"{field.field_id}.png"
        Image.fromarray(field.image).save(image_dir / name)
        size = (field.image.shape[1], field.image.shape[0])
        if kind is AnnotationKind.ZNSM_CSV:
            (root / "annotations").mkdir(exist_ok=True)
            write_znsm_csv(root / "annotations" / f"{field.field_id}{ZNSM_SUFFIX}", name, size, field.boxes)
        elif kind is AnnotationKind.VOC_XML:
            write_voc_xml(root / f"{field.field_id}.xml", name, size, field.boxes)
        elif kind is AnnotationKind.POINTS_CSV:
            (root / "annotations").mkdir(exist_ok=True)
            write_points_csv(root / "annotations" / f"{field.field_id}.csv", field.boxes)
        else:
            (root / "masks").mkdir(exist_ok=True)
            write_mask_png(root / "masks" / name, field.mask)
    return root


def write_synthetic_dataset(
    out: Path, kind: AnnotationKind, count: int = 6, seed: int = 0, size: tuple[int, int] = (320, 240)
) -> Path:
    """``count`` synthetic fields of ``size`` (width, height), backgrounds in turn, written as a data set of
    ``kind`` (``python -m training synth``)."""
    backgrounds = sorted(BACKGROUNDS)
    width, height = size
    fields = [
        synthetic_field(
            seed + i, height=height, width=width, background=backgrounds[i % len(backgrounds)], field_id=str(i + 1)
        )
        for i in range(count)
    ]
    return write_dataset(out, fields, kind)


def write_synthetic_ufam(
    root: Path, slides: int = 4, seed: int = 0, patch_px: int = 40, field_size: tuple[int, int] = (200, 150)
) -> Path:
    """A small set in the UFAM DDS1 layout (:mod:`training.data.ufam`): per slide ``S0k``, one negative field (a
    synthetic field without rods or clusters) and ``patch_px`` patches centred on each rod of one synthetic field,
    named ``S0kTR1T00<n>PP<m>.png``.

    Returns:
        ``root``.
    """
    root = Path(root)
    (root / "negatives").mkdir(parents=True, exist_ok=True)
    (root / "positives").mkdir(parents=True, exist_ok=True)
    width, height = field_size
    backgrounds = sorted(BACKGROUNDS)
    half = patch_px // 2
    for k in range(1, slides + 1):
        background = backgrounds[k % len(backgrounds)]
        negative = synthetic_field(seed + 100 + k, height, width, background, rods=0, clusters=0)
        Image.fromarray(negative.image).save(root / "negatives" / f"S{k:02d}TR1T001.png")
        positive = synthetic_field(seed + 200 + k, height + 2 * half, width + 2 * half, background, clusters=0)
        for m, box in enumerate(positive.boxes, start=1):
            cy, cx = box.y + box.height // 2, box.x + box.width // 2
            cy, cx = (
                min(max(cy, half), positive.image.shape[0] - half),
                min(max(cx, half), positive.image.shape[1] - half),
            )
            patch = positive.image[cy - half : cy - half + patch_px, cx - half : cx - half + patch_px]
            Image.fromarray(np.ascontiguousarray(patch)).save(root / "positives" / f"S{k:02d}TR1T002PP{m}.png")
    return root
