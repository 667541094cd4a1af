"""The synthetic field generator: deterministic, exact masks, the structures the tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.annotations import BoxLabel
from training.data.colour import srgb_to_lab
from training.data.synthetic import synthetic_field


def test_same_seed_same_field() -> None:
    a, b = synthetic_field(4), synthetic_field(4)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.boxes == b.boxes
    assert not np.array_equal(a.image, synthetic_field(5).image)


@pytest.mark.parametrize("background", ["pink", "blue", "green"])
def test_rods_are_red_and_inside_their_boxes(background: str) -> None:
    field = synthetic_field(7, height=200, width=260, background=background, rods=5, clusters=2)
    assert field.image.shape == (200, 260, 3) and field.image.dtype == np.uint8
    labels = [b.label for b in field.boxes]
    assert labels.count(BoxLabel.SINGLE_BACILLUS) == 5
    assert labels.count(BoxLabel.BACILLI_CLUSTER) == 2
    assert labels.count(BoxLabel.UNCLASSIFIED) == labels.count(BoxLabel.ARTIFACT) == 1
    covered = np.zeros_like(field.mask)
    for b in field.boxes:
        if b.label.is_bacillus:
            covered[b.slices] = True
    assert field.mask.any() and not (field.mask & ~covered).any()
    lab = srgb_to_lab(field.image)
    assert np.median(lab[field.mask][:, 1]) > np.median(lab[~field.mask][:, 1]) + 15


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="background"):
        synthetic_field(0, background="purple")
    with pytest.raises(ValueError, match="64"):
        synthetic_field(0, height=32)
