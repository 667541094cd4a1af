"""A slide's exports and its fields' images (``/v1/slides/{id}/…``): the counts CSV, a field's objects as QuPath
GeoJSON, the reviewed objects as annotations that ``python -m training finetune`` reads, the printable report,
and a field's image while the job that read it is kept. Built by :mod:`service.slides.exports` from the slide
record, so the web page and a script export the same files.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service.api.field_images import field_image_bytes, not_kept
from service.api.lookups import ExistingField, ExistingSlide
from service.api.openapi import Responses
from service.api.params import FieldIndex, SlideId
from service.api.state import ReadyDep
from service.slides.exports import AnnotationFormat, annotations_zip, counts_csv, field_geojson, report_html

router = APIRouter(prefix="/v1/slides", tags=["review"])

ERRORS: Responses = {
    404: {"description": "no such slide or field"},
    410: {"description": "the field's image is no longer kept (its job expired)"},
    422: {"description": "invalid parameters"},
}


@router.get(
    "/{slide_id}/fields/{index}/image",
    summary="A field's image (PNG or JPEG as sent; TIFF as PNG), while the job that read it is kept",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **ERRORS},
)
async def field_image(serving: ReadyDep, index: FieldIndex, field: ExistingField) -> Response:
    image = await anyio.to_thread.run_sync(field_image_bytes, serving, field)
    if image is None:
        raise not_kept(index, field, serving)
    return Response(image[0], media_type=image[1], headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/{slide_id}/fields/{index}/objects.geojson",
    summary="A field's objects after review as QuPath GeoJSON",
    responses={200: {"content": {"application/geo+json": {}}}, **ERRORS},
)
def field_objects_geojson(
    slide: ExistingSlide,
    index: FieldIndex,
    _field: ExistingField,  # 404 for a field the slide does not have
) -> JSONResponse:
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
def slide_counts_csv(serving: ReadyDep, slide_id: SlideId, slide: ExistingSlide) -> Response:
    body = counts_csv(serving.report(slide))
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
    slide: ExistingSlide,
    format: Annotated[AnnotationFormat, Query(description="points: x,y,label CSV; voc: Pascal VOC XML")] = (
        AnnotationFormat.POINTS
    ),
) -> Response:
    def image_of(index: int) -> tuple[bytes, str] | None:
        image = field_image_bytes(serving, slide.fields[index])
        return (image[0], image[2]) if image else None

    body = await anyio.to_thread.run_sync(annotations_zip, slide, format, image_of)
    return _attachment(body, "application/zip", f"{slide_id}_annotations_{format.value}.zip")


@router.get(
    "/{slide_id}/report.html",
    summary="A printable slide report: grade, AFB per field, model, mode, reviewed and signed by",
    response_class=HTMLResponse,
    responses=ERRORS,
)
def slide_report_html(serving: ReadyDep, slide: ExistingSlide) -> HTMLResponse:
    return HTMLResponse(report_html(serving.report(slide)))
