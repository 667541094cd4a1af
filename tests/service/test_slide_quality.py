"""A slide counts readable fields only, each field once (service.slides.report.Counted)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.engine.fingerprint import duplicates, field_fingerprint, same_field, similarity
from service.engine.lab_profile import LabProfile, NegativeEvidence
from service.slides.model import Slide, SlideField
from service.slides.report import slide_report
from tests.service.engine.test_quality import smear_like
from training.data.degrade import exposure, jpeg

BLUR = ("out of focus: sharpness 1.2, readable fields are ≥ 1.55",)


def _field(i: int, afb: int = 0, readable: bool | None = True, sha: str | None = None) -> SlideField:
    return SlideField(
        f"f{i}.png",
        afb,
        afb,
        100,
        80,
        "m",
        "f",
        in_domain=False,
        lab_id="lab-a",
        lab_version=1,
        readable=readable,
        quality_reasons=() if readable is not False else BLUR,
        sha256=sha or f"sha-{i}",
    )


def _strict_lab() -> dict[str, LabProfile]:
    negatives = NegativeEvidence("lab-a's negative slides", 200, tuple(() for _ in range(200)))
    return {"lab-a": LabProfile.make("lab-a", "m", "f", negatives, None, budget=0.05)}


def test_a_negative_needs_100_readable_fields_and_unreadable_ones_are_listed_not_counted() -> None:
    labs = _strict_lab()
    readable = slide_report(Slide("s", 0.0, tuple(_field(i) for i in range(100))), labs=labs)
    assert readable.decision == "negative" and readable.fields_examined == 100
    some_blurred = tuple(_field(i, readable=i >= 10) for i in range(100))  # 10 out of focus: 90 readable
    report = slide_report(Slide("s", 0.0, some_blurred), labs=labs)
    assert report.fields_examined == 90 and len(report.fields) == 100
    assert report.decision == "review" and report.grade == "negative"
    assert not report.fields[0].counted and report.fields[0].readable is False
    assert report.fields[0].quality_reasons == list(BLUR)
    assert any("10 unreadable field(s) not counted as examined: field 0 (out of focus" in r for r in report.reasons)


def test_unreadable_fields_do_not_hide_bacilli_and_a_mostly_unreadable_slide_is_review() -> None:
    fields = tuple(_field(i, afb=3 if i < 40 else 0, readable=i < 40) for i in range(100))
    report = slide_report(Slide("s", 0.0, fields), labs=_strict_lab())
    assert report.fields_examined == 40 and report.total_afb == 120
    assert report.decision == "review" and report.decision_reasons[0].startswith("most of its fields are unreadable")
    assert report.review.decision == "review"
    blank = slide_report(Slide("b", 0.0, tuple(_field(i, readable=False) for i in range(5))), labs=_strict_lab())
    assert blank.fields_examined == 0 and blank.grade is None and blank.decision == "review"
    assert blank.reasons[0] == "no readable field examined yet" and len(blank.fields) == 5


def test_the_same_field_sent_twice_is_counted_once() -> None:
    fields = [_field(i, afb=2) for i in range(3)]
    fields.append(replace(_field(3, afb=2), sha256="sha-1"))  # field 1 again, byte for byte
    report = slide_report(Slide("s", 0.0, tuple(fields)))
    assert report.fields_examined == 3 and report.total_afb == 6
    assert report.fields[3].duplicate_of == 1 and not report.fields[3].counted
    assert any("field 3 = field 1" in r for r in report.reasons)


def test_a_field_re_encoded_or_brightened_is_the_same_and_another_field_is_not() -> None:
    field, other = smear_like(seed=0), smear_like(seed=1)
    mark = field_fingerprint(field)
    assert (similarity(mark, field_fingerprint(jpeg(field, 40))) or 0) >= 0.92
    assert same_field((None, mark), ("x", field_fingerprint(exposure(field, 1.15))))
    assert not same_field((None, mark), (None, field_fingerprint(other)))
    blank = field_fingerprint(np.full((50, 50, 3), 230, np.uint8))
    assert similarity(blank, blank) is None and not same_field((None, blank), (None, blank))
    assert same_field(("same", blank), ("same", blank))
    assert duplicates([("a", mark), ("b", field_fingerprint(other)), ("c", field_fingerprint(jpeg(field, 60)))]) == [
        None,
        None,
        0,
    ]
