"""Candidate measurements on hand-made shapes, and the object filter's file contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.engine.candidates import FEATURES, find_candidates
from service.engine.errors import ModelContractError
from service.engine.object_filter import ObjectFilter


def test_a_red_rod_and_a_dark_blob_are_measured() -> None:
    heat = np.zeros((60, 80), dtype=np.float32)
    rgb = np.full((60, 80, 3), (200, 180, 190), dtype=np.uint8)  # pale pink background
    heat[10:14, 10:50] = 0.95  # a 40 × 4 rod
    rgb[10:14, 10:50] = (180, 60, 90)  # fuchsia red
    yy, xx = np.mgrid[0:60, 0:80]
    disc = (yy - 40) ** 2 + (xx - 60) ** 2 <= 36  # a radius-6 disc
    heat[disc] = 0.6
    rgb[disc] = (60, 40, 110)  # dark blue-violet
    heat[55, 5] = 0.9  # a speck: below min_object_px
    found = find_candidates(heat, rgb, threshold=0.5, min_object_px=20)
    assert len(found.items) == 2
    rod, blob = found.items
    assert rod.bbox == (10, 10, 40, 4) and rod.first_pixel == (10, 10)
    assert rod.feature("area_px") == 160 and rod.feature("length_px") == 40 and rod.feature("width_px") == 4
    assert rod.feature("elongation") == 10 and rod.feature("extent") == 1 and rod.feature("solidity") == 1
    assert rod.feature("compactness") == pytest.approx(4 * math.pi * 160 / 88**2, rel=1e-5)
    assert rod.feature("p_mean") == pytest.approx(0.95) and rod.feature("p_share_above_0_9") == 1
    assert rod.feature("r_minus_g") == 120 and rod.feature("ring_r_mean") == 200
    assert rod.feature("g_contrast") == 120  # ring G 180 − rod G 60
    assert blob.feature("elongation") < 1.2 and blob.feature("solidity") > 0.85
    assert blob.feature("r_minus_g") == 20 and blob.feature("b_share") > 0.5
    assert found.feature_matrix().shape == (2, len(FEATURES))
    assert found.mask_of().sum() == 160 + disc.sum()
    assert found.mask_of(np.array([True, False])).sum() == 160


def test_nothing_to_measure() -> None:
    found = find_candidates(np.zeros((5, 5), np.float32), np.zeros((5, 5, 3), np.uint8))
    assert found.items == () and found.feature_matrix().shape == (0, len(FEATURES)) and not found.mask_of().any()


def test_the_filter_file_contract(tmp_path: Path, random_object_filter: Path) -> None:
    loaded = ObjectFilter(random_object_filter)
    assert loaded.meta.features == FEATURES and 0 <= loaded.meta.threshold <= 1
    scores = loaded.scores(np.zeros((3, len(FEATURES)), np.float32))
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    assert loaded.scores(np.zeros((0, len(FEATURES)), np.float32)).shape == (0,)
    area = loaded.meta.single_bacillus_area_px
    assert [loaded.estimated_count(a) for a in (1, area, 1.49 * area, 1.51 * area, 3 * area)] == [1, 1, 1, 2, 3]

    with pytest.raises(ModelContractError, match="not found"):
        ObjectFilter(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelContractError, match="cannot load"):
        ObjectFilter(tmp_path / "junk.onnx")
    proto = onnx.load(str(random_object_filter))
    props = {p.key: p.value for p in proto.metadata_props}
    for broken, message in (
        ({k: v for k, v in props.items() if k != "threshold"}, "lacks threshold"),
        (
            {**props, "features": props["features"] + ",halo_brightness"},
            "does not compute the features halo_brightness",
        ),
        ({**props, "format": "something/9"}, "format"),
    ):
        del proto.metadata_props[:]
        for key, value in broken.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp_path / "broken.onnx"))
        with pytest.raises(ModelContractError, match=message):
            ObjectFilter(tmp_path / "broken.onnx")
