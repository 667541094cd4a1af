"""Pixel sizes and reading a field at the model's scale (service.engine.scale and service.engine.rescaled)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine.errors import ModelContractError
from service.engine.image_io import ResampledTooLarge, decode_image
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import DENSE_ONNX
from service.engine.postprocess import DetectedObject
from service.engine.rescaled import map_object, segment_at_scale
from service.engine.scale import ModelScale, ScaleSource, metadata_microns, resample, resolve_scale
from service.engine.segmenter import Segmenter
from tests.conftest import red_rod_field

MODEL = ModelScale("m", 0.1, "test", {})


def test_the_scale_comes_from_the_request_then_the_lab_then_the_image_else_it_is_assumed() -> None:
    assert resolve_scale(MODEL, request=0.2, lab=0.3, metadata=0.4).source is ScaleSource.REQUEST
    lab = resolve_scale(MODEL, lab=0.3, metadata=0.4, lab_id="lab-a")
    assert (lab.source, lab.factor, lab.microns_per_pixel) == (ScaleSource.LAB, pytest.approx(3.0), 0.3)
    image = resolve_scale(MODEL, metadata=0.05)
    assert (image.source, image.factor) == (ScaleSource.METADATA, pytest.approx(0.5))
    assumed = resolve_scale(MODEL)
    assert (assumed.source, assumed.factor, assumed.microns_per_pixel) == (ScaleSource.ASSUMED, 1.0, None)
    assert "give microns_per_pixel" in assumed.reasons[0]
    near = resolve_scale(MODEL, request=0.104)  # within 5%: read as sent, and said
    assert near.factor == 1.0 and not near.resampled and "not resampled" in near.reasons[0]
    unknown = resolve_scale(None, request=0.2)  # a folder without scale.json: as uploaded, µm still measured
    assert (unknown.source, unknown.factor, unknown.microns_per_pixel) == (ScaleSource.NATIVE, 1.0, 0.2)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive number"):
            resolve_scale(MODEL, request=bad)


def test_only_a_microscopes_resolution_metadata_is_believed() -> None:
    assert metadata_microns({"dpi": (254_000, 254_000)}) == pytest.approx(0.1)
    assert metadata_microns({"dpi": (72, 72)}) is None  # a screen's, not a microscope's
    assert metadata_microns({"dpi": (300.0, 300.0)}) is None
    assert metadata_microns({"dpi": (254_000, 127_000)}) is None  # non-square pixels
    assert metadata_microns({}) is None and metadata_microns({"dpi": "x"}) is None
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (230, 220, 225)).save(buffer, format="PNG", dpi=(254_000, 254_000))  # PNG pHYs
    assert decode_image(buffer.getvalue(), 10**6).microns_per_pixel == pytest.approx(0.1, rel=1e-3)


def test_a_scale_file_is_written_read_and_checked(tmp_path: Path) -> None:
    MODEL.write(tmp_path)
    assert ModelScale.load(tmp_path / "scale.json") == MODEL
    (tmp_path / "scale.json").write_text(
        '{"format": "tbseg-scale/1", "model_id": "m", "pixel_size_um": -1, "how": "", "evidence": {}}'
    )
    with pytest.raises(ModelContractError, match="positive number"):
        ModelScale.load(tmp_path / "scale.json")


def test_an_object_maps_back_to_the_uploaded_pixels_with_the_same_size_in_microns() -> None:
    o = DetectedObject(1, (10, 20, 30, 40), (25.0, 40.0), 600, 40.0, 12.0, 0.8, 0.9, ((10, 20), (40, 20), (40, 60)))
    back = map_object(o, 2.0, 100, 100)
    assert back.bbox == (5, 10, 15, 20) and back.centroid == (12.5, 20.0)
    assert (back.area_px, back.length_px, back.width_px) == (150, 20.0, 6.0)
    assert back.outline == ((5, 10), (20, 10), (20, 30))
    assert back.in_microns(0.2) == o.in_microns(0.1)  # the same rod in µm, at either scale


@pytest.fixture
def red_segmenter(red_fast_folder: Path) -> Segmenter:
    segmenter = load_segmenter(SegmenterConfig(red_fast_folder / DENSE_ONNX, providers=("CPUExecutionProvider",)))
    segmenter.scale = ModelScale("red", 0.1, "test", {})
    return segmenter


def test_at_the_models_scale_the_result_is_the_segmenters_bit_for_bit(red_segmenter: Segmenter) -> None:
    field = red_rod_field((60, 70), 40)
    plain = red_segmenter.segment(field)
    scaled = segment_at_scale(red_segmenter, field, resolve_scale(red_segmenter.scale, request=0.1))
    assert np.array_equal(plain.heatmap, scaled.heatmap) and np.array_equal(plain.mask, scaled.mask)
    assert plain.bacilli == scaled.bacilli and scaled.scale is not None and scaled.scale.factor == 1.0


def test_a_field_at_half_the_scale_is_read_at_the_models_and_answered_in_its_own_pixels(
    red_segmenter: Segmenter,
) -> None:
    native = red_rod_field((60, 70), 40)
    (rod,) = red_segmenter.segment(native).bacilli
    small = resample(native, (128, 128))  # the same rod photographed with pixels twice as large
    given = segment_at_scale(red_segmenter, small, resolve_scale(red_segmenter.scale, request=0.2))
    assert given.scale is not None and given.scale.factor == pytest.approx(2.0)
    assert given.heatmap.shape == given.mask.shape == given.objects.shape == (128, 128)
    (found,) = given.bacilli
    assert found.centroid == pytest.approx((rod.centroid[0] / 2, rod.centroid[1] / 2), abs=1.5)
    x, y, w, h = found.bbox
    assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
    assert found.length_px == pytest.approx(rod.length_px / 2, rel=0.15)
    assert found.in_microns(0.2).length_um == pytest.approx(rod.in_microns(0.1).length_um, rel=0.15)
    assert given.objects[round(found.centroid[1]), round(found.centroid[0])]
    with pytest.raises(ResampledTooLarge, match="over the limit of 40000 pixels"):
        segment_at_scale(red_segmenter, small, resolve_scale(red_segmenter.scale, request=0.2), max_pixels=40_000)
