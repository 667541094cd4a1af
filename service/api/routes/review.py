"""Reviewing a slide (``/v1/slides/{id}/…``): a field's objects, accept / reject / add / remove, sign, the log.

A technician (on the web page, or a script) accepts or rejects each object the model found (kept bacilli and the
candidates its filter rejected), adds a bacillus it missed with a click, and signs the reviewed grade. Decisions are
stored on the slide record with who and when (the user an API key names, else the name the client gives) and
survive restarts; the slide report keeps the automatic and the reviewed figures side by side
(:mod:`service.slides.report`). The exports and the field image are in :mod:`service.api.routes.slide_exports`.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service.api.auth import request_user
from service.api.lookups import ExistingField, ExistingSlide, ReviewableField, existing_slide
from service.api.openapi import Responses
from service.api.params import FieldIndex, ObjectNumber, SlideId
from service.api.problems import Conflict, InvalidRequest, NotFound
from service.api.schemas import (
    AddIn,
    FieldObjects,
    ObjectOut,
    ObjectReviewed,
    ReviewEventOut,
    ReviewIn,
    SignIn,
)
from service.api.state import ReadyDep
from service.slides.model import Signature
from service.slides.report import SlideReport

router = APIRouter(prefix="/v1/slides", tags=["review"])

ERRORS: Responses = {
    404: {"description": "no such slide, field or object"},
    409: {"description": "the field's objects were not kept (it cannot be reviewed), or the object was not added"},
    422: {"description": "invalid parameters or body"},
}


def _who(request: Request, given: str | None) -> str | None:
    return request_user(request) or given


@router.get(
    "/{slide_id}/fields/{index}/objects",
    summary="A field's objects (kept, rejected, added) with their review",
    response_model=FieldObjects,
    responses=ERRORS,
)
def field_objects(slide_id: SlideId, index: FieldIndex, field: ExistingField) -> FieldObjects:
    return FieldObjects(
        slide_id=slide_id,
        index=index,
        name=field.name,
        width=field.width,
        height=field.height,
        model_id=field.model_id,
        filter_id=field.filter_id,
        mode=field.mode,
        reviewable=field.reviewable,
        afb=field.afb,
        reviewed_afb=field.reviewed_afb,
        image_url=f"/v1/slides/{slide_id}/fields/{index}/image" if field.job_id else None,
        objects=[ObjectOut.of(field, o) for o in field.objects],
    )


@router.put(
    "/{slide_id}/fields/{index}/objects/{number}/review",
    summary="Accept or reject an object (null clears the decision); the slide is graded again",
    response_model=ObjectReviewed,
    responses=ERRORS,
)
def review_object(
    request: Request,
    serving: ReadyDep,
    slide_id: SlideId,
    index: FieldIndex,
    number: ObjectNumber,
    body: ReviewIn,
    field: ReviewableField,
) -> ObjectReviewed:
    reviewed = serving.slides.review(slide_id, index, number, body.decision, _who(request, body.reviewer))
    if reviewed is None:
        raise NotFound(f"field {index} of slide {slide_id!r} has no object {number}")
    return ObjectReviewed(object=ObjectOut.of(field, reviewed), slide=serving.report(existing_slide(serving, slide_id)))


@router.post(
    "/{slide_id}/fields/{index}/objects",
    summary="Add a bacillus the model missed, at a point; the slide is graded again",
    response_model=ObjectReviewed,
    status_code=201,
    responses=ERRORS,
)
def add_object(
    request: Request, serving: ReadyDep, slide_id: SlideId, index: FieldIndex, body: AddIn, field: ReviewableField
) -> JSONResponse:
    if body.x >= field.width or body.y >= field.height:
        raise InvalidRequest(
            f"the point ({body.x:g}, {body.y:g}) lies outside the {field.width}×{field.height} field", slug="outside"
        )
    added = serving.slides.add_object(slide_id, index, body.x, body.y, _who(request, body.reviewer))
    result = ObjectReviewed(object=ObjectOut.of(field, added), slide=serving.report(existing_slide(serving, slide_id)))
    location = f"/v1/slides/{slide_id}/fields/{index}/objects"
    return JSONResponse(result.model_dump(mode="json"), status_code=201, headers={"Location": location})


@router.delete(
    "/{slide_id}/fields/{index}/objects/{number}",
    summary="Remove a bacillus added in review (the model's objects are rejected, not removed)",
    response_model=SlideReport,
    responses=ERRORS,
)
def remove_object(
    request: Request,
    serving: ReadyDep,
    slide_id: SlideId,
    index: FieldIndex,
    number: ObjectNumber,
    field: ReviewableField,
    reviewer: Annotated[
        str | None, Query(min_length=1, max_length=64, description="who removes it, when the API key names nobody")
    ] = None,
) -> SlideReport:
    if not serving.slides.remove_added(slide_id, index, number, _who(request, reviewer)):
        exists = any(o.number == number for o in field.objects)
        if exists:
            raise Conflict(f"object {number} was found by the model: reject it instead", slug="not-added")
        raise NotFound(f"field {index} of slide {slide_id!r} has no object {number}")
    return serving.report(existing_slide(serving, slide_id))


@router.post(
    "/{slide_id}/sign",
    summary="Sign the slide's reviewed grade as it stands (who: the API key's user, else 'signer')",
    response_model=SlideReport,
    responses=ERRORS,
)
def sign_slide(request: Request, serving: ReadyDep, slide: ExistingSlide, body: SignIn) -> SlideReport:
    signer = _who(request, body.signer)
    if signer is None:
        raise InvalidRequest("name who signs: 'signer' in the body (or an API key that names its user)")
    if not slide.fields:
        raise Conflict(f"slide {slide.slide_id!r} has no field to sign", slug="empty-slide")
    review = serving.report(slide).review
    serving.slides.sign(
        slide.slide_id,
        Signature(time.time(), signer, review.grade, review.report, review.total_afb, len(slide.fields)),
    )
    return serving.report(existing_slide(serving, slide.slide_id))


@router.get(
    "/{slide_id}/review-log",
    summary="Every review action on the slide, oldest first (decisions cleared later stay listed)",
    response_model=list[ReviewEventOut],
    responses=ERRORS,
)
def review_log(serving: ReadyDep, slide: ExistingSlide) -> list[ReviewEventOut]:
    return [
        ReviewEventOut(at=e.at, reviewer=e.reviewer, action=e.action, field=e.field, number=e.number)
        for e in serving.slides.history(slide.slide_id)
    ]
