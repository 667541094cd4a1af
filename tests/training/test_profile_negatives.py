"""A lab profile's false candidates as fine-tuning's hard negatives (``finetune --lab-profile``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine.lab_profile import LabProfile, NegativeEvidence, NegativeField
from training.data.sampling import PATCH_SIZE
from training.fit.profile_negatives import HardNegativeDraw, open_profile, profile_hard_negatives

Centres = tuple[tuple[int, int], ...]


def _profile(tmp_path: Path, centres: Centres, scores: tuple[float, ...]) -> tuple[LabProfile, Path]:
    """A profile of six negative fields, the candidates on the first."""
    rng = np.random.default_rng(3)
    (tmp_path / "fields").mkdir()
    files = []
    for i in range(6):
        path = tmp_path / "fields" / f"neg-{i}.png"
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        files.append(NegativeField(str(path), digest, centres if i == 0 else ()))
    negatives = NegativeEvidence("test", 6, (scores, (), (), (), (), ()), tuple(files))
    profile = LabProfile.make("lab-a", "model-a", None, negatives, None, budget=0.9)
    profile.write(tmp_path / "labs" / "lab-a")
    return open_profile(tmp_path / "labs" / "lab-a"), tmp_path / "fields" / "neg-0.png"


def test_patches_are_background_centred_on_the_recorded_candidates(tmp_path: Path) -> None:
    profile, path = _profile(tmp_path, ((10, 20), (59, 0), (30, 40)), (0.9, 0.2, 0.05))
    assert profile.negatives.files[0].centres_yx == ((10, 20), (59, 0), (30, 40))  # read back from the JSON
    image = np.asarray(Image.open(path).convert("RGB"))
    draw = HardNegativeDraw(min_score=0.1, per_candidate=3, jitter_px=2)
    patches = profile_hard_negatives(profile, "model-a", None, seed=0, draw=draw)
    assert len(patches) == 6 and not patches.labels.any()  # two candidates above 0.1, three patches each
    assert patches.patches.shape[1:] == (PATCH_SIZE, PATCH_SIZE, 3)
    half = PATCH_SIZE // 2
    for i, (y, x) in enumerate(patches.centres_yx):
        assert np.array_equal(patches.patches[i, half, half], image[y, x])  # the centre pixel is the field's
    assert [tuple(c) for c in patches.centres_yx[::3]] == [(10, 20), (59, 0)]  # best first, centroid unjittered
    assert np.abs(patches.centres_yx[1:3] - [10, 20]).max() <= 2


def test_what_the_profile_cannot_vouch_for_is_refused(tmp_path: Path) -> None:
    profile, path = _profile(tmp_path, ((10, 20),), (0.9,))
    with pytest.raises(ValueError, match="made with model model-a, not the base model-b"):
        profile_hard_negatives(profile, "model-b", None, seed=0)
    moved = tmp_path / "moved"
    shutil.move(path.parent, moved)
    with pytest.raises(FileNotFoundError, match="give --lab-negatives-root"):
        profile_hard_negatives(profile, "model-a", None, seed=0)
    assert len(profile_hard_negatives(profile, "model-a", None, seed=0, root=moved)) == 3  # found where it moved
    (moved / path.name).write_bytes(b"other bytes")
    with pytest.raises(ValueError, match="its bytes changed"):
        profile_hard_negatives(profile, "model-a", None, seed=0, root=moved)
    old = LabProfile.make("lab-b", "model-a", None, NegativeEvidence("old", 6, ((0.5,),) * 6), None, budget=0.9)
    with pytest.raises(ValueError, match="records no candidate locations"):
        profile_hard_negatives(old, "model-a", None, seed=0)
