"""The slide's decision after a person reviewed it (:mod:`service.slides.review_decision`), through the report."""

from __future__ import annotations

from dataclasses import replace

from service.engine.slide_decision import GALLERY_DEPTH
from service.slides.model import Decision, ObjectSource, Slide, SlideField, SlideObject
from service.slides.report import slide_report


def _object(number: int, source: ObjectSource, score: float | None, decision: Decision | None = None) -> SlideObject:
    return SlideObject(
        number, source, 10.0, 10.0, (5, 5, 10, 10), None, score, 1, decision, "alice" if decision else None
    )


def _slide(fields: int, objects: tuple[SlideObject, ...]) -> Slide:
    """``fields`` fields; the first holds ``objects`` (its kept ones counted), the rest nothing."""
    kept = sum(o.source is ObjectSource.KEPT for o in objects)
    first = SlideField("f0.png", kept, kept, 50, 50, "m", "flt", reviewable=True, objects=objects)
    empty = SlideField("f.png", 0, 0, 50, 50, "m", "flt", reviewable=True)
    return Slide("s", 0.0, (first, *[replace(empty, name=f"f{i}.png") for i in range(1, fields)]))


def test_before_any_review_the_reviewed_decision_is_the_automatic_one() -> None:
    report = slide_report(_slide(100, (_object(1, ObjectSource.KEPT, 0.9),)))
    assert report.review.decision == report.decision == "review"
    assert report.review.decision_reasons == ["no object reviewed yet: the automatic decision"]


def test_one_bacillus_a_person_confirmed_makes_the_slide_positive() -> None:
    objects = (
        _object(1, ObjectSource.KEPT, 0.4, Decision.REJECT),
        _object(2, ObjectSource.REJECTED, 0.3, Decision.ACCEPT),
    )
    report = slide_report(_slide(2, objects))
    assert report.decision == "review" and report.review.decision == "positive"
    assert report.review.decision_reasons == ["1 bacillus confirmed by alice in 1 field(s)"]
    assert report.review.grade == "1+"  # the grade is the reviewed count's: 1 AFB in 2 fields, 50 per 100


def test_a_person_signs_a_negative_only_having_rejected_the_best_candidates_on_enough_fields() -> None:
    many = tuple(_object(i + 1, ObjectSource.KEPT if i < 2 else ObjectSource.REJECTED, 1 - i / 100) for i in range(60))
    # the first 40 rejected: 10 of the best 50 are still open
    partly = tuple(replace(o, decision=Decision.REJECT) if o.number <= 40 else o for o in many)
    report = slide_report(_slide(100, partly))
    assert report.review.decision == "review"
    assert report.review.decision_reasons == [
        f"10 of the {GALLERY_DEPTH} best-scoring candidates in the gallery are not yet reviewed (a negative signed "
        "by a person needs them rejected)"
    ]
    done = tuple(replace(o, decision=Decision.REJECT) if o.number <= GALLERY_DEPTH else o for o in many)
    report = slide_report(_slide(100, done))
    assert report.review.decision == "negative" and report.review.grade == "negative"
    assert "were rejected by a reviewer" in report.review.decision_reasons[0]
    few = slide_report(_slide(20, done))  # the same review on 20 fields: not enough for a negative
    assert few.review.decision == "review"
    assert few.review.decision_reasons == ["20 field(s) examined: a negative needs 100"]
    kept_open = tuple(o if o.number == 1 else replace(o, decision=Decision.REJECT) for o in many)
    assert (
        "1 object(s) the model kept are not yet reviewed"
        in slide_report(_slide(100, kept_open)).review.decision_reasons
    )
