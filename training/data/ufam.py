"""The UFAM TBImages DDS1 set (another lab's microscope): negative fields and point-centred positive patches.

Layout (``../shared/data/ufam-dds1``, see its SOURCE.md):

* ``negatives/<field>.png``: whole fields in which the experts marked no bacillus: every pixel is background. The
  rows ``y mod 50 ∈ [40, 50)`` were never published and are interpolated (:data:`INTERPOLATED_ROWS`): no patch is
  centred there.
* ``positives/<field>PP<n>.png``: patches centred on an expert point (a bacillus, a cluster or an undefined
  object). A patch is smaller than the network's receptive field: it is judged at its centre, with the same mirror
  padding the service applies at a field's border.

Names start with the slide (``S01``…), then the field (``S01TR1T022``). Splits are by slide
(``training/splits/ufam-dds1.json``): no slide has a field or a patch on both sides.

Field normalisation (:mod:`service.engine.normalisation`) needs a field's background. A negative field is whole;
a positive patch is a crop of a field we do not have, so its background is estimated on all the patches of its
field pooled (:func:`pooled_backgrounds`): mostly background pixels, as a whole field's are.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from service.engine.normalisation import InputNormalisation
from training.data.annotations import AnnotationError
from training.data.dataset import read_rgb
from training.data.sampling import PatchSet, extract_patches, field_rng
from training.data.split import DatasetSplit, make_split

NEGATIVES = "negatives"
POSITIVES = "positives"
NAME = re.compile(r"^(?P<slide>S\d+)(?P<rest>[A-Za-z0-9]*?)(?:PP(?P<patch>\d+))?$")
INTERPOLATED_ROWS = (50, 40, 50)  # period, first interpolated row, end (exclusive) within each period
CENTRE_PX = 3  # a detection within this many px of a positive patch's centre is at the expert's point
MIN_PATCH_PX = 23  # mirror padding by the 22 px halo needs more than 22 px on every side of the centre


@dataclass(frozen=True)
class NegativeField:
    """A field with no bacillus."""

    path: Path
    slide: str

    @property
    def field_id(self) -> str:
        return self.path.stem

    @property
    def field(self) -> str:
        """The field it belongs to: itself (as :attr:`PositivePatch.field` names a patch's field)."""
        return self.field_id


@dataclass(frozen=True)
class PositivePatch:
    """A patch centred on an expert point."""

    path: Path
    slide: str
    field: str

    @property
    def patch_id(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class UfamSet:
    """The set's files, by slide."""

    root: Path
    negatives: tuple[NegativeField, ...]
    positives: tuple[PositivePatch, ...]

    @property
    def slides(self) -> tuple[str, ...]:
        return tuple(sorted({n.slide for n in self.negatives} | {p.slide for p in self.positives}))

    def _part(self, key: str, wanted: tuple[str, ...] | list[str]) -> UfamSet:
        """The part of the set whose negative fields and patches have their ``key`` (slide or field) in ``wanted``."""
        keep = set(wanted)
        return UfamSet(
            self.root,
            tuple(n for n in self.negatives if getattr(n, key) in keep),
            tuple(p for p in self.positives if getattr(p, key) in keep),
        )

    def of_slides(self, slides: tuple[str, ...] | list[str]) -> UfamSet:
        """The part of the set on ``slides``."""
        return self._part("slide", slides)

    @property
    def field_ids(self) -> tuple[str, ...]:
        """Its fields: those its positive patches were cut from, and its negative fields."""
        return tuple(sorted({n.field for n in self.negatives} | {p.field for p in self.positives}))

    def of_fields(self, fields: tuple[str, ...] | list[str]) -> UfamSet:
        """The part of the set on ``fields`` (ids of :attr:`field_ids`)."""
        return self._part("field", fields)

    def positives_by_field(self) -> dict[str, list[PositivePatch]]:
        by_field: dict[str, list[PositivePatch]] = defaultdict(list)
        for p in self.positives:
            by_field[p.field].append(p)
        return dict(by_field)


def _parse(path: Path) -> tuple[str, str]:
    match = NAME.match(path.stem)
    if match is None:
        raise AnnotationError(path, "name does not start with a slide id such as S01 (expected S01TR1T022[PP1].png)")
    return match["slide"], match["slide"] + match["rest"]


def read_ufam(root: Path) -> UfamSet:
    """Find the set's negative fields and positive patches.

    Raises:
        AnnotationError: the folder or one of its two sub-folders is missing, a sub-folder has no PNG (an empty
            negative field list included), or a file name carries no slide id; the message names the path.
    """
    root = Path(root)
    found: dict[str, list[Path]] = {}
    for sub in (NEGATIVES, POSITIVES):
        folder = root / sub
        if not folder.is_dir():
            raise AnnotationError(folder, f"not a UFAM DDS1 folder: {sub}/ is missing")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if not files:
            raise AnnotationError(folder, f"no {sub[:-1]} PNG in it")
        found[sub] = files
    negatives = tuple(NegativeField(p, _parse(p)[0]) for p in found[NEGATIVES])
    positives = tuple(PositivePatch(p, *_parse(p)) for p in found[POSITIVES])
    return UfamSet(root, negatives, positives)


def interpolated_rows(height: int) -> npt.NDArray[np.bool_]:
    """``[height]`` True on the rows that were interpolated, not photographed."""
    period, start, end = INTERPOLATED_ROWS
    phase = np.arange(height) % period
    return (phase >= start) & (phase < end)


def photographed(shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """``[y, x]`` True on a negative field's pixels that were photographed (not on the interpolated rows)."""
    return np.broadcast_to(~interpolated_rows(shape[0])[:, None], shape[:2])


def read_patch(patch: PositivePatch) -> npt.NDArray[np.uint8]:
    """A positive patch's pixels.

    Raises:
        AnnotationError: unreadable, or too small to be mirror-padded by the network's halo around its centre.
    """
    rgb = read_rgb(patch.path)
    if min(rgb.shape[:2]) < MIN_PATCH_PX:
        raise AnnotationError(
            patch.path,
            f"patch of {rgb.shape[1]}×{rgb.shape[0]} px: at least {MIN_PATCH_PX} px a side are needed to judge its "
            "centre with the network's 45 px receptive field (mirror padding)",
        )
    return rgb


def patch_centre(rgb: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """The pixel ``(y, x)`` of the expert's point: the patch's centre (``size // 2``)."""
    return rgb.shape[0] // 2, rgb.shape[1] // 2


def read_positives(
    part: UfamSet, normalisation: InputNormalisation | None
) -> tuple[dict[str, npt.NDArray[np.uint8]], dict[str, npt.NDArray[np.float32]]]:
    """Every positive patch of ``part`` by patch id, and (when ``normalisation`` is given) each field's background
    estimated on its patches pooled (:func:`pooled_backgrounds`); no backgrounds without a normalisation."""
    images = {p.patch_id: read_patch(p) for p in part.positives}
    if normalisation is None:
        return images, {}
    by_field = {f: [images[p.patch_id] for p in ps] for f, ps in part.positives_by_field().items()}
    return images, pooled_backgrounds(by_field, normalisation)


def pooled_backgrounds(
    patches: dict[str, list[npt.NDArray[np.uint8]]], normalisation: InputNormalisation
) -> dict[str, npt.NDArray[np.float32]]:
    """Each field's background estimated on all its patches side by side (module docstring)."""
    out = {}
    for field, images in patches.items():
        pooled = np.concatenate([im.reshape(-1, 1, 3) for im in images], axis=0)
        out[field] = replace(normalisation, sample_step=1).background(pooled)
    return out


def split_ufam(
    root: Path,
    out: Path,
    test_fraction: float = 0.25,
    validation_fraction: float = 0.2,
    seed: int = 0,
    force: bool = False,
) -> DatasetSplit:
    """Split the set by slide, stratified by positive patches per slide, and save it to ``out``.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is not given (shipped splits are fixed).
    """
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; the shipped split is fixed. Use --force to overwrite it.")
    ufam = read_ufam(root)
    counts = {slide: sum(p.slide == slide for p in ufam.positives) for slide in ufam.slides}
    split = make_split(counts, Path(root).name, test_fraction, validation_fraction, seed)
    split = DatasetSplit(
        split.dataset,
        split.train,
        split.validation,
        split.test,
        "by slide (ids are slides), "
        + split.method.replace("bacillus boxes per field", "positive patches per slide")
        .replace("fields", "slides")
        .replace("one field", "one slide"),
    )
    split.save(out)
    return split


REDNESS_SHARE = 0.02  # the reddest 2% of a negative field's pixels: where a bacillus detector is fooled


def redness(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """``R − (G + B) / 2``, smoothed over 3 px: carbol-fuchsin red against the counterstain."""
    x = rgb.astype(np.float32)
    return np.asarray(ndi.uniform_filter(x[..., 0] - 0.5 * (x[..., 1] + x[..., 2]), size=3), dtype=np.float32)


def sample_ufam(
    part: UfamSet,
    normalisation: InputNormalisation | None,
    seed: int,
    *,
    positive_draws: int = 3,
    negatives_per_field: int = 240,
    hard_share: float = 0.5,
    patch_size: int = 45,
) -> PatchSet:
    """Training patches of a part of the set (already normalised when ``normalisation`` is given).

    * positives: ``positive_draws`` patches per positive, centred on one of the 2 × 2 pixels at its centre (the
      expert's point lies between them), the rest of the window mirrored beyond the patch;
    * negatives: ``negatives_per_field`` centres per negative field, ``hard_share`` of them among its reddest
      pixels (:data:`REDNESS_SHARE`), the rest anywhere; never on the interpolated rows.

    Draws come from generators seeded by ``(seed, field or patch id)``.
    """
    pad = patch_size // 2
    parts: list[PatchSet] = []
    images, backgrounds = read_positives(part, normalisation)
    for p in part.positives:
        rgb = images[p.patch_id]
        if normalisation is not None:
            rgb = normalisation.apply(rgb, backgrounds[p.field])
        rng = field_rng(seed, p.patch_id)
        cy, cx = patch_centre(rgb)
        centres = np.stack([cy - rng.integers(0, 2, positive_draws), cx - rng.integers(0, 2, positive_draws)], axis=1)
        padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")  # as the service pads a field
        cut = np.stack([padded[y : y + patch_size, x : x + patch_size] for y, x in centres])
        parts.append(
            PatchSet(
                cut, np.ones(positive_draws, np.uint8), np.full(positive_draws, p.patch_id), centres.astype(np.int32)
            )
        )
    for f in part.negatives:
        rgb = read_rgb(f.path)
        if normalisation is not None:
            rgb = normalisation.apply(rgb)
        rng = field_rng(seed, f.field_id)
        allowed = photographed(rgb.shape)
        red = redness(rgb)
        cut_at = np.quantile(red[allowed], 1 - REDNESS_SHARE)
        hard_pool = np.flatnonzero((allowed & (red >= cut_at)).ravel())
        any_pool = np.flatnonzero(allowed.ravel())
        n_hard = round(hard_share * negatives_per_field)
        index = np.concatenate(
            [
                rng.choice(hard_pool, n_hard, replace=hard_pool.size < n_hard),
                rng.choice(any_pool, negatives_per_field - n_hard, replace=False),
            ]
        )
        field_centres = np.stack(np.unravel_index(index, rgb.shape[:2]), axis=1).astype(np.int32)
        parts.append(
            PatchSet(
                extract_patches(rgb, field_centres, patch_size),
                np.zeros(len(index), np.uint8),
                np.full(len(index), f.field_id),
                field_centres,
            )
        )
    return PatchSet.concatenate(parts, patch_size)
