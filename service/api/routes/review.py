"""Reviewing a slide (``/v1/slides/{id}/…``): a field's objects, accept / reject / add, sign, and the exports.

A technician (on the web page, or a script) accepts or rejects each object the model found (kept bacilli and the
candidates its filter rejected), adds a bacillus it missed with a click, and signs the reviewed grade. Decisions are
stored on the slide record with who and when (the user an API key names, else the name the client gives) and
survive restarts; the slide report keeps the automatic and the reviewed figures side by side
(:mod:`service.slide_report`). The exports (:mod:`service.slide_exports`) are built from the same record.
"""

from __future__ import annotations

import io
import time
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from service.api.auth import request_user
from service.api.openapi import Responses
from service.api.params import SlideId
from service.api.problems import Conflict, Gone, InvalidRequest, NotFound
from service.api.state import ReadyDep, Serving
from service.engine.image_io import decode_image, encode_png
from service.slide_exports import AnnotationFormat, annotations_zip, counts_csv, field_geojson, report_html
from service.slide_report import SlideReport, slide_report
from service.slides import Decision, FieldCount, Origin, Signature, Slide, SlideObject

router = APIRouter(prefix="/v1/slides", tags=["review"])
identity = APIRouter(tags=["review"])

ERRORS: Responses = {
    404: {"description": "no such slide, field or object"},
    409: {"description": "the field's objects were not kept (it cannot be reviewed), or the object was not added"},
    410: {"description": "the field's image is no longer kept (its job expired)"},
    422: {"description": "invalid parameters or body"},
}
FieldIndex = Annotated[int, Path(ge=0, le=100_000, description="0-based, as in the slide report")]
ObjectNumber = Annotated[int, Path(ge=1, le=1_000_000, description="1-based within the field")]
Name = Annotated[str | None, Field(None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
BROWSER_FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg")}


class ObjectOut(BaseModel):
    number: int = Field(description="1-based within the field")
    origin: Origin = Field(description="kept (by the model), rejected (by its object filter) or added (in review)")
    x: float = Field(description="centre, pixels from the left")
    y: float = Field(description="centre, pixels from the top")
    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height")
    outline: list[tuple[int, int]] | None = Field(description="closed polygon; null for an added point")
    score: float | None = Field(description="the object filter's P(bacillus)")
    afb: int = Field(description="bacilli it counts for when counted")
    counted: bool = Field(description="counted after review: accepted, or kept and not rejected")
    decision: Decision | None
    reviewer: str | None
    reviewed_at: float | None = Field(description="Unix time")

    @classmethod
    def of(cls, field: FieldCount, o: SlideObject) -> ObjectOut:
        return cls(
            number=o.number,
            origin=o.origin,
            x=o.x,
            y=o.y,
            bbox=o.bbox,
            outline=list(o.outline) if o.outline is not None else None,
            score=o.score,
            afb=field.afb_of(o),
            counted=o.counted,
            decision=o.decision,
            reviewer=o.reviewer,
            reviewed_at=o.reviewed_at,
        )


class FieldObjects(BaseModel):
    slide_id: str
    index: int
    name: str
    width: int
    height: int
    model_id: str
    filter_id: str | None
    mode: str
    reviewable: bool
    afb: int
    reviewed_afb: int
    image_url: str | None
    objects: list[ObjectOut]


class ReviewIn(BaseModel):
    decision: Decision | None = Field(description="accept, reject, or null to clear the decision")
    reviewer: Name = Field(None, description="who decides, when the API key names nobody (ignored when it does)")


class AddIn(BaseModel):
    x: float = Field(ge=0, description="pixels from the left")
    y: float = Field(ge=0, description="pixels from the top")
    reviewer: Name = Field(None, description="who adds it, when the API key names nobody")


class SignIn(BaseModel):
    signer: Name = Field(None, description="who signs, when the API key names nobody")


class Me(BaseModel):
    user: str | None = Field(description="the user the API key names; null when it names nobody (or no key)")
    key_required: bool


@identity.get("/v1/me", summary="Who the API key names (reviews and signatures record it)", response_model=Me)
def me(request: Request, serving: ReadyDep) -> Me:
    return Me(user=request_user(request), key_required=bool(serving.settings.key_users))


class ReviewEventOut(BaseModel):
    at: float = Field(description="Unix time")
    reviewer: str | None
    action: str = Field(description="accept, reject, clear, add, remove or sign")
    field: int | None = Field(description="0-based field index; null for a signature")
    number: int | None = Field(description="the object's number in its field; null for a signature")


class ObjectReviewed(BaseModel):
    object: ObjectOut
    slide: SlideReport


def _slide(serving: Serving, slide_id: str) -> Slide:
    slide = serving.slides.get(slide_id)
    if slide is None:
        raise NotFound(f"no slide {slide_id!r}")
    return slide


def _field(slide: Slide, index: int, reviewable: bool = False) -> FieldCount:
    if index >= len(slide.fields):
        raise NotFound(f"slide {slide.slide_id!r} has {len(slide.fields)} field(s); there is no field {index}")
    field = slide.fields[index]
    if reviewable and not field.objects_kept:
        raise Conflict(
            f"field {index} of slide {slide.slide_id!r} has no kept objects to review (it was read before review "
            "existed); send it again as a job",
            slug="not-reviewable",
        )
    return field


def _who(request: Request, given: str | None) -> str | None:
    return request_user(request) or given


@router.get(
    "/{slide_id}/fields/{index}/objects",
    summary="A field's objects (kept, rejected, added) with their review",
    response_model=FieldObjects,
    responses=ERRORS,
)
def field_objects(serving: ReadyDep, slide_id: SlideId, index: FieldIndex) -> FieldObjects:
    slide = _slide(serving, slide_id)
    field = _field(slide, index)
    return FieldObjects(
        slide_id=slide_id,
        index=index,
        name=field.name,
        width=field.width,
        height=field.height,
        model_id=field.model_id,
        filter_id=field.filter_id,
        mode=field.mode,
        reviewable=field.objects_kept,
        afb=field.afb,
        reviewed_afb=field.reviewed_afb,
        image_url=f"/v1/slides/{slide_id}/fields/{index}/image" if field.job_id else None,
        objects=[ObjectOut.of(field, o) for o in field.items],
    )


@router.put(
    "/{slide_id}/fields/{index}/objects/{number}/review",
    summary="Accept or reject an object (null clears the decision); the slide is graded again",
    response_model=ObjectReviewed,
    responses=ERRORS,
)
def review_object(
    request: Request, serving: ReadyDep, slide_id: SlideId, index: FieldIndex, number: ObjectNumber, body: ReviewIn
) -> ObjectReviewed:
    field = _field(_slide(serving, slide_id), index, reviewable=True)
    reviewed = serving.slides.review(slide_id, index, number, body.decision, _who(request, body.reviewer))
    if reviewed is None:
        raise NotFound(f"field {index} of slide {slide_id!r} has no object {number}")
    return ObjectReviewed(object=ObjectOut.of(field, reviewed), slide=slide_report(_slide(serving, slide_id)))


@router.post(
    "/{slide_id}/fields/{index}/objects",
    summary="Add a bacillus the model missed, at a point; the slide is graded again",
    response_model=ObjectReviewed,
    status_code=201,
    responses=ERRORS,
)
def add_object(request: Request, serving: ReadyDep, slide_id: SlideId, index: FieldIndex, body: AddIn) -> JSONResponse:
    field = _field(_slide(serving, slide_id), index, reviewable=True)
    if body.x >= field.width or body.y >= field.height:
        raise InvalidRequest(
            f"the point ({body.x:g}, {body.y:g}) lies outside the {field.width}×{field.height} field", slug="outside"
        )
    added = serving.slides.add_object(slide_id, index, body.x, body.y, _who(request, body.reviewer))
    result = ObjectReviewed(object=ObjectOut.of(field, added), slide=slide_report(_slide(serving, slide_id)))
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
    reviewer: Annotated[
        str | None, Query(min_length=1, max_length=64, description="who removes it, when the API key names nobody")
    ] = None,
) -> SlideReport:
    field = _field(_slide(serving, slide_id), index, reviewable=True)
    if not serving.slides.remove_added(slide_id, index, number, _who(request, reviewer)):
        exists = any(o.number == number for o in field.items)
        if exists:
            raise Conflict(f"object {number} was found by the model: reject it instead", slug="not-added")
        raise NotFound(f"field {index} of slide {slide_id!r} has no object {number}")
    return slide_report(_slide(serving, slide_id))


@router.post(
    "/{slide_id}/sign",
    summary="Sign the slide's reviewed grade as it stands (who: the API key's user, else 'signer')",
    response_model=SlideReport,
    responses=ERRORS,
)
def sign_slide(request: Request, serving: ReadyDep, slide_id: SlideId, body: SignIn) -> SlideReport:
    slide = _slide(serving, slide_id)
    signer = _who(request, body.signer)
    if signer is None:
        raise InvalidRequest("name who signs: 'signer' in the body (or an API key that names its user)")
    if not slide.fields:
        raise Conflict(f"slide {slide_id!r} has no field to sign", slug="empty-slide")
    review = slide_report(slide).review
    serving.slides.sign(
        slide_id,
        Signature(time.time(), signer, review.grade, review.report, review.total_afb, len(slide.fields)),
    )
    return slide_report(_slide(serving, slide_id))


def _image(serving: Serving, field: FieldCount) -> tuple[bytes, str, str] | None:
    """The field's image as (bytes, media type, extension), as a browser shows it; None when no longer kept."""
    if field.job_id is None or field.job_field is None:
        return None
    path = serving.jobs.input_path(field.job_id, field.job_field)
    if not path.is_file():
        return None
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as probe:
        kind = BROWSER_FORMATS.get(probe.format or "")
    if kind is not None:
        return data, *kind
    return encode_png(decode_image(data, serving.settings.max_pixels).rgb), "image/png", "png"  # TIFF


@router.get(
    "/{slide_id}/fields/{index}/image",
    summary="A field's image (PNG or JPEG as sent; TIFF as PNG), while the job that read it is kept",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **ERRORS},
)
async def field_image(serving: ReadyDep, slide_id: SlideId, index: FieldIndex) -> Response:
    field = _field(_slide(serving, slide_id), index)
    image = await anyio.to_thread.run_sync(_image, serving, field)
    if image is None:
        raise Gone(
            f"the image of field {index} ({field.name}) is not kept: "
            + (
                "it was sent to /v1/slides directly, and only jobs keep their images"
                if field.job_id is None
                else f"its job expired (jobs are kept {serving.settings.job_retention_s // 3600} h)"
            )
        )
    return Response(image[0], media_type=image[1], headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/{slide_id}/fields/{index}/objects.geojson",
    summary="A field's objects after review as QuPath GeoJSON",
    responses={200: {"content": {"application/geo+json": {}}}, **ERRORS},
)
def field_objects_geojson(serving: ReadyDep, slide_id: SlideId, index: FieldIndex) -> JSONResponse:
    slide = _slide(serving, slide_id)
    _field(slide, index)
    return JSONResponse(field_geojson(slide, index), media_type="application/geo+json")


def _attachment(body: bytes, media_type: str, filename: str) -> Response:
    """A download: the body with its type and the file name a browser saves it under (slide ids need no quoting)."""
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get(
    "/{slide_id}/counts.csv",
    summary="Per-field counts, automatic and reviewed, as CSV",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **ERRORS},
)
def slide_counts_csv(serving: ReadyDep, slide_id: SlideId) -> Response:
    body = counts_csv(slide_report(_slide(serving, slide_id)))
    return _attachment(body.encode(), "text/csv; charset=utf-8", f"{slide_id}_counts.csv")


@router.get(
    "/{slide_id}/annotations.zip",
    summary="The reviewed objects as annotations that 'python -m training finetune --data' reads (zip)",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}, **ERRORS},
)
async def slide_annotations(
    serving: ReadyDep,
    slide_id: SlideId,
    format: Annotated[AnnotationFormat, Query(description="points: x,y,label CSV; voc: Pascal VOC XML")] = (
        AnnotationFormat.POINTS
    ),
) -> Response:
    slide = _slide(serving, slide_id)

    def image_of(index: int) -> tuple[bytes, str] | None:
        image = _image(serving, slide.fields[index])
        return (image[0], image[2]) if image else None

    body = await anyio.to_thread.run_sync(annotations_zip, slide, format, image_of)
    return _attachment(body, "application/zip", f"{slide_id}_annotations_{format.value}.zip")


@router.get(
    "/{slide_id}/report.html",
    summary="A printable slide report: grade, AFB per field, model, mode, reviewed and signed by",
    response_class=HTMLResponse,
    responses=ERRORS,
)
def slide_report_html(serving: ReadyDep, slide_id: SlideId) -> HTMLResponse:
    return HTMLResponse(report_html(slide_report(_slide(serving, slide_id))))


@router.get(
    "/{slide_id}/review-log",
    summary="Every review action on the slide, oldest first (decisions cleared later stay listed)",
    response_model=list[ReviewEventOut],
    responses=ERRORS,
)
def review_log(serving: ReadyDep, slide_id: SlideId) -> list[ReviewEventOut]:
    _slide(serving, slide_id)
    return [
        ReviewEventOut(at=e.at, reviewer=e.reviewer, action=e.action, field=e.field, number=e.number)
        for e in serving.slides.history(slide_id)
    ]
