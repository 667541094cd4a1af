"""Lab profiles: the operating point from the lab's negatives, the rule of three, the file, and the decision they
allow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.engine.errors import ModelContractError
from service.engine.lab_profile import LabProfile, NegativeEvidence, PositiveEvidence, fields_needed, scan_labs
from service.slides.model import Slide, SlideField
from service.slides.report import slide_report


def _negatives(fields: int, scores: tuple[float, ...] = (0.9, 0.4, 0.2)) -> NegativeEvidence:
    """``fields`` negative fields; the first one holds candidates scoring ``scores``, the others none."""
    return NegativeEvidence("test fields", fields, (scores, *([()] * (fields - 1))))


def test_the_operating_point_is_the_lowest_threshold_within_the_budget() -> None:
    positives = PositiveEvidence("test bacilli", 4, (0.95, 0.8, 0.3, None))
    profile = LabProfile.make("lab-a", "m", "f", _negatives(60), positives, budget=0.1)
    # 3 candidates in 60 fields are 0.05 per field, bound 0.131 > 0.1; keeping the 0.9 one only: 1 in 60, bound 0.079
    assert profile.object_threshold == 0.41 and profile.false_rate_upper_95 <= 0.1
    assert profile.positives is not None and profile.positives.recall_at(profile.object_threshold) == 0.5
    table = {row["threshold"]: row for row in profile.table()}
    assert table[0.0]["false_per_field"] == 0.05 and table[0.0]["recall"] == 0.75


def test_too_few_negative_fields_are_refused_naming_the_shortfall() -> None:
    assert fields_needed(0.5) == 6 and fields_needed(0.1) == 30
    with pytest.raises(ValueError, match=r"4 confirmed-negative field\(s\).*needs at least 30.*26 more"):
        LabProfile.make("lab-a", "m", "f", _negatives(4), None, budget=0.1)
    with pytest.raises(ValueError, match="lab id 'Lab A'"):
        LabProfile.make("Lab A", "m", "f", _negatives(60), None, budget=0.1)


def test_a_profile_is_written_read_back_and_scanned(tmp_path: Path) -> None:
    profile = LabProfile.make("lab-a", "m", "f", _negatives(60), None, budget=0.1, created_at=5.0)
    path = profile.write(tmp_path / "lab-a")
    assert LabProfile.load(path) == profile and scan_labs(tmp_path) == {"lab-a": profile}
    assert scan_labs(tmp_path / "missing") == {}
    (tmp_path / "lab-b").mkdir()
    raw = json.loads(path.read_text())
    (tmp_path / "lab-b" / "profile.json").write_text(json.dumps(raw))  # lab-a's profile in lab-b's folder
    with pytest.raises(ModelContractError, match=r"lab-b/profile\.json: lab_id 'lab-a' is not its folder's name"):
        scan_labs(tmp_path)
    (tmp_path / "lab-b" / "profile.json").write_text("[]")
    with pytest.raises(ModelContractError, match=r"lab-b/profile\.json: not a readable lab profile"):
        scan_labs(tmp_path)


def _slide(afb: list[int], lab: str | None = "lab-a", version: int = 1) -> Slide:
    fields = tuple(
        SlideField(f"f{i}", n, n, 100, 80, "m", "f", in_domain=False, lab_id=lab, lab_version=version)
        for i, n in enumerate(afb)
    )
    return Slide("s", 0.0, fields)


def test_with_a_profile_the_labs_own_negatives_decide() -> None:
    strict = LabProfile.make("lab-a", "m", "f", _negatives(200, ()), None, budget=0.05)  # no false bacillus at all
    labs = {"lab-a": strict}
    negative = slide_report(_slide([0] * 100), labs=labs)
    assert negative.decision == "negative" and negative.decision_evidence.lab_profile == "lab-a v1"
    assert negative.decision_evidence.rates[0].false_bacilli == 0
    one = slide_report(_slide([1] + [0] * 99), labs=labs)  # one kept object could be a scanty slide's one AFB
    assert one.decision == "review" and "within what lab lab-a's negative fields produce" in one.decision_reasons[0]
    positive = slide_report(_slide([30] * 20), labs=labs)
    assert positive.decision == "positive" and "lab lab-a" in positive.decision_reasons[0]

    loose = LabProfile.make("lab-a", "m", "f", _negatives(20, (0.9,) * 6), None, budget=0.9)  # 6 false in 20 fields
    zero = slide_report(_slide([0] * 100), labs={"lab-a": loose})
    assert zero.decision == "review" and "too many false bacilli" in zero.decision_reasons[0]


def test_a_profile_made_again_or_mixed_labs_are_review() -> None:
    profile = LabProfile.make("lab-a", "m", "f", _negatives(200, ()), None, budget=0.05, version=2)
    stale = slide_report(_slide([0] * 100, version=1), labs={"lab-a": profile})
    assert stale.decision == "review" and "now at version 2" in stale.decision_reasons[0]
    gone = slide_report(_slide([0] * 100), labs={})
    assert gone.decision == "review" and "no longer served" in gone.decision_reasons[0]
    mixed = Slide("s", 0.0, (*_slide([0]).fields, *_slide([0], lab=None).fields))
    assert "different lab profiles" in slide_report(mixed, labs={"lab-a": profile}).decision_reasons[0]
