"""Slides: several fields graded together on the WHO/IUATLD scale (``/v1/slides``).

A slide is created with any number of fields in one request, or fields are added to a slide id one request at a
time (a lab information system sending each field as the microscope reaches it). Counts are kept in SQLite
(:mod:`service.slides.store`); the report and grade are recomputed from them on every read
(:mod:`service.slides.report`). Review and exports have their own route modules.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.inference import lab_of, plan_reading, segment_uploads
from service.api.lookups import ExistingSlide, existing_slide
from service.api.model_choice import LabParam, MixedModels, ModelParam, ModeParam, check_one_model
from service.api.openapi import IMAGE_ERRORS, Responses, image_body
from service.api.params import MicronsPerPixel, SlideId
from service.api.problems import Conflict, InvalidRequest, NotFound
from service.api.state import ReadyDep, Serving
from service.engine.scale_estimate import SlideScaleEvidence
from service.engine.segmenter import Mode
from service.field_result import FieldOptions
from service.slides.intake import slide_field
from service.slides.model import SLIDE_ID_PATTERN, Slide, SlideField
from service.slides.report import SlideReport

router = APIRouter(prefix="/v1/slides", tags=["slides"])

FIELDS_BODY = image_body("files", many=True, required=False)
ERRORS: Responses = {
    **IMAGE_ERRORS,
    404: {"description": "no such slide, or no such model"},
    409: {
        "description": "a slide with this id exists already, the slide was read by another model, or mode=fast "
        "asked of a model without fast-mode networks"
    },
    422: {"description": "an undecodable image, too many files, or invalid parameters; nothing is stored"},
}


async def _read_fields(
    serving: Serving,
    request: Request,
    existing: Slide | None,
    model: str | None,
    mode: Mode | None,
    lab: str | None,
    microns_per_pixel: float | None = None,
) -> list[SlideField]:
    """Read and segment every field of the request, keeping each field's objects for review; any bad field fails
    the whole request before anything is stored. Fields read without a pixel size learn the slide's scale from its
    earlier fields (stored, then this request's: :mod:`service.engine.scale_estimate`)."""
    reading = plan_reading(
        serving, model, mode, FieldOptions(microns_per_pixel=microns_per_pixel), lab=lab_of(serving, request, lab)
    )
    estimates, empty_probes = existing.scale_evidence(reading.model_id) if existing else ([], 0)
    evidence = SlideScaleEvidence(estimates, empty_probes)
    reading = replace(reading, options=replace(reading.options, slide_scale=evidence))
    first_index = len(existing.fields) if existing else 0
    done = await segment_uploads(serving, request, reading)
    return [
        slide_field(upload.filename or f"field-{first_index + i}", result.summary(include_rejected=True, outlines=True))
        for i, (upload, result) in enumerate(done)
    ]


@router.post(
    "",
    summary="Create a slide, with any number of fields (multipart 'files'), and grade it",
    response_model=SlideReport,
    status_code=201,
    responses=ERRORS,
    openapi_extra={"requestBody": FIELDS_BODY},
)
async def create_slide(
    request: Request,
    serving: ReadyDep,
    slide_id: Annotated[str | None, Query(pattern=SLIDE_ID_PATTERN, description="default: a new id")] = None,
    model: ModelParam = None,
    mode: ModeParam = None,
    lab: LabParam = None,
    microns_per_pixel: MicronsPerPixel = None,
) -> JSONResponse:
    """Send the fields as multipart parts named ``files`` (or one image as the raw body). The response gives the
    per-field counts, the total, AFB per field and the WHO/IUATLD grade with ``needs_review``."""
    store = serving.slides
    if slide_id is not None and store.get(slide_id, objects=False) is not None:
        raise Conflict(f"slide {slide_id!r} exists already; add fields to it instead")
    fields = await _read_fields(serving, request, None, model, mode, lab, microns_per_pixel)
    new_id, created = store.ensure(slide_id)
    if not created:
        raise Conflict(f"slide {new_id!r} exists already; add fields to it instead")
    store.add_fields(new_id, fields)
    headers = {"Location": f"/v1/slides/{new_id}"}
    report = serving.report(existing_slide(serving, new_id))
    return JSONResponse(report.model_dump(mode="json"), status_code=201, headers=headers)


@router.post(
    "/{slide_id}/fields",
    summary="Add fields to a slide (created when new) and grade it again",
    response_model=SlideReport,
    responses=ERRORS,
    openapi_extra={"requestBody": FIELDS_BODY},
)
async def add_fields(
    request: Request,
    serving: ReadyDep,
    slide_id: SlideId,
    model: ModelParam = None,
    mode: ModeParam = None,
    mixed_models: MixedModels = False,
    lab: LabParam = None,
    microns_per_pixel: MicronsPerPixel = None,
) -> SlideReport:
    """One field as the raw body or the multipart part ``file``, or several as parts named ``files``. A slide is
    read by one model: fields for a slide read by another are refused (409) unless ``mixed_models``."""
    store = serving.slides
    existing = store.get(slide_id, objects=False)  # its fields' models and count
    profile = lab_of(serving, request, lab)
    check_one_model(existing, profile.model_id if profile else serving.model(model).model_id, mixed_models)
    fields = await _read_fields(serving, request, existing, model, mode, lab, microns_per_pixel)
    if not fields:
        raise InvalidRequest(
            "the request has no image: send it as the body or as multipart 'files'", slug="missing-image"
        )
    store.ensure(slide_id)
    store.add_fields(slide_id, fields)
    return serving.report(existing_slide(serving, slide_id))


@router.get("/{slide_id}", summary="A slide's fields, counts and grade", response_model=SlideReport, responses=ERRORS)
def get_slide(serving: ReadyDep, slide: ExistingSlide) -> SlideReport:
    return serving.report(slide)


@router.delete("/{slide_id}", summary="Forget a slide", status_code=204, responses=ERRORS)
def delete_slide(serving: ReadyDep, slide_id: SlideId) -> Response:
    if not serving.slides.delete(slide_id):
        raise NotFound(f"no slide {slide_id!r}")
    return Response(status_code=204)
