"""A slide's ranked gallery (``GET /v1/slides/{id}/gallery``) and its thumbnails: every candidate across the
slide's fields, kept and rejected, best object-filter score first (:mod:`service.slides.gallery`), each with a small
crop of its field. A technician confirms or rejects them with the review routes; the decision and the grade follow
the review. Thumbnails need the field image, which the job that read the field keeps for ``TBSEG_JOB_RETENTION_S``:
after that a thumbnail answers 410 and the gallery lists the item with ``thumbnail_url: null``."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import Response

from service.api.field_images import DecodedFields, not_kept
from service.api.lookups import ExistingField, ExistingSlide
from service.api.openapi import Responses
from service.api.params import FieldIndex, ObjectNumber, SlideId
from service.api.problems import NotFound
from service.api.schemas import Gallery, GalleryItemOut
from service.api.state import ReadyDep
from service.engine.image_io import encode_png
from service.render import thumbnail
from service.slides.gallery import ranked_candidates

router = APIRouter(prefix="/v1/slides", tags=["review"])

ERRORS: Responses = {
    404: {"description": "no such slide, field or object"},
    410: {"description": "the field's image is no longer kept (its job expired): no thumbnail"},
    422: {"description": "invalid parameters"},
}
MAX_ITEMS = 500
SOURCES = DecodedFields()


@router.get(
    "/{slide_id}/gallery",
    summary="The slide's candidates across its fields, kept and rejected, best object-filter score first",
    response_model=Gallery,
    responses=ERRORS,
)
def gallery(
    serving: ReadyDep,
    slide_id: SlideId,
    slide: ExistingSlide,
    limit: Annotated[int, Query(ge=1, le=MAX_ITEMS, description=f"items to list (1–{MAX_ITEMS})")] = 100,
) -> Gallery:
    ranked = ranked_candidates(slide)
    report = serving.report(slide)
    items = [
        GalleryItemOut(
            rank=rank,
            field_index=g.field_index,
            field_name=g.field.name,
            number=g.item.number,
            origin=g.item.source,
            score=g.item.score,
            bbox=g.item.bbox,
            counted=g.item.counted,
            decision=g.item.decision,
            reviewer=g.item.reviewer,
            thumbnail_url=(
                f"/v1/slides/{slide_id}/fields/{g.field_index}/objects/{g.item.number}/thumbnail.png"
                if g.field.job_id
                else None
            ),
        )
        for rank, g in enumerate(ranked[:limit], start=1)
    ]
    return Gallery(
        slide_id=slide_id,
        candidates=len(ranked),
        shown=len(items),
        reviewed=sum(g.item.decision is not None for g in ranked),
        unreviewable_fields=sum(not f.reviewable for f in slide.fields),
        decision=report.decision,
        grade=report.review.grade,
        items=items,
    )


@router.get(
    "/{slide_id}/fields/{index}/objects/{number}/thumbnail.png",
    summary="A crop of the field around one of its objects, with context (PNG, a few kB)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
)
async def object_thumbnail(
    serving: ReadyDep,
    slide_id: SlideId,
    index: FieldIndex,
    number: ObjectNumber,
    field: ExistingField,
    size: Annotated[int, Query(ge=16, le=256, description="the longest side, in pixels")] = 96,
) -> Response:
    found = next((o for o in field.objects if o.number == number), None)
    if found is None:
        raise NotFound(f"field {index} of slide {slide_id!r} has no object {number}")
    rgb = await anyio.to_thread.run_sync(SOURCES.get, serving, field)
    if rgb is None:
        raise not_kept(index, field, serving)
    png = encode_png(thumbnail(rgb, found.bbox, size))
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
