"""A slide's report: its fields' counts and its WHO/IUATLD grade (:mod:`service.grading`), as clients read it.

One schema for ``GET /v1/slides/{id}``, a finished job's ``slide`` and the batch command's ``slide.json``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.engine.grading import grade_slide
from service.slides import Slide


class SlideFieldOut(BaseModel):
    index: int = Field(description="0-based, in the order the fields were added")
    name: str = Field(description="the uploaded file's name, or field-<index>")
    objects: int = Field(description="objects kept as bacilli")
    afb: int = Field(description="bacilli counted for grading: estimated_bacilli with an object filter, else objects")
    estimated_bacilli: int
    width: int
    height: int
    model_id: str
    filter_id: str | None
    mode: str = Field(description="exact or fast: how the field was read")
    added_at: float = Field(description="Unix time")


class SlideReport(BaseModel):
    slide_id: str
    created_at: float = Field(description="Unix time")
    models: list[str] = Field(description="the models that read its fields (more than one needs review)")
    modes: list[str] = Field(description="the modes its fields were read in (exact, fast)")
    fields: list[SlideFieldOut]
    fields_examined: int
    total_afb: int
    afb_per_field: float | None
    afb_per_100_fields: float | None
    grade: str | None = Field(description="WHO/IUATLD: negative, scanty, 1+, 2+ or 3+; null before any field")
    report: str | None = Field(description="as a lab writes it, e.g. 'scanty (7 AFB in 100 fields)'")
    fields_needed: int | None = Field(description="fields the grade's definition asks for")
    needs_review: bool
    reasons: list[str]


def slide_report(slide: Slide, more_reasons: tuple[str, ...] = ()) -> SlideReport:
    """The report of a slide, graded from its fields' AFB; ``more_reasons`` (e.g. fields that could not be read)
    are added to the review reasons and make it need review."""
    fields = [
        SlideFieldOut(
            index=i,
            name=f.name,
            objects=f.objects,
            afb=f.afb,
            estimated_bacilli=f.estimated_bacilli,
            width=f.width,
            height=f.height,
            model_id=f.model_id,
            filter_id=f.filter_id,
            mode=f.mode,
            added_at=f.added_at,
        )
        for i, f in enumerate(slide.fields)
    ]
    if not fields:
        return SlideReport(
            slide_id=slide.slide_id,
            created_at=slide.created_at,
            models=[],
            modes=[],
            fields=[],
            fields_examined=0,
            total_afb=0,
            afb_per_field=None,
            afb_per_100_fields=None,
            grade=None,
            report=None,
            fields_needed=None,
            needs_review=True,
            reasons=["no field examined yet", *more_reasons],
        )
    grade = grade_slide([f.afb for f in fields])
    models = slide.model_ids
    mixed = (
        (f"its fields were read by {len(models)} models ({', '.join(models)}): their counts are not comparable",)
        if len(models) > 1
        else ()
    )
    reasons = [*grade.reasons, *mixed, *more_reasons]
    return SlideReport(
        slide_id=slide.slide_id,
        created_at=slide.created_at,
        models=models,
        modes=list(dict.fromkeys(f.mode for f in slide.fields)),
        fields=fields,
        fields_examined=grade.fields_examined,
        total_afb=grade.total_afb,
        afb_per_field=grade.afb_per_field,
        afb_per_100_fields=grade.afb_per_100_fields,
        grade=grade.grade.value,
        report=grade.report,
        fields_needed=grade.fields_needed,
        needs_review=bool(reasons),
        reasons=reasons,
    )
