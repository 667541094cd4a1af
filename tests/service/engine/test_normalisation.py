"""Field normalisation: the background estimate, both methods, the metadata contract, and exact tiling with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from service.engine.errors import ModelContractError
from service.engine.model import OnnxModel
from service.engine.normalisation import InputNormalisation
from service.engine.segmenter import Segmenter
from training.data.synthetic import synthetic_field

REFERENCE = (194.5, 190.5, 153.0)


def _field(seed: int = 5, background: str = "blue") -> np.ndarray:
    return synthetic_field(seed, height=150, width=180, background=background).image


def test_gain_maps_the_background_to_the_reference() -> None:
    norm = InputNormalisation("background-gain", REFERENCE)
    field = _field()
    out = norm.apply(field)
    assert out.shape == field.shape and out.dtype == np.uint8
    np.testing.assert_allclose(norm.background(out), REFERENCE, atol=2.0)


def test_a_paler_brighter_copy_of_a_field_normalises_to_nearly_the_same_field() -> None:
    """What the normalisation is for: another lamp and white balance, same smear."""
    norm = InputNormalisation("background-gain", REFERENCE)
    field = _field()
    other_lamp = np.clip(field.astype(np.float32) * np.array([1.15, 1.05, 0.9]), 0, 255).round().astype(np.uint8)
    raw_gap = np.abs(other_lamp.astype(int) - field).mean()
    normalised_gap = np.abs(norm.apply(other_lamp).astype(int) - norm.apply(field)).mean()
    assert normalised_gap < raw_gap / 4


def test_od_method_darkens_a_pale_stain_toward_the_reference_density() -> None:
    field = _field()
    probe = InputNormalisation("background-od", REFERENCE)
    density = probe.stain_density(field, probe.background(field))
    assert density is not None
    norm = InputNormalisation("background-od", REFERENCE, reference_density=2 * density, max_density_gain=3)
    out = norm.apply(field)
    after = norm.stain_density(out, norm.background(out))
    assert after is not None and after > 1.5 * density


def test_a_given_background_replaces_the_estimate() -> None:
    norm = InputNormalisation("background-gain", REFERENCE)
    field = _field()
    crop = field[40:80, 50:90]
    np.testing.assert_array_equal(norm.apply(crop, norm.background(field)), norm.apply(field)[40:80, 50:90])


def test_metadata_round_trip_and_bad_values_name_the_model() -> None:
    norm = InputNormalisation("background-od", REFERENCE, reference_density=0.5)
    assert InputNormalisation.from_json(norm.to_json(), "m.onnx") == norm
    for bad, said in (
        ("not json", "not JSON"),
        ('{"version": 2, "method": "background-gain", "reference": [1, 2, 3]}', "version 2"),
        ('{"version": 1, "method": "stain-vectors", "reference": [1, 2, 3]}', "method 'stain-vectors'"),
        ('{"version": 1, "method": "background-gain"}', "bad parameter"),
        ('{"version": 1, "method": "background-gain", "reference": [0, 2, 3]}', "out of range"),
    ):
        with pytest.raises(ModelContractError, match=said) as caught:
            InputNormalisation.from_json(bad, "m.onnx")
        assert "m.onnx" in str(caught.value)


def test_a_model_without_the_key_sees_the_field_as_it_is(random_dense_onnx: Path) -> None:
    model = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    assert model.meta.normalisation is None
    field = _field()
    assert Segmenter(model).prepare(field) is field


def test_tiles_of_a_normalised_field_equal_the_whole_field(random_dense_onnx: Path) -> None:
    """Normalisation is estimated once per field: any tile size gives the same heatmap and the same bacilli."""
    model = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    model.meta = dataclasses.replace(model.meta, normalisation=InputNormalisation("background-gain", REFERENCE))
    field = _field(7, "pink")
    whole = Segmenter(model, tile_px=512).segment(field)
    tiled = Segmenter(model, tile_px=48).segment(field)
    np.testing.assert_allclose(tiled.heatmap, whole.heatmap, atol=1e-5)
    assert [b.bbox for b in tiled.bacilli] == [b.bbox for b in whole.bacilli]
    plain = Segmenter(OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",)), tile_px=512).heatmap(field)
    assert not np.allclose(plain, whole.heatmap, atol=1e-3)  # the normalisation did change what the network saw
