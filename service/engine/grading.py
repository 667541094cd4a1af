"""WHO/IUATLD grading of a Ziehl-Neelsen slide (1000× oil immersion) from the bacilli counted per field.

| finding                               | grade                     | fields it needs |
|---------------------------------------|---------------------------|-----------------|
| no AFB in ≥ 100 fields                | negative                  | 100             |
| 1–9 AFB per 100 fields                | scanty (report the count) | 100             |
| 10–99 AFB per 100 fields              | 1+                        | 100             |
| 1–10 AFB per field on average         | 2+                        | 50              |
| > 10 AFB per field on average         | 3+                        | 20              |

Counts are normalised to the fields examined (AFB per field, AFB per 100 fields), so a grade can be proposed from
any number of fields; it *needs review* when fewer fields were examined than the grade needs, when it is scanty
(a human re-reads scanty slides, as automated systems that did well in the field did), or when the normalised
count lies within ``margin`` (relative, 20% by default) of a grade boundary (10 per 100 fields, 1 and 10 per
field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

REVIEW_MARGIN = 0.2


class Grade(StrEnum):
    NEGATIVE = "negative"
    SCANTY = "scanty"
    ONE_PLUS = "1+"
    TWO_PLUS = "2+"
    THREE_PLUS = "3+"


FIELDS_NEEDED = {Grade.NEGATIVE: 100, Grade.SCANTY: 100, Grade.ONE_PLUS: 100, Grade.TWO_PLUS: 50, Grade.THREE_PLUS: 20}


@dataclass(frozen=True)
class SlideGrade:
    """The grade of a slide and what it rests on.

    Attributes:
        grade: the WHO/IUATLD grade.
        report: how a lab writes it, e.g. ``scanty (7 AFB in 100 fields)`` or ``2+``.
        fields_examined: fields counted.
        total_afb: bacilli counted over them.
        afb_per_field, afb_per_100_fields: the total normalised to the fields examined.
        fields_needed: fields the grade's definition asks for.
        needs_review: whether a microscopist should re-read the slide; ``reasons`` says why.
    """

    grade: Grade
    report: str
    fields_examined: int
    total_afb: int
    afb_per_field: float
    afb_per_100_fields: float
    fields_needed: int
    needs_review: bool
    reasons: tuple[str, ...]


def _near(value: float, boundary: float, margin: float) -> bool:
    return boundary * (1 - margin) <= value <= boundary * (1 + margin)


def grade_slide(afb_per_field: Sequence[int], margin: float = REVIEW_MARGIN) -> SlideGrade:
    """Grade a slide from the AFB counted in each field examined.

    Raises:
        ValueError: no fields, or a negative count.
    """
    if not afb_per_field:
        raise ValueError("a slide needs at least one field to be graded")
    if any(c < 0 for c in afb_per_field):
        raise ValueError("AFB counts cannot be negative")
    fields, total = len(afb_per_field), int(sum(afb_per_field))
    mean, per_100 = total / fields, 100 * total / fields
    if mean > 10:
        grade = Grade.THREE_PLUS
    elif mean >= 1:
        grade = Grade.TWO_PLUS
    elif per_100 >= 10:
        grade = Grade.ONE_PLUS
    elif total > 0:
        grade = Grade.SCANTY
    else:
        grade = Grade.NEGATIVE
    reasons = []
    needed = FIELDS_NEEDED[grade]
    if fields < needed:
        reasons.append(f"{fields} fields examined; a {grade.value} grade needs at least {needed}")
    if grade is Grade.SCANTY:
        reasons.append("scanty: confirm by re-reading the slide")
    boundaries = ((per_100, 10, "AFB per 100 fields"), (mean, 1, "AFB per field"), (mean, 10, "AFB per field"))
    for value, boundary, unit in boundaries:
        if _near(value, boundary, margin):
            reasons.append(f"{value:.3g} {unit} is within {margin:.0%} of the boundary at {boundary}")
    report = f"scanty ({total} AFB in {fields} fields)" if grade is Grade.SCANTY else grade.value
    return SlideGrade(
        grade=grade,
        report=report,
        fields_examined=fields,
        total_afb=total,
        afb_per_field=round(mean, 4),
        afb_per_100_fields=round(per_100, 2),
        fields_needed=needed,
        needs_review=bool(reasons),
        reasons=tuple(reasons),
    )
