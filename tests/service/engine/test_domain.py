"""The domain check: measurements of a field, spreads of the training fields, the limit, and the Poisson bounds
the slide decision rests on (synthetic fields; the real labs are measured by ``python -m training domain``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from service.engine.domain import (
    FEATURE_NAMES,
    DomainModel,
    FalseRate,
    describe_field,
    poisson_quantile,
    poisson_upper,
)
from service.engine.errors import ModelContractError
from service.engine.loading import SegmenterConfig, load_segmenter
from training.data.synthetic import synthetic_field


def _pink(seed: int) -> np.ndarray:
    return synthetic_field(seed, height=160, width=200, background="pink").image


def _domain() -> DomainModel:
    described = [describe_field(_pink(seed)) for seed in range(8)]
    return DomainModel.fit("m", described, 6.0, "8 synthetic pink fields", "fixed for the test")


def test_a_field_is_described_by_every_feature() -> None:
    values = describe_field(_pink(0))
    assert set(values) == set(FEATURE_NAMES) and all(math.isfinite(v) for v in values.values())
    grey = np.full((64, 64, 3), 200, np.uint8)
    blank = describe_field(grey)
    assert blank["stained_share"] == 0.0 and blank["sharpness"] == 0.0 and blank["background_red_green"] == 1.0


def test_fields_like_the_training_ones_are_in_and_other_labs_out_with_reasons() -> None:
    domain = _domain()
    same = domain.check(_pink(20))
    assert same.in_domain and same.reasons == () and same.distance <= domain.z_limit
    green = synthetic_field(21, height=160, width=200, background="green").image
    other = domain.check(green)
    assert not other.in_domain and other.distance > domain.z_limit
    assert any("background colour" in r or "stain hue" in r for r in other.reasons), other.reasons
    small = domain.check(_pink(22)[::3, ::3])  # the same smear at a third of the scale
    assert not small.in_domain and any("field size" in r for r in small.reasons)


def test_a_domain_is_written_and_read_back_and_a_bad_one_refused(tmp_path: Path) -> None:
    domain = _domain()
    domain = DomainModel(**{**domain.__dict__, "foreign_false": FalseRate("another lab", 20, 26, 1.8)})
    domain.write(tmp_path / "domain.json")
    again = DomainModel.load(tmp_path / "domain.json")
    assert again == domain
    raw = json.loads((tmp_path / "domain.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**raw, "format": "something/9"}))
    with pytest.raises(ModelContractError, match=r"other\.json: format"):
        DomainModel.load(tmp_path / "other.json")
    (tmp_path / "unknown.json").write_text(json.dumps({**raw, "features": {**raw["features"], "mood": {}}}))
    with pytest.raises(ModelContractError, match="does not measure: mood"):
        DomainModel.load(tmp_path / "unknown.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ModelContractError, match=r"broken\.json: not a readable"):
        DomainModel.load(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="at least 3"):
        DomainModel.fit("m", [describe_field(_pink(0))], 6.0, "", "")


def test_a_domain_of_another_model_is_refused_at_load(random_dense_onnx: Path, tmp_path: Path) -> None:
    _domain().write(tmp_path / "domain.json")  # describes model "m"
    config = SegmenterConfig(model_path=random_dense_onnx, providers=("CPUExecutionProvider",))
    with pytest.raises(ModelContractError, match="describes m, not tbseg-random"):
        load_segmenter(SegmenterConfig(**{**config.__dict__, "domain_path": tmp_path / "domain.json"}))


def test_poisson_bounds_are_the_exact_ones() -> None:
    assert poisson_upper(0, 3) == pytest.approx(-math.log(0.05) / 3)  # the rule of three
    assert poisson_upper(26, 20) == pytest.approx(chi2.ppf(0.95, 54) / 40)
    assert poisson_upper(5, 0) == math.inf
    assert poisson_quantile(0.999, 0.0) == 0 and poisson_quantile(0.5, 100.0) == 100
