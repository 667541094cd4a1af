"""A field's fingerprint: the same field sent twice to a slide is counted once.

The fingerprint is the field's stain density (the summed optical density against its own background, as the quality
check measures it) averaged over a :data:`SIDE` × :data:`SIDE` grid, quantised to bytes and written in base64 (about
1.4 kB). Two fields are the same (:func:`same_field`) when their maps correlate at :data:`SAME` or more. Measured on
the 113 fields of the three labs in ``../shared/data``: a field re-encoded as JPEG of quality 40, brightened by 15%
or halved in size keeps its map (correlation ≥ 0.94), while two different fields correlate at most 0.90 (two
neighbouring MS-2 fields that overlap). One pair reads as the same field: MS-2's ``20.jpg`` and ``28.jpg`` (0.9999,
different bytes), which are one field stored twice in the public set. A map with almost no stain (a blank field) is
compared by nothing but its bytes' digest.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import numpy.typing as npt
from PIL import Image

SIDE = 32
SAME = 0.92
MIN_SPREAD = 0.5  # a map flatter than this (quantised units) is a blank field: compared by digest only


def field_fingerprint(rgb: npt.NDArray[np.uint8]) -> str:
    """The base64 stain-density map of a ``[y, x, 3]`` uint8 field."""
    height, width = rgb.shape[:2]
    if height < 2 or width < 2:
        return base64.b64encode(bytes(SIDE * SIDE)).decode("ascii")
    small = np.asarray(
        Image.fromarray(np.ascontiguousarray(rgb)).resize((SIDE * 4, SIDE * 4), Image.Resampling.BOX), np.float32
    )
    background = np.maximum(np.percentile(small.reshape(-1, 3), 90, axis=0), 1.0)
    density = -np.log(np.clip(np.maximum(small, 1.0) / background, 1e-3, 1.0)).sum(axis=2)
    grid = density.reshape(SIDE, 4, SIDE, 4).mean(axis=(1, 3))
    quantised = np.clip(np.round(grid * 64), 0, 255).astype(np.uint8)
    return base64.b64encode(quantised.tobytes()).decode("ascii")


def _map(fingerprint: str) -> npt.NDArray[np.float64] | None:
    try:
        raw = np.frombuffer(base64.b64decode(fingerprint, validate=True), dtype=np.uint8)
    except (ValueError, TypeError):
        return None
    return raw.astype(np.float64) if raw.size == SIDE * SIDE else None


def similarity(a: str, b: str) -> float | None:
    """The correlation of two fingerprints' maps; None when either is unreadable or blank."""
    x, y = _map(a), _map(b)
    if x is None or y is None or x.std() < MIN_SPREAD or y.std() < MIN_SPREAD:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def digest(data: bytes) -> str:
    """The SHA-256 of an image's bytes (the same file sent twice)."""
    return hashlib.sha256(data).hexdigest()


def same_field(a: tuple[str | None, str | None], b: tuple[str | None, str | None]) -> bool:
    """Whether two fields, each ``(digest, fingerprint)``, are one field sent twice."""
    if a[0] is not None and a[0] == b[0]:
        return True
    if a[1] is None or b[1] is None:
        return False
    found = similarity(a[1], b[1])
    return found is not None and found >= SAME


def duplicates(fields: list[tuple[str | None, str | None]]) -> list[int | None]:
    """For each field, the index of the earlier field it repeats (None for a first occurrence)."""
    first: list[int | None] = []
    for i, f in enumerate(fields):
        first.append(next((j for j in range(i) if first[j] is None and same_field(fields[j], f)), None))
    return first
