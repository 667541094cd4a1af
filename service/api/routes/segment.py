"""``POST /v1/segment`` (images) and ``POST /v1/analyze`` (JSON or GeoJSON): one field per request."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.inference import lab_of, plan_reading, result_headers, segment_upload
from service.api.model_choice import LabParam, ModelParam, ModeParam
from service.api.openapi import IMAGE_ERRORS, image_body
from service.api.params import MicronsPerPixel
from service.api.state import ReadyDep
from service.engine.geojson import feature_collection
from service.engine.image_io import encode_float_tiff, encode_png
from service.field_result import AnalyzedField, FieldOptions
from service.render import heatmap_png_array, mask_png_array, overlay

router = APIRouter(prefix="/v1", tags=["segmentation"])

IMAGE_BODY = image_body()
ERRORS = IMAGE_ERRORS


class SegmentOutput(StrEnum):
    MASK = "mask"
    OBJECTS = "objects"
    HEATMAP = "heatmap"
    OVERLAY = "overlay"


ObjectThreshold = Annotated[
    float | None,
    Query(ge=0, le=1, description="object filter score a candidate needs to be kept (default: the service's)"),
]


class HeatmapFormat(StrEnum):
    PNG = "png"
    TIFF = "tiff"


class AnalyzeFormat(StrEnum):
    JSON = "json"
    GEOJSON = "geojson"


@router.post(
    "/segment",
    summary="Segment one field: binary mask, probability heatmap or overlay",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/tiff": {}}}, **ERRORS},
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def segment(
    request: Request,
    serving: ReadyDep,
    output: Annotated[
        SegmentOutput,
        Query(
            description="mask: the paper's P > threshold, every pixel (0/255 PNG); objects: the kept bacilli only "
            "(0/255 PNG); heatmap; overlay"
        ),
    ] = SegmentOutput.MASK,
    format: Annotated[HeatmapFormat, Query(description="heatmap as 8-bit PNG or float32 TIFF")] = HeatmapFormat.PNG,
    object_threshold: ObjectThreshold = None,
    microns_per_pixel: MicronsPerPixel = None,
    model: ModelParam = None,
    mode: ModeParam = None,
    lab: LabParam = None,
) -> Response:
    """The image goes in the multipart field ``file`` or as the raw body (``image/png``, ``image/jpeg``,
    ``image/tiff``). The response has the input's width and height; headers carry the model id, the inference
    milliseconds and the bacillus pixel fraction, and with objects the number of bacilli kept."""
    with_objects = output in (SegmentOutput.OVERLAY, SegmentOutput.OBJECTS)
    options = FieldOptions(with_objects, object_threshold, microns_per_pixel=microns_per_pixel)
    reading = plan_reading(serving, model, mode, options, lab_of(serving, request, lab))
    done = await segment_upload(serving, request, reading)
    result, headers = done.segmentation, result_headers(done)
    if with_objects:
        headers |= {"X-Bacilli-Count": str(len(result.bacilli)), "X-Estimated-Bacilli": str(result.estimated_bacilli)}
    if output is SegmentOutput.MASK:
        return Response(encode_png(mask_png_array(result.mask)), media_type="image/png", headers=headers)
    if output is SegmentOutput.OBJECTS:
        return Response(encode_png(mask_png_array(result.objects)), media_type="image/png", headers=headers)
    if output is SegmentOutput.HEATMAP:
        if format is HeatmapFormat.TIFF:
            return Response(encode_float_tiff(result.heatmap), media_type="image/tiff", headers=headers)
        return Response(encode_png(heatmap_png_array(result.heatmap)), media_type="image/png", headers=headers)
    return Response(encode_png(overlay(done.image.rgb, result.objects)), media_type="image/png", headers=headers)


@router.post(
    "/analyze",
    summary="Find the bacilli of one field: counts, measurements, outlines",
    response_model=AnalyzedField,
    responses={200: {"content": {"application/geo+json": {}}}, **ERRORS},
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def analyze(
    request: Request,
    serving: ReadyDep,
    microns_per_pixel: MicronsPerPixel = None,
    format: Annotated[
        AnalyzeFormat, Query(description="json, or geojson (QuPath FeatureCollection)")
    ] = AnalyzeFormat.JSON,
    include_rejected: Annotated[
        bool, Query(description="also return the candidates the object filter rejected, with their scores")
    ] = False,
    object_threshold: ObjectThreshold = None,
    model: ModelParam = None,
    mode: ModeParam = None,
    lab: LabParam = None,
) -> Response:
    """Candidates are connected components of P(bacillus) > threshold with at least ``min_object_px`` pixels;
    the object filter scores each and keeps those scoring at least the object threshold as bacilli. A kept
    object of touching rods counts as ``estimated_count`` bacilli, from its area."""
    started = time.perf_counter()
    options = FieldOptions(object_threshold=object_threshold, microns_per_pixel=microns_per_pixel)
    reading = plan_reading(serving, model, mode, options, lab_of(serving, request, lab))
    done = await segment_upload(serving, request, reading)
    result = done.segmentation
    headers = result_headers(done) | {
        "X-Bacilli-Count": str(len(result.bacilli)),
        "X-Estimated-Bacilli": str(result.estimated_bacilli),
    }
    if format is AnalyzeFormat.GEOJSON:
        body = feature_collection(
            result.bacilli,
            result.origin.model_id,
            result.scale.measured_microns if result.scale is not None else microns_per_pixel,
            rejected=result.rejected if include_rejected else (),
            filter_id=result.origin.filter_id,
        )
        return JSONResponse(body, media_type="application/geo+json", headers=headers)
    analyzed = done.analyzed(time.perf_counter() - started, include_rejected)
    return JSONResponse(analyzed.model_dump(mode="json"), headers=headers)
