"""The paper's sparse patch sampler: N bacillus-centred and N background-centred patches per field.

A patch is the ``size × size × 3`` window centred on one pixel (``size`` odd, 45 in the paper); its label is
the class of that centre pixel. Where the window leaves the field it is filled by mirror padding,
:data:`MIRROR_MODE` (numpy's ``reflect``: the edge pixel is not repeated, as TensorFlow's ``REFLECT``), the
same padding the service uses at a field's border so training and inference see the same pixels.

Centres are drawn uniformly at random, without replacement when the field has enough pixels of the class and
with replacement otherwise, from a generator seeded by ``(seed, field id)``: a field's patches do not depend
on which other fields are sampled or in what order.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from training.data.box_masks import PixelClass

log = logging.getLogger(__name__)

MIRROR_MODE: Final = "reflect"
PATCH_SIZE = 45


@dataclass(frozen=True)
class SamplerConfig:
    """How many patches of which size to draw per field (the paper: 300 + 300, 45×45)."""

    patch_size: int = PATCH_SIZE
    positives_per_field: int = 300
    negatives_per_field: int = 300

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd number, got {self.patch_size}")
        if self.positives_per_field < 0 or self.negatives_per_field < 0:
            raise ValueError("patch counts per field must not be negative")


@dataclass(frozen=True)
class PatchSet:
    """Patches with their labels and where they came from.

    Attributes:
        patches: ``[n, size, size, 3]`` uint8 RGB.
        labels: ``[n]`` uint8, :class:`~training.data.box_masks.PixelClass` of each centre (0 or 1).
        field_ids: ``[n]`` str, the field each patch was cut from.
        centres_yx: ``[n, 2]`` int32, the centre pixel in field coordinates.
    """

    patches: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    field_ids: npt.NDArray[np.str_]
    centres_yx: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def concatenate(parts: Iterable[PatchSet], patch_size: int = PATCH_SIZE) -> PatchSet:
        parts = list(parts)
        if not parts:
            return PatchSet(
                np.zeros((0, patch_size, patch_size, 3), np.uint8),
                np.zeros(0, np.uint8),
                np.zeros(0, "<U1"),
                np.zeros((0, 2), np.int32),
            )
        return PatchSet(
            np.concatenate([p.patches for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.field_ids for p in parts]),
            np.concatenate([p.centres_yx for p in parts]),
        )

    def save(self, path: Path) -> None:
        """Write the set as a compressed ``.npz``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            patches=self.patches,
            labels=self.labels,
            field_ids=self.field_ids,
            centres_yx=self.centres_yx,
        )

    @staticmethod
    def load(path: Path) -> PatchSet:
        with np.load(path) as data:
            return PatchSet(data["patches"], data["labels"], data["field_ids"], data["centres_yx"])


def mirror_pad(image: npt.NDArray[np.generic], pad: int) -> npt.NDArray[np.generic]:
    """Pad the two spatial axes of ``image`` by ``pad`` pixels with :data:`MIRROR_MODE`.

    Fields narrower than ``pad`` are padded by repeated reflection (numpy does this), so any size works.
    """
    widths = [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2)
    padded: npt.NDArray[np.generic] = np.pad(image, widths, mode=MIRROR_MODE)
    return padded


def extract_patches(
    image: npt.NDArray[np.uint8], centres_yx: npt.NDArray[np.integer], size: int = PATCH_SIZE
) -> npt.NDArray[np.uint8]:
    """Cut ``size × size`` patches centred on ``centres_yx`` from ``image``, mirror-padded at its border.

    Args:
        image: ``[y, x, 3]`` field.
        centres_yx: ``[n, 2]`` integer centre pixels, each inside the field.
        size: odd patch side in pixels.

    Returns:
        ``[n, size, size, 3]`` patches (a copy).
    """
    half = size // 2
    centres = np.asarray(centres_yx, dtype=np.int64).reshape(-1, 2)
    height, width = image.shape[:2]
    if centres.size and (centres.min() < 0 or centres[:, 0].max() >= height or centres[:, 1].max() >= width):
        raise ValueError(f"patch centres must lie inside the {height}×{width} field")
    windows = np.lib.stride_tricks.sliding_window_view(mirror_pad(image, half), (size, size), axis=(0, 1))
    # windows[y, x] is the [3, size, size] patch whose top-left is (y, x) in the padded field, i.e. whose
    # centre is (y, x) in the original field.
    return np.ascontiguousarray(windows[centres[:, 0], centres[:, 1]].transpose(0, 2, 3, 1))


def field_rng(seed: int, field_id: str) -> np.random.Generator:
    """The generator for one field: depends on the seed and the field's id only."""
    return np.random.default_rng([seed, zlib.crc32(field_id.encode("utf-8"))])


def _draw(rng: np.random.Generator, candidates: npt.NDArray[np.intp], count: int) -> npt.NDArray[np.intp]:
    if count == 0 or candidates.size == 0:
        return candidates[:0]
    return rng.choice(candidates, size=count, replace=candidates.size < count)


def _pool_counts(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` draws over pools by share (largest remainders), so the counts add up exactly."""
    weight = sum(shares.values())
    exact = {name: total * share / weight for name, share in shares.items()}
    counts = {name: int(v) for name, v in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def sample_field(
    field_id: str,
    image: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.uint8],
    seed: int,
    config: SamplerConfig | None = None,
    negative_pools: Mapping[str, tuple[npt.NDArray[np.bool_], float]] | None = None,
) -> PatchSet:
    """Draw one field's patches: ``positives_per_field`` bacillus centres, ``negatives_per_field`` background.

    IGNORE pixels are never centres. A field with no pixel of a class gives no patch of it (logged).

    Args:
        field_id: the field's name, part of the seed.
        image: ``[y, x, 3]`` uint8 field.
        labels: ``[y, x]`` :class:`PixelClass` map of the same size.
        seed: the run's seed.
        config: counts and patch size; the paper's when None.
        negative_pools: where background centres come from, as ``name → (pixel mask, share)``; only
            BACKGROUND pixels of a pool are drawn, and an empty pool's share goes to the whole background.
            None: the whole background (the paper).
    """
    config = config or SamplerConfig()
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label map {labels.shape} does not match field {image.shape[:2]}")
    rng = field_rng(seed, field_id)
    flat = labels.ravel()
    background = flat == PixelClass.BACKGROUND
    pools: dict[str, npt.NDArray[np.intp]] = {}
    shares: dict[str, float] = {}
    for name, (pool, share) in sorted((negative_pools or {}).items()):
        candidates = np.flatnonzero(pool.ravel() & background)
        if candidates.size and share > 0:
            pools[name], shares[name] = candidates, share
    rest = 1.0 - sum(shares.values()) if negative_pools else 1.0
    if rest > 1e-9 or not pools:
        pools["background"], shares["background"] = np.flatnonzero(background), max(rest, 1e-9)
    requests = [
        (
            PixelClass.BACILLUS.name.lower(),
            np.flatnonzero(flat == PixelClass.BACILLUS),
            config.positives_per_field,
        )
    ]
    requests += [(name, pools[name], n) for name, n in _pool_counts(config.negatives_per_field, shares).items()]
    chosen = []
    for name, candidates, count in requests:
        if candidates.size < count:
            log.warning(
                "field %s: only %d %s pixels for %d patches%s",
                field_id,
                candidates.size,
                name,
                count,
                " (drawn with replacement)" if candidates.size else "",
            )
        chosen.append(_draw(rng, candidates, count))
    index = np.concatenate(chosen)
    centres = np.stack(np.unravel_index(index, labels.shape), axis=1).astype(np.int32)
    return PatchSet(
        patches=extract_patches(image, centres, config.patch_size),
        labels=flat[index].astype(np.uint8),
        field_ids=np.full(index.size, field_id),
        centres_yx=centres,
    )
