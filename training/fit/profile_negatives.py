"""A lab profile's false candidates as hard negatives for ``finetune`` (``--lab-profile``).

Every candidate the model made on a lab's confirmed-negative fields is, by the lab's own word, not a bacillus: a free
hard negative, and exactly the kind the model gets wrong on that microscope. The profile
(:mod:`service.engine.lab_profile`) records each negative field's file, its SHA-256 and its candidates' centroids;
this module reads the fields back and cuts background patches centred on those candidates (and a few jittered
centres around each, as the rod's outline is wider than its centroid), normalised as the base's other patches.

A profile is only evidence about the model it was made with: one made with another model than the fine-tune's base
is refused. A field that moved is looked for by name under ``root``; one whose bytes changed is refused, naming it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.engine.lab_profile import PROFILE_JSON, LabProfile
from service.engine.normalisation import InputNormalisation
from training.data.dataset import read_rgb
from training.data.sampling import PATCH_SIZE, PatchSet, extract_patches, field_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardNegativeDraw:
    """How many patches to cut from the profile's candidates.

    Attributes:
        min_score: candidates whose filter score is below this are skipped (the filter already rejects them
            firmly); 0 takes them all.
        per_candidate: patches per candidate: the centroid and ``per_candidate - 1`` centres jittered by up to
            ``jitter_px`` in each direction.
        jitter_px: see above.
        max_per_field: at most this many candidates per field, the highest scores first.
    """

    min_score: float = 0.0
    per_candidate: int = 3
    jitter_px: int = 3
    max_per_field: int = 200


def open_profile(path: Path) -> LabProfile:
    """The profile of a lab folder or of its ``profile.json``."""
    return LabProfile.load(path / PROFILE_JSON if path.is_dir() else path)


def _locate(recorded: str, root: Path | None) -> Path:
    path = Path(recorded)
    if path.is_file():
        return path
    if root is not None and (root / path.name).is_file():
        return root / path.name
    where = f" nor {root / path.name}" if root is not None else " (give --lab-negatives-root, the folder it is in now)"
    raise FileNotFoundError(f"{recorded}: a negative field of the lab profile is not there{where}")


def profile_hard_negatives(
    profile: LabProfile,
    base_model_id: str,
    normalisation: InputNormalisation | None,
    seed: int,
    root: Path | None = None,
    draw: HardNegativeDraw = HardNegativeDraw(),
) -> PatchSet:
    """Background patches centred on the profile's false candidates (module docstring).

    Raises:
        ValueError: a profile of another model, one that records no candidate locations (made before they were
            recorded: make it again), or a field whose bytes are not those the profile read.
        FileNotFoundError: a field that is neither where it was nor under ``root``.
    """
    if profile.model_id != base_model_id:
        raise ValueError(
            f"lab profile {profile.lab_id!r} was made with model {profile.model_id}, not the base {base_model_id}: "
            "its candidates are another model's mistakes (make the profile again with the base model)"
        )
    if not profile.negatives.files:
        raise ValueError(
            f"lab profile {profile.lab_id!r} (version {profile.version}) records no candidate locations: make it "
            "again with python -m training lab-profile"
        )
    parts = []
    for field, scores in zip(profile.negatives.files, profile.negatives.scores, strict=True):
        path = _locate(field.path, root)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != field.sha256:
            raise ValueError(f"{path}: not the negative field the lab profile read (its bytes changed)")
        order = sorted((i for i, s in enumerate(scores) if s >= draw.min_score), key=lambda i: scores[i], reverse=True)[
            : draw.max_per_field
        ]
        if not order:
            continue
        image = read_rgb(path)
        pixels = normalisation.apply(image) if normalisation is not None else image
        rng = field_rng(seed, path.stem)
        centres = np.repeat(np.array([field.centres_yx[i] for i in order], np.int64), draw.per_candidate, axis=0)
        jitter = rng.integers(-draw.jitter_px, draw.jitter_px + 1, centres.shape)
        jitter[:: draw.per_candidate] = 0  # the centroid itself, then the jittered ones
        limit = np.array(pixels.shape[:2]) - 1
        centres = np.clip(centres + jitter, 0, limit).astype(np.int32)
        parts.append(
            PatchSet(
                extract_patches(pixels, centres),
                np.zeros(len(centres), np.uint8),
                np.full(len(centres), path.stem),
                centres,
            )
        )
    patches = PatchSet.concatenate(parts, PATCH_SIZE)
    log.info(
        "lab profile %s (version %d): %d hard-negative patches from %d negative fields",
        profile.lab_id,
        profile.version,
        len(patches),
        len(parts),
    )
    return patches
