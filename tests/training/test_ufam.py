"""The UFAM DDS1 reader, its split by slide, its patches, and the errors for folders we cannot use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine.normalisation import InputNormalisation
from training.data.annotations import AnnotationError
from training.data.synthetic import write_synthetic_ufam
from training.data.ufam import interpolated_rows, read_ufam, sample_ufam, split_ufam


@pytest.fixture()
def ufam(tmp_path: Path) -> Path:
    return write_synthetic_ufam(tmp_path / "ufam", slides=4)


def test_reads_slides_fields_and_patches(ufam: Path) -> None:
    found = read_ufam(ufam)
    assert found.slides == ("S01", "S02", "S03", "S04")
    assert len(found.negatives) == 4 and all(n.field_id.endswith("T001") for n in found.negatives)
    assert found.positives and {p.field for p in found.positives} == {f"S0{k}TR1T002" for k in range(1, 5)}
    assert {p.slide for p in found.of_slides(["S02"]).positives} == {"S02"}


def test_split_is_by_slide_and_fixed(ufam: Path, tmp_path: Path) -> None:
    split = split_ufam(ufam, tmp_path / "split.json", test_fraction=0.25, validation_fraction=0.3)
    assert set(split.train) | set(split.validation) | set(split.test) == {"S01", "S02", "S03", "S04"}
    assert len(split.test) == 1 and len(split.validation) == 1  # a slide is on one side only (checked on load)
    with pytest.raises(FileExistsError):
        split_ufam(ufam, tmp_path / "split.json")


def test_the_shipped_ufam_split_is_rebuilt_identically(tmp_path: Path) -> None:
    from training.data.split import DatasetSplit
    from training.paths import UFAM_DDS1, UFAM_DDS1_SPLIT

    if not UFAM_DDS1.is_dir():
        pytest.skip(f"real data not available: {UFAM_DDS1} is missing")
    assert split_ufam(UFAM_DDS1, tmp_path / "again.json") == DatasetSplit.load(UFAM_DDS1_SPLIT)


def test_patches_are_centred_and_negatives_avoid_interpolated_rows(ufam: Path) -> None:
    part = read_ufam(ufam)
    norm = InputNormalisation("background-gain", (194.5, 190.5, 153.0))
    patches = sample_ufam(part, norm, seed=0, positive_draws=2, negatives_per_field=30, patch_size=45)
    positives, negatives = patches.labels == 1, patches.labels == 0
    assert positives.sum() == 2 * len(part.positives) and negatives.sum() == 30 * len(part.negatives)
    assert patches.patches.shape[1:] == (45, 45, 3)
    assert set(np.unique(patches.centres_yx[positives, 0])) <= {19, 20}
    assert not interpolated_rows(150)[patches.centres_yx[negatives, 0]].any()
    again = sample_ufam(part, norm, seed=0, positive_draws=2, negatives_per_field=30, patch_size=45)
    np.testing.assert_array_equal(again.patches, patches.patches)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda root: [p.unlink() for p in (root / "negatives").iterdir()], "no negative PNG"),
        (lambda root: (root / "positives").rename(root / "elsewhere"), "positives/ is missing"),
        (lambda root: (root / "negatives" / "S01TR1T001.png").rename(root / "negatives" / "field.png"), "slide id"),
    ],
)
def test_folders_we_cannot_use_are_named(ufam: Path, damage, expected: str) -> None:
    damage(ufam)
    with pytest.raises(AnnotationError, match=expected):
        read_ufam(ufam)


def test_a_patch_too_small_for_the_receptive_field_is_named(ufam: Path) -> None:
    small = ufam / "positives" / "S01TR1T009PP1.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(small)
    with pytest.raises(AnnotationError, match=r"S01TR1T009PP1\.png.*at least 23 px"):
        sample_ufam(read_ufam(ufam), None, seed=0)
