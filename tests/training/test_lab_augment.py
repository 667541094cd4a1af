"""The lab augmentation keeps the centre pixel's label and repeats with its seed."""

from __future__ import annotations

import numpy as np

from training.fit.lab_augment import SOURCE_PATCH_PX, augment_labs, centre_crop, geometry


def test_identity_geometry_is_the_centre_crop() -> None:
    patch = np.random.default_rng(0).random((SOURCE_PATCH_PX, SOURCE_PATCH_PX, 3)).astype(np.float32)
    np.testing.assert_allclose(geometry(patch, 0.0, 1.0, False), centre_crop(patch[None])[0], atol=1e-6)


def test_rotation_and_zoom_keep_the_centre_pixel() -> None:
    patch = np.zeros((SOURCE_PATCH_PX, SOURCE_PATCH_PX, 3), np.float32)
    c = SOURCE_PATCH_PX // 2
    patch[c, c] = 1.0
    for angle, zoom, flip in ((0.7, 0.7, False), (2.0, 1.45, True), (np.pi / 4, 1.0, False)):
        out = geometry(patch, angle, zoom, flip)
        assert out[22, 22, 0] == out.max() > 0


def test_augmentation_repeats_with_its_seed_and_stays_in_range() -> None:
    patches = np.random.default_rng(1).integers(0, 256, (8, SOURCE_PATCH_PX, SOURCE_PATCH_PX, 3), dtype=np.uint8)
    a = augment_labs(patches, np.random.default_rng(5), (194.5, 190.5, 153.0))
    b = augment_labs(patches, np.random.default_rng(5), (194.5, 190.5, 153.0))
    c = augment_labs(patches, np.random.default_rng(6), (194.5, 190.5, 153.0))
    assert a.shape == (8, 45, 45, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.min() >= 0.0 and a.max() <= 1.0
