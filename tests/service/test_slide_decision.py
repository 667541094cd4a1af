"""The slide decision: positive only beyond what false bacilli can produce, review everywhere else; never negative
without a lab profile."""

from __future__ import annotations

from service.engine.domain import FalseRate
from service.engine.slide_decision import UNMEASURED_LAB_FACTOR, ModelEvidence
from service.slides.model import Slide, SlideField
from service.slides.report import slide_report

EVIDENCE = {
    "m": ModelEvidence(
        in_domain=FalseRate("its validation fields", 3, 0, 0.9986),
        foreign=FalseRate("another lab's negative fields", 20, 26, 1.8038),
    )
}


def _slide(afb: list[int], in_domain: bool | None = True) -> Slide:
    fields = tuple(
        SlideField(
            name=f"f{i}.png",
            kept_objects=n,
            estimated_bacilli=n,
            width=100,
            height=80,
            model_id="m",
            filter_id="flt",
            in_domain=in_domain,
        )
        for i, n in enumerate(afb)
    )
    return Slide("s", 0.0, fields)


def test_a_slide_far_beyond_false_bacilli_is_positive() -> None:
    report = slide_report(_slide([30] * 20), evidence=EVIDENCE)  # 3+ in 20 in-domain fields
    assert report.grade == "3+" and report.decision == "positive", report.decision_reasons
    evidence = report.decision_evidence
    assert evidence.fields_in_domain == 20 and evidence.false_bacilli_ceiling == round(20 * 0.9986, 3)
    assert evidence.positive_above is not None and evidence.positive_above < 600
    assert [r.factor for r in evidence.rates] == [1.0]


def test_another_labs_negative_fields_are_review_not_a_grade() -> None:
    report = slide_report(_slide([1] * 100, in_domain=False), evidence=EVIDENCE)  # UFAM-like: 1 false per field
    assert report.grade == "2+" and report.decision == "review"
    assert any("do not look like the model's training fields" in r for r in report.decision_reasons)
    assert any("within what false bacilli alone can produce" in r for r in report.decision_reasons)
    assert report.decision_evidence.rates[0].factor == UNMEASURED_LAB_FACTOR
    # even 1.3 or 11.75 per field (a worse slide, a worse model) is never signed on an unmeasured microscope
    assert slide_report(_slide([12] * 100, in_domain=False), evidence=EVIDENCE).decision == "review"


def test_scanty_near_a_boundary_and_without_evidence_are_review() -> None:
    scanty = slide_report(_slide([1] + [0] * 99), evidence=EVIDENCE)
    assert scanty.grade == "scanty" and scanty.decision == "review"
    near = slide_report(_slide([10] * 50), evidence=EVIDENCE)  # 10 AFB per field: the 2+/3+ boundary
    assert near.decision == "review" and any("grade needs a person" in r for r in near.decision_reasons)
    unknown = slide_report(_slide([30] * 20), evidence={})
    assert unknown.decision == "review" and any("domain.json" in r for r in unknown.decision_reasons)
    empty = slide_report(Slide("e", 0.0, ()), evidence=EVIDENCE)
    assert empty.decision == "review" and empty.decision_reasons == ["no field examined yet"]


def test_no_slide_is_negative_without_a_lab_profile() -> None:
    report = slide_report(_slide([0] * 100), evidence=EVIDENCE)
    assert report.grade == "negative" and report.decision == "review"
    assert any("no lab profile" in r for r in report.decision_reasons)
