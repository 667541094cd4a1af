"""The paper's patch sampler: counts, centre labels, mirror padding, determinism, ignored pixels."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from training.data.box_masks import PixelClass
from training.data.sampling import PatchSet, SamplerConfig, extract_patches, mirror_pad, sample_field


def _reflect(index: int, size: int) -> int:
    """Mirror an index into [0, size) without repeating the edge (numpy 'reflect', TensorFlow 'REFLECT')."""
    period = 2 * (size - 1)
    index = abs(index) % period
    return period - index if index >= size else index


def _field(seed: int = 0, shape: tuple[int, int] = (90, 120)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[30:50, 40:80] = PixelClass.BACILLUS
    labels[0:10, 0:10] = PixelClass.BACILLUS  # bacillus pixels in a corner: their patches leave the field
    labels[60:90, 0:40] = PixelClass.IGNORE
    return image, labels


def test_counts_and_centre_labels() -> None:
    image, labels = _field()
    patches = sample_field("f", image, labels, seed=1)
    assert patches.patches.shape == (600, 45, 45, 3)
    assert (patches.labels == PixelClass.BACILLUS).sum() == 300
    assert (patches.labels == PixelClass.BACKGROUND).sum() == 300
    ys, xs = patches.centres_yx.T
    np.testing.assert_array_equal(labels[ys, xs], patches.labels)
    # the centre pixel of every patch is the field's pixel at its centre
    np.testing.assert_array_equal(patches.patches[:, 22, 22], image[ys, xs])
    assert set(patches.field_ids) == {"f"}


def test_ignored_pixels_are_never_centres() -> None:
    image, labels = _field()
    patches = sample_field(
        "f", image, labels, seed=3, config=SamplerConfig(positives_per_field=500, negatives_per_field=3000)
    )
    ys, xs = patches.centres_yx.T
    assert not (labels[ys, xs] == PixelClass.IGNORE).any()


@pytest.mark.parametrize("centre", [(0, 0), (0, 119), (89, 0), (89, 119), (5, 60), (45, 60), (88, 3)])
def test_mirror_padding_at_every_border(centre: tuple[int, int]) -> None:
    image, _ = _field()
    (patch,) = extract_patches(image, np.array([centre]), size=45)
    height, width = image.shape[:2]
    for dy in range(-22, 23):
        for dx in (-22, -7, 0, 13, 22):
            y, x = _reflect(centre[0] + dy, height), _reflect(centre[1] + dx, width)
            np.testing.assert_array_equal(patch[dy + 22, dx + 22], image[y, x])


def test_fields_smaller_than_a_patch_still_give_patches() -> None:
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    patches = extract_patches(image, np.array([[0, 0], [9, 11]]), size=45)
    assert patches.shape == (2, 45, 45, 3)
    np.testing.assert_array_equal(patches[0, 22, 22], image[0, 0])
    np.testing.assert_array_equal(patches[1, 22 + 3, 22 - 2], image[_reflect(12, 10), 9])
    assert mirror_pad(image, 22).shape == (54, 56, 3)


def test_centres_outside_the_field_are_refused() -> None:
    image, _ = _field()
    with pytest.raises(ValueError, match="inside"):
        extract_patches(image, np.array([[90, 0]]))


def test_seeded_and_independent_of_other_fields() -> None:
    image, labels = _field()
    a = sample_field("7", image, labels, seed=0)
    b = sample_field("7", image, labels, seed=0)
    np.testing.assert_array_equal(a.centres_yx, b.centres_yx)
    np.testing.assert_array_equal(a.patches, b.patches)
    other_seed = sample_field("7", image, labels, seed=1)
    other_field = sample_field("8", image, labels, seed=0)
    assert not np.array_equal(a.centres_yx, other_seed.centres_yx)
    assert not np.array_equal(a.centres_yx, other_field.centres_yx)


def test_without_replacement_when_there_are_enough_pixels() -> None:
    image, labels = _field()
    patches = sample_field("f", image, labels, seed=0)
    centres = {tuple(c) for c in patches.centres_yx}
    assert len(centres) == 600


def test_few_or_no_bacillus_pixels(caplog: pytest.LogCaptureFixture) -> None:
    image, _ = _field()
    labels = np.zeros(image.shape[:2], dtype=np.uint8)
    labels[3, 4] = PixelClass.BACILLUS
    with caplog.at_level(logging.WARNING):
        few = sample_field("few", image, labels, seed=0)
    assert (few.labels == PixelClass.BACILLUS).sum() == 300
    assert {tuple(c) for c in few.centres_yx[few.labels == PixelClass.BACILLUS]} == {(3, 4)}
    assert "with replacement" in caplog.text
    none = sample_field("none", image, np.zeros_like(labels), seed=0)
    assert len(none) == 300 and (none.labels == PixelClass.BACKGROUND).all()


def test_patch_sets_save_and_concatenate(tmp_path) -> None:
    image, labels = _field()
    parts = [
        sample_field(
            f,
            image,
            labels,
            seed=0,
            config=SamplerConfig(patch_size=5, positives_per_field=3, negatives_per_field=4),
        )
        for f in ("a", "b")
    ]
    joined = PatchSet.concatenate(parts, patch_size=5)
    assert len(joined) == 14 and joined.patches.shape == (14, 5, 5, 3)
    joined.save(tmp_path / "p.npz")
    loaded = PatchSet.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(loaded.patches, joined.patches)
    assert list(loaded.field_ids) == ["a"] * 7 + ["b"] * 7
    assert len(PatchSet.concatenate([])) == 0


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="odd"):
        SamplerConfig(patch_size=44)
    with pytest.raises(ValueError, match="negative"):
        SamplerConfig(positives_per_field=-1)
