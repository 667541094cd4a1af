"""Bacillus masks derived from boxes: against exact synthetic masks, and on real ZNSM-iDB fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from training.data.annotations import Box, BoxLabel, FieldAnnotation
from training.data.box_masks import MaskDerivation, PixelClass, derive_bacillus_mask, label_map
from training.data.colour import otsu_threshold, srgb_to_lab
from training.data.dataset import discover_fields, read_annotation, read_rgb
from training.data.synthetic import SyntheticField


def test_lab_of_reference_colours() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=0.05)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)  # sRGB red
    np.testing.assert_allclose(lab[3], [32.30, 79.19, -107.86], atol=0.1)  # sRGB blue


def test_otsu_separates_two_groups() -> None:
    values = np.concatenate([np.full(100, 2.0), np.full(30, 20.0)])
    threshold = otsu_threshold(values)
    assert 2.0 < threshold < 20.0
    assert otsu_threshold(np.full(5, 3.0)) == 3.0


def test_derived_masks_match_exact_synthetic_masks(synthetic_fields: list[SyntheticField]) -> None:
    for field in synthetic_fields:
        mask, found = derive_bacillus_mask(field.image, field.boxes)
        iou = (mask & field.mask).sum() / (mask | field.mask).sum()
        assert iou > 0.85, f"field {field.field_id}: IoU {iou:.3f}"
        assert all(s.pixels > 0 for s in found)
        # only bacillus boxes are derived
        assert len(found) == sum(b.label.is_bacillus for b in field.boxes)


def test_specks_are_dropped() -> None:
    image = np.full((60, 60, 3), (230, 200, 195), dtype=np.uint8)
    image[20:40, 28:33] = (160, 40, 95)  # a rod: 100 px
    image[5:8, 5:8] = (160, 40, 95)  # a 9 px red speck, also inside the box
    box = Box(BoxLabel.SINGLE_BACILLUS, 2, 2, 50, 50)
    mask, _ = derive_bacillus_mask(image, (box,), MaskDerivation(smoothing_sigma_px=0, min_area_px=30))
    assert mask[20:40, 28:33].all()
    assert not mask[5:8, 5:8].any()


def test_rod_clipped_by_its_box_is_followed_a_little_past_it() -> None:
    image = np.full((80, 80, 3), (230, 200, 195), dtype=np.uint8)
    image[20:60, 38:43] = (160, 40, 95)
    box = Box(BoxLabel.SINGLE_BACILLUS, 30, 25, 20, 30)  # cuts 5 px off each end of the rod
    params = MaskDerivation(smoothing_sigma_px=0, overshoot_px=8)
    mask, _ = derive_bacillus_mask(image, (box,), params)
    assert mask[20:60, 38:43].all() and mask.sum() == 200


def test_label_map_ignores_unclassified_and_keeps_artifacts_as_background(
    synthetic_fields: list[SyntheticField],
) -> None:
    field = synthetic_fields[0]
    annotation = FieldAnnotation(
        Path("1.png"), (field.image.shape[1], field.image.shape[0]), field.boxes, None, Path("x")
    )
    labels = label_map(annotation, field.image)
    (unclassified,) = annotation.boxes_with(BoxLabel.UNCLASSIFIED)
    (artifact,) = annotation.boxes_with(BoxLabel.ARTIFACT)
    assert (labels[unclassified.slices] == PixelClass.IGNORE).all()
    assert (labels[artifact.slices] != PixelClass.IGNORE).all()
    assert set(np.unique(labels)) == {PixelClass.BACKGROUND, PixelClass.BACILLUS, PixelClass.IGNORE}


def test_label_map_uses_an_exact_mask_when_given(synthetic_fields: list[SyntheticField]) -> None:
    field = synthetic_fields[1]
    annotation = FieldAnnotation(Path("2.png"), (field.image.shape[1], field.image.shape[0]), (), field.mask, Path("x"))
    labels = label_map(annotation, field.image)
    np.testing.assert_array_equal(labels == PixelClass.BACILLUS, field.mask)


@pytest.mark.parametrize("field_id", ["2", "20", "44"])  # pink with clusters; blue with nuclei; green with debris
def test_masks_of_real_fields(znsm_ms2: Path, field_id: str) -> None:
    (files,) = [f for f in discover_fields(znsm_ms2) if f.field_id == field_id]
    annotation, image = read_annotation(files), read_rgb(files.image)
    params = MaskDerivation()
    mask, found = derive_bacillus_mask(image, annotation.boxes, params)

    # Every pixel lies inside a bacillus box grown by the overshoot allowance.
    allowed = np.zeros_like(mask)
    for b in annotation.boxes_with(BoxLabel.SINGLE_BACILLUS, BoxLabel.BACILLI_CLUSTER):
        o = params.overshoot_px
        allowed[max(b.y - o, 0) : b.y + b.height + o, max(b.x - o, 0) : b.x + b.width + o] = True
    assert not (mask & ~allowed).any()

    # Nearly every box gets a rod, and a rod fills a plausible share of its loose box.
    with_pixels = [s for s in found if s.pixels_inside_box > 0]
    assert len(with_pixels) >= 0.9 * len(found)
    fills = [s.pixels_inside_box / (s.box.width * s.box.height) for s in with_pixels]
    assert 0.08 < float(np.median(fills)) < 0.5

    # No specks: every component reaches the minimum area.
    labels, count = ndi.label(mask)
    assert count >= len(with_pixels) / 2
    assert np.bincount(labels.ravel())[1:].min() >= params.min_area_px

    # Boxes of other labels that no bacillus box overlaps stay empty.
    for b in annotation.boxes_with(BoxLabel.UNCLASSIFIED, BoxLabel.ARTIFACT):
        if not allowed[b.slices].any():
            assert not mask[b.slices].any()

    # Bacillus pixels are redder than the field and darker: the stain, not the background.
    lab = srgb_to_lab(image[::4, ::4])
    rod = srgb_to_lab(image[mask])
    assert np.median(rod[:, 1]) > np.median(lab[..., 1]) + 5
    assert np.median(rod[:, 0]) < np.median(lab[..., 0])
