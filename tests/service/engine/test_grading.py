"""WHO/IUATLD grading at the table's boundaries, and when a grade needs review."""

from __future__ import annotations

import pytest

from service.engine.grading import Grade, grade_slide


def _slide(total: int, fields: int) -> list[int]:
    """``fields`` counts adding up to ``total``, spread as evenly as counts allow."""
    return [total // fields + (1 if i < total % fields else 0) for i in range(fields)]


@pytest.mark.parametrize(
    ("total", "fields", "grade"),
    [
        (0, 100, Grade.NEGATIVE),
        (1, 100, Grade.SCANTY),
        (9, 100, Grade.SCANTY),
        (10, 100, Grade.ONE_PLUS),  # 10 per 100 fields: the scanty / 1+ boundary
        (99, 100, Grade.ONE_PLUS),
        (100, 100, Grade.TWO_PLUS),  # 1 per field: the 1+ / 2+ boundary
        (500, 50, Grade.TWO_PLUS),  # exactly 10 per field is still 2+
        (501, 50, Grade.THREE_PLUS),  # more than 10 per field
        (300, 20, Grade.THREE_PLUS),
        (3, 300, Grade.SCANTY),  # 1 per 100 fields
        (1, 300, Grade.SCANTY),  # below 1 per 100 fields, but bacilli were seen
    ],
)
def test_grades_at_the_boundaries(total: int, fields: int, grade: Grade) -> None:
    result = grade_slide(_slide(total, fields))
    assert result.grade is grade
    assert (result.total_afb, result.fields_examined) == (total, fields)
    assert result.afb_per_field == round(total / fields, 4)


def test_review_flags() -> None:
    clear_negative = grade_slide([0] * 100)
    assert not clear_negative.needs_review and clear_negative.report == "negative"

    few_negative = grade_slide([0] * 40)
    assert few_negative.grade is Grade.NEGATIVE and few_negative.needs_review
    assert few_negative.reasons == ("40 fields examined; a negative grade needs at least 100",)

    scanty = grade_slide(_slide(7, 100))
    assert scanty.needs_review and scanty.report == "scanty (7 AFB in 100 fields)"
    assert "scanty: confirm by re-reading the slide" in scanty.reasons

    near_1_plus = grade_slide(_slide(11, 100))  # 11 per 100: within 20% of 10
    assert near_1_plus.grade is Grade.ONE_PLUS and near_1_plus.needs_review
    assert any("boundary at 10" in r for r in near_1_plus.reasons)
    solid_1_plus = grade_slide(_slide(40, 100))
    assert not solid_1_plus.needs_review

    two_plus_on_30_fields = grade_slide(_slide(150, 30))  # 5 per field, but 2+ needs 50 fields
    assert two_plus_on_30_fields.grade is Grade.TWO_PLUS and two_plus_on_30_fields.needs_review
    assert two_plus_on_30_fields.fields_needed == 50
    assert not grade_slide(_slide(250, 50)).needs_review

    three_plus = grade_slide(_slide(400, 20))  # 20 per field on the 20 fields 3+ needs
    assert three_plus.grade is Grade.THREE_PLUS and not three_plus.needs_review
    near_3_plus = grade_slide(_slide(220, 20))  # 11 per field
    assert near_3_plus.needs_review and near_3_plus.grade is Grade.THREE_PLUS


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        grade_slide([])
    with pytest.raises(ValueError, match="negative"):
        grade_slide([3, -1])
