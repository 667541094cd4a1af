"""A field's scale estimated from its own kept objects (service.engine.scale_estimate, rescaled.segment_at_scale)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import DENSE_ONNX
from service.engine.rescaled import segment_at_scale
from service.engine.scale import ModelScale, ScaleSource, resample, resolve_scale
from service.engine.scale_estimate import (
    EMPTY_PROBES,
    MIN_OBJECTS,
    PROBE_FACTOR,
    SLIDE_FIELDS,
    SLIDE_OBJECTS,
    SlideEvidence,
    SlideScaleEvidence,
    estimate_and_read,
    factor_from_lengths,
    pool_estimates,
    read_as_is,
)
from service.engine.segmenter import Segmenter
from tests.conftest import red_rod_field


def test_the_factor_is_the_reference_over_the_median_length_at_the_scale_read() -> None:
    assert factor_from_lengths([20.0] * 4, 1.0, 40.0) is None  # too few objects to say anything
    found = factor_from_lengths([16.0, 18.0, 20.0, 22.0, 24.0], 1.0, 40.0)
    assert found is not None and found.factor == pytest.approx(2.0) and found.objects == 5
    assert 0 < found.relative_error < 0.1
    read_at_two = factor_from_lengths([40.0] * 6, 2.0, 40.0)  # read at ×2, the objects now match the reference
    assert read_at_two is not None and read_at_two.factor == pytest.approx(2.0)
    assert read_as_is(1.0) and read_as_is(0.8) and not read_as_is(2.0) and not read_as_is(0.5)


def test_a_field_is_read_again_only_where_the_estimate_leaves_the_range_read_as_is() -> None:
    calls: list[float] = []

    def rods_of(true_factor: float):  # a field whose rods reach the reference 40 px at ×true_factor
        def read(factor: float) -> tuple[str, list[float]]:
            calls.append(factor)
            return f"read at {factor:.2f}", [40.0 * factor / true_factor] * 8

        return read

    same = estimate_and_read(rods_of(1.1), 40.0)
    assert (same.result, same.factor, same.readings, calls) == ("read at 1.00", 1.0, 1, [1.0])
    calls.clear()
    small = estimate_and_read(rods_of(2.5), 40.0)
    assert small.factor == pytest.approx(2.5) and small.readings == 2 and calls == [1.0, pytest.approx(2.5)]
    assert small.estimate is not None and small.estimate.factor == pytest.approx(2.5)


def test_too_few_objects_probe_the_field_enlarged_then_assume() -> None:
    probed: list[float] = []

    def read(factor: float) -> tuple[str, list[float]]:
        return f"read at {factor:.2f}", [] if factor == 1.0 else [40.0 * factor / 3.0] * 6

    def probe(factor: float) -> list[float]:
        probed.append(factor)
        return [40.0 * factor / 3.0] * 6

    found = estimate_and_read(read, 40.0, probe)
    assert probed == [PROBE_FACTOR] and found.factor == pytest.approx(3.0) and found.readings == 3
    assert found.result == "read at 3.00"
    blank = estimate_and_read(lambda f: ("blank", []), 40.0, lambda f: [])
    assert (blank.result, blank.factor, blank.estimate) == ("blank", 1.0, None)


def rods_field(length: int, size: int = 256) -> np.ndarray:
    """A pale field with six red rods of ``length`` px."""
    starts = [(20, 20), (20, 150), (100, 40), (100, 170), (180, 30), (180, 150)]
    return np.minimum.reduce([red_rod_field(s, length, (size, size)) for s in starts])


@pytest.fixture
def estimating_segmenter(red_fast_folder: Path) -> Segmenter:
    segmenter = load_segmenter(SegmenterConfig(red_fast_folder / DENSE_ONNX, providers=("CPUExecutionProvider",)))
    lengths = [o.length_px for o in segmenter.segment(rods_field(40)).bacilli]
    assert len(lengths) == 6
    segmenter.scale = ModelScale("red", 0.1, "test", {}, float(np.median(lengths)))
    return segmenter


def test_a_field_of_the_models_scale_is_read_once_and_bit_for_bit(estimating_segmenter: Segmenter) -> None:
    field = rods_field(40)
    plain = estimating_segmenter.segment(field)
    assumed = resolve_scale(estimating_segmenter.scale)
    read = segment_at_scale(estimating_segmenter, field, assumed, estimate=True)
    assert np.array_equal(plain.heatmap, read.heatmap) and plain.bacilli == read.bacilli
    assert read.scale is not None and read.scale.source is ScaleSource.ESTIMATED and read.scale.factor == 1.0
    assert read.scale.microns_per_pixel == pytest.approx(0.1, rel=0.1) and read.scale.measured_microns is None
    assert "not resampled" in read.scale.reasons[1]
    unasked = segment_at_scale(estimating_segmenter, field, assumed)  # estimate off (training's readers)
    assert unasked.scale is not None and unasked.scale.source is ScaleSource.ASSUMED


def test_a_field_of_half_the_scale_is_estimated_and_read_at_the_models(estimating_segmenter: Segmenter) -> None:
    native = rods_field(40)
    small = resample(native, (128, 128))  # the same rods photographed with pixels twice as large
    read = segment_at_scale(estimating_segmenter, small, resolve_scale(estimating_segmenter.scale), estimate=True)
    assert read.scale is not None and read.scale.source is ScaleSource.ESTIMATED
    assert read.scale.factor == pytest.approx(2.0, rel=0.2) and read.scale.relative_error is not None
    assert len(read.bacilli) == 6 and read.heatmap.shape == (128, 128)


def test_a_blank_field_falls_back_to_the_models_scale_and_says_why(estimating_segmenter: Segmenter) -> None:
    blank = np.full((200, 200, 3), 230, dtype=np.uint8)
    read = segment_at_scale(estimating_segmenter, blank, resolve_scale(estimating_segmenter.scale), estimate=True)
    assert read.scale is not None and read.scale.source is ScaleSource.ASSUMED and read.scale.factor == 1.0
    assert f"at least {MIN_OBJECTS}" in read.scale.reasons[-1]
    no_reference = replace(estimating_segmenter.scale, object_length_px=None)
    estimating_segmenter.scale = no_reference
    old = segment_at_scale(estimating_segmenter, blank, resolve_scale(no_reference), estimate=True)
    assert old.scale is not None and old.scale.source is ScaleSource.ASSUMED and len(old.scale.reasons) == 1


def test_a_slide_pools_its_fields_estimates_weighted_by_their_objects() -> None:
    assert pool_estimates([(2.0, 20), (2.2, 20)]) is None  # too few fields
    assert pool_estimates([(2.0, 6), (2.2, 6), (1.8, 6)]) is None  # too few objects together
    assert pool_estimates([(2.0, 30), (2.2, 30), (9.0, 4)]) is None  # a field under MIN_OBJECTS does not count
    pooled = pool_estimates([(2.0, 20), (2.4, 6), (1.6, 6), (3.5, 5)])
    assert pooled is not None and (pooled.fields, pooled.objects) == (4, 37)
    assert pooled.factor == pytest.approx(2.0)  # the field with most objects holds the weighted median
    assert 0 < pooled.relative_error < 0.3
    assert SLIDE_FIELDS >= 2 and SLIDE_OBJECTS >= SLIDE_FIELDS * MIN_OBJECTS
    empty = SlideEvidence((), EMPTY_PROBES)
    assert empty.skip_probe and not SlideEvidence(((2.0, 6),), EMPTY_PROBES).skip_probe


def test_on_a_slide_that_agrees_a_field_is_read_once_at_the_slides_factor_without_a_probe() -> None:
    calls: list[float] = []

    def read(factor: float) -> tuple[str, list[float]]:  # a sparse field: too few objects to estimate alone
        calls.append(factor)
        return f"read at {factor:.2f}", [40.0] * 2

    def probe(factor: float) -> list[float]:
        raise AssertionError("a slide with a pooled estimate is not probed")

    slide = SlideEvidence(((3.0, 10), (3.2, 12), (2.9, 9)))
    reading = estimate_and_read(read, 40.0, probe, slide)
    assert calls == [pytest.approx(3.0)] and reading.readings == 1 and reading.estimate is None
    assert reading.pooled is not None and reading.factor == pytest.approx(3.0)
    calls.clear()  # a slide at the model's scale: read as uploaded, and the field's own estimate kept for the pool

    def dense_read(factor: float) -> tuple[str, list[float]]:
        calls.append(factor)
        return "dense", [44.0] * 6

    dense = estimate_and_read(dense_read, 40.0, probe, SlideEvidence(((1.0, 12),) * 3))
    assert calls == [1.0] and dense.factor == 1.0 and dense.estimate is not None and dense.pooled is not None


def test_a_slide_whose_fields_show_no_rods_stops_probing() -> None:
    probed: list[float] = []

    def probe(factor: float) -> list[float]:
        probed.append(factor)
        return []

    blank = lambda f: ("blank", [])  # noqa: E731
    first = estimate_and_read(blank, 40.0, probe, SlideEvidence((), EMPTY_PROBES - 1))
    assert probed == [PROBE_FACTOR] and first.empty_probe and not first.probe_skipped
    later = estimate_and_read(blank, 40.0, probe, SlideEvidence((), EMPTY_PROBES))
    assert probed == [PROBE_FACTOR] and later.probe_skipped and later.readings == 1


def test_a_slide_of_half_scale_fields_reads_its_sparse_fields_at_the_pooled_scale(
    estimating_segmenter: Segmenter,
) -> None:
    small = resample(rods_field(40), (128, 128))
    sparse = resample(np.minimum.reduce([red_rod_field(s, 40, (256, 256)) for s in [(20, 20), (150, 150)]]), (128, 128))
    assumed = resolve_scale(estimating_segmenter.scale)
    slide = SlideScaleEvidence()
    alone = segment_at_scale(estimating_segmenter, sparse, assumed, estimate=True)
    assert alone.scale is not None and alone.scale.source is ScaleSource.ASSUMED  # 2 rods: nothing to go on alone
    for _ in range(SLIDE_FIELDS):
        read = segment_at_scale(estimating_segmenter, small, assumed, estimate=True, slide=slide)
        assert read.scale is not None and read.scale.source is ScaleSource.ESTIMATED
        assert read.scale.own_estimate is not None and read.scale.own_estimate[1] == 6
    assert slide.snapshot().pooled is None  # 18 objects: under SLIDE_OBJECTS
    slide = SlideScaleEvidence([(2.0, 12)] * SLIDE_FIELDS)
    read = segment_at_scale(estimating_segmenter, sparse, assumed, estimate=True, slide=slide)
    assert read.scale is not None and read.scale.source is ScaleSource.SLIDE and read.scale.factor == pytest.approx(2.0)
    assert read.scale.slide is not None and read.scale.slide.fields == SLIDE_FIELDS
    assert read.scale.measured_microns is None and "this slide's earlier fields" in read.scale.reasons[0]
    assert len(read.bacilli) == 2 and read.heatmap.shape == (128, 128)
