"""The segmenter's defaults come from its model folder's object filter, and one rule chooses the mode."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest

from service.engine.defaults import MIN_OBJECT_PX, THRESHOLD
from service.engine.errors import ModeUnavailable
from service.engine.model import OnnxModel
from service.engine.modes import Mode, resolve_mode
from service.engine.object_filter import ObjectFilter
from service.engine.passes import ExactPass
from service.engine.segmenter import Override, Segmenter


def _filter_trained_with(source: Path, out: Path, threshold: float, min_object_px: int) -> Path:
    """A copy of a real object filter whose metadata says its candidates were cut at other values."""
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == "candidate_threshold":
            prop.value = str(threshold)
        elif prop.key == "min_object_px":
            prop.value = str(min_object_px)
    onnx.save(proto, str(out))
    return out


@pytest.fixture
def model_and_filter(
    random_dense_onnx: Path, random_object_filter: Path, tmp_path: Path
) -> tuple[OnnxModel, ObjectFilter]:
    """The random model and a real filter of it whose candidates were cut at 0.6 and 30 px."""
    model = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    return model, ObjectFilter(_filter_trained_with(random_object_filter, tmp_path / "f.onnx", 0.6, 30))


def test_the_candidate_cut_defaults_to_what_the_filter_was_trained_with(
    model_and_filter: tuple[OnnxModel, ObjectFilter], caplog: pytest.LogCaptureFixture
) -> None:
    model, trained = model_and_filter
    with caplog.at_level(logging.WARNING):
        own = Segmenter(model, object_filter=trained)
    assert (own.threshold, own.min_object_px, own.overrides) == (0.6, 30, ())
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert own.origin().threshold == 0.6 and own.origin().min_object_px == 30

    plain = Segmenter(model)  # no filter: the engine's defaults
    assert (plain.threshold, plain.min_object_px, plain.overrides) == (THRESHOLD, MIN_OBJECT_PX, ())


def test_a_differing_cut_is_used_warned_once_and_listed(
    model_and_filter: tuple[OnnxModel, ObjectFilter], caplog: pytest.LogCaptureFixture
) -> None:
    model, trained = model_and_filter
    with caplog.at_level(logging.WARNING):
        segmenter = Segmenter(model, threshold=0.4, min_object_px=30, object_filter=trained)
    assert segmenter.threshold == 0.4 and segmenter.overrides == (Override("threshold", 0.6, 0.4),)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "threshold=0.4" in warnings[0] and "0.6" in warnings[0]


def test_one_rule_chooses_the_mode() -> None:
    exact_only, both = (Mode.EXACT,), (Mode.EXACT, Mode.FAST)
    assert resolve_mode("m", both, None, Mode.FAST) is Mode.FAST
    assert resolve_mode("m", exact_only, None, Mode.FAST) is Mode.EXACT  # the default where the model can run it
    assert resolve_mode("m", both, Mode.EXACT, Mode.FAST) is Mode.EXACT
    with pytest.raises(ModeUnavailable, match=r"model m has no fast networks.*send mode=exact"):
        resolve_mode("m", exact_only, Mode.FAST, Mode.EXACT)


def test_a_segmenter_holds_one_pass_per_mode(random_dense_onnx: Path) -> None:
    segmenter = Segmenter(OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",)), tile_px=64)
    assert segmenter.modes == (Mode.EXACT,) and isinstance(segmenter.passes[Mode.EXACT], ExactPass)
    assert segmenter.resolve_mode(None, Mode.FAST) is Mode.EXACT
    with pytest.raises(ModeUnavailable):
        segmenter.warm_up(Mode.FAST)
