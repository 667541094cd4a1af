"""Slides: several fields graded together on the WHO/IUATLD scale (``/v1/slides``).

A slide is created with any number of fields in one request, or fields are added to a slide id one request at a
time (a lab information system sending each field as the microscope reaches it). Counts are kept in SQLite
(:mod:`service.slides`); the grade is recomputed from them on every read (:mod:`service.grading`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.inference import decode_and_segment, record
from service.api.openapi import IMAGE_ERRORS, image_body
from service.api.problems import BadRequest
from service.api.schemas import SlideFieldOut, SlideReport
from service.api.state import ReadyDep, ServiceState, StateDep
from service.api.uploads import read_uploads
from service.grading import grade_slide
from service.slides import SLIDE_ID_PATTERN, FieldCount, Slide, SlideStore

router = APIRouter(prefix="/v1/slides", tags=["slides"])

FIELDS_BODY = image_body("files", many=True, required=False)
ERRORS = {
    **IMAGE_ERRORS,
    404: {"description": "no such slide"},
    409: {"description": "a slide with this id exists already"},
    422: {"description": "an undecodable image, too many files, or invalid parameters; nothing is stored"},
}
SlideId = Annotated[str, Path(pattern=SLIDE_ID_PATTERN, description="1–64 letters, digits, ., _ or -")]


def _store(state: ServiceState) -> SlideStore:
    assert state.slides is not None
    return state.slides


def report(slide: Slide) -> SlideReport:
    fields = [
        SlideFieldOut(
            index=i,
            name=f.name,
            objects=f.objects,
            afb=f.estimated_bacilli if f.filter_id else f.objects,
            estimated_bacilli=f.estimated_bacilli,
            width=f.width,
            height=f.height,
            model_id=f.model_id,
            filter_id=f.filter_id,
            added_at=f.added_at,
        )
        for i, f in enumerate(slide.fields)
    ]
    common = {"slide_id": slide.slide_id, "created_at": slide.created_at, "fields": fields}
    if not fields:
        return SlideReport(
            **common,  # type: ignore[arg-type]
            fields_examined=0,
            total_afb=0,
            afb_per_field=None,
            afb_per_100_fields=None,
            grade=None,
            report=None,
            fields_needed=None,
            needs_review=True,
            reasons=["no field examined yet"],
        )
    grade = grade_slide([f.afb for f in fields])
    return SlideReport(
        **common,  # type: ignore[arg-type]
        fields_examined=grade.fields_examined,
        total_afb=grade.total_afb,
        afb_per_field=grade.afb_per_field,
        afb_per_100_fields=grade.afb_per_100_fields,
        grade=grade.grade.value,
        report=grade.report,
        fields_needed=grade.fields_needed,
        needs_review=grade.needs_review,
        reasons=list(grade.reasons),
    )


async def _count_fields(state: ServiceState, request: Request, first_index: int) -> list[FieldCount]:
    """Read and segment every field of the request; any bad field fails the whole request before anything is
    stored."""
    settings = state.settings
    async with state.gate.admit():
        uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files_per_request)
        counts = []
        for i, upload in enumerate(uploads):
            done = await state.gate.run(decode_and_segment, state, upload.data, True, None)
            record(state, done)
            result, segmenter = done.result, state.segmenter
            assert segmenter is not None
            counts.append(
                FieldCount(
                    name=upload.filename or f"field-{first_index + i}",
                    objects=len(result.bacilli),
                    estimated_bacilli=result.estimated_bacilli,
                    width=done.decoded.width,
                    height=done.decoded.height,
                    model_id=segmenter.model.meta.model_id,
                    filter_id=segmenter.object_filter.meta.filter_id if segmenter.object_filter else None,
                )
            )
    return counts


@router.post(
    "",
    summary="Create a slide, with any number of fields (multipart 'files'), and grade it",
    response_model=SlideReport,
    status_code=201,
    responses=ERRORS,  # type: ignore[arg-type]
    openapi_extra={"requestBody": FIELDS_BODY},
)
async def create_slide(
    request: Request,
    state: ReadyDep,
    slide_id: Annotated[str | None, Query(pattern=SLIDE_ID_PATTERN, description="default: a new id")] = None,
) -> JSONResponse:
    """Send the fields as multipart parts named ``files`` (or one image as the raw body). The response gives the
    per-field counts, the total, AFB per field and the WHO/IUATLD grade with ``needs_review``."""
    store = _store(state)
    if slide_id is not None and store.get(slide_id) is not None:
        raise BadRequest(f"slide {slide_id!r} exists already; add fields to it instead", status=409, slug="conflict")
    counts = await _count_fields(state, request, 0)
    new_id, created = store.ensure(slide_id)
    if not created:
        raise BadRequest(f"slide {new_id!r} exists already; add fields to it instead", status=409, slug="conflict")
    store.add_fields(new_id, counts)
    slide = store.get(new_id)
    assert slide is not None
    headers = {"Location": f"/v1/slides/{new_id}"}
    return JSONResponse(report(slide).model_dump(), status_code=201, headers=headers)


@router.post(
    "/{slide_id}/fields",
    summary="Add fields to a slide (created when new) and grade it again",
    response_model=SlideReport,
    responses=ERRORS,  # type: ignore[arg-type]
    openapi_extra={"requestBody": FIELDS_BODY},
)
async def add_fields(request: Request, state: ReadyDep, slide_id: SlideId) -> SlideReport:
    """One field as the raw body or the multipart part ``file``, or several as parts named ``files``."""
    store = _store(state)
    existing = store.get(slide_id)
    counts = await _count_fields(state, request, len(existing.fields) if existing else 0)
    if not counts:
        raise BadRequest("the request has no image: send it as the body or as multipart 'files'", 422, "missing-image")
    store.ensure(slide_id)
    store.add_fields(slide_id, counts)
    slide = store.get(slide_id)
    assert slide is not None
    return report(slide)


@router.get("/{slide_id}", summary="A slide's fields, counts and grade", response_model=SlideReport, responses=ERRORS)  # type: ignore[arg-type]
def get_slide(state: StateDep, slide_id: SlideId) -> SlideReport:
    slide = _store(state).get(slide_id) if state.slides is not None else None
    if slide is None:
        raise BadRequest(f"no slide {slide_id!r}", status=404, slug="not-found")
    return report(slide)


@router.delete("/{slide_id}", summary="Forget a slide", status_code=204, responses=ERRORS)  # type: ignore[arg-type]
def delete_slide(state: StateDep, slide_id: SlideId) -> Response:
    if state.slides is None or not state.slides.delete(slide_id):
        raise BadRequest(f"no slide {slide_id!r}", status=404, slug="not-found")
    return Response(status_code=204)
