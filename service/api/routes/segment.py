"""``POST /v1/segment`` (images) and ``POST /v1/analyze`` (JSON or GeoJSON): one field per request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.schemas import AnalyzeResponse, BacillusOut, BoundingBox, ImageInfo, Point, Timings
from service.api.state import ReadyDep, ServiceState
from service.api.uploads import read_upload
from service.engine.geojson import feature_collection
from service.engine.postprocess import Bacillus
from service.engine.segmenter import Segmentation
from service.image_io import DecodedImage, decode_image, encode_float_tiff, encode_png
from service.render import heatmap_png_array, mask_png_array, overlay

router = APIRouter(prefix="/v1", tags=["segmentation"])

IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        **{
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in ("image/png", "image/jpeg", "image/tiff")
        },
    },
}
ERRORS = {
    413: {"description": "upload over the byte limit, or image over the pixel limit"},
    415: {"description": "not an image type we read"},
    422: {"description": "truncated or undecodable image, missing image, or invalid parameters"},
    503: {"description": "busy (queue full) or not ready; see Retry-After"},
}


class SegmentOutput(StrEnum):
    MASK = "mask"
    HEATMAP = "heatmap"
    OVERLAY = "overlay"


class HeatmapFormat(StrEnum):
    PNG = "png"
    TIFF = "tiff"


class AnalyzeFormat(StrEnum):
    JSON = "json"
    GEOJSON = "geojson"


@dataclass(frozen=True)
class _Done:
    decoded: DecodedImage
    result: Segmentation
    decode_seconds: float


def _decode_and_segment(state: ServiceState, data: bytes, find_objects: bool) -> _Done:
    assert state.segmenter is not None
    started = time.perf_counter()
    decoded = decode_image(data, state.settings.max_pixels)
    decoded_at = time.perf_counter()
    result = state.segmenter.segment(decoded.rgb, find_objects=find_objects)
    return _Done(decoded, result, decoded_at - started)


async def _run(state: ServiceState, request: Request, find_objects: bool) -> _Done:
    async with state.gate.admit():
        upload = await read_upload(request, state.settings.max_upload_bytes)
        done = await state.gate.run(_decode_and_segment, state, upload.data, find_objects)
    metrics = state.metrics
    metrics.inference.observe(done.result.infer_seconds)
    metrics.postprocess.observe(done.result.postprocess_seconds)
    metrics.megapixels.inc(done.decoded.width * done.decoded.height / 1e6)
    metrics.fields.inc()
    return done


def _headers(state: ServiceState, done: _Done) -> dict[str, str]:
    assert state.segmenter is not None
    return {
        "X-Model-Id": state.segmenter.model.meta.model_id,
        "X-Inference-Ms": f"{done.result.infer_seconds * 1000:.1f}",
        "X-Bacillus-Fraction": f"{done.result.bacillus_fraction:.6f}",
        "X-Image-Size": f"{done.decoded.width}x{done.decoded.height}",
    }


@router.post(
    "/segment",
    summary="Segment one field: binary mask, probability heatmap or overlay",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/tiff": {}}}, **ERRORS},  # type: ignore[dict-item]
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def segment(
    request: Request,
    state: ReadyDep,
    output: Annotated[SegmentOutput, Query(description="mask (0/255 PNG), heatmap or overlay")] = SegmentOutput.MASK,
    format: Annotated[HeatmapFormat, Query(description="heatmap as 8-bit PNG or float32 TIFF")] = HeatmapFormat.PNG,
) -> Response:
    """The image goes in the multipart field ``file`` or as the raw body (``image/png``, ``image/jpeg``,
    ``image/tiff``). The response has the input's width and height; headers carry the model id, the inference
    milliseconds and the bacillus pixel fraction."""
    done = await _run(state, request, find_objects=output is SegmentOutput.OVERLAY)
    result, headers = done.result, _headers(state, done)
    if output is SegmentOutput.MASK:
        return Response(encode_png(mask_png_array(result.mask)), media_type="image/png", headers=headers)
    if output is SegmentOutput.HEATMAP:
        if format is HeatmapFormat.TIFF:
            return Response(encode_float_tiff(result.heatmap), media_type="image/tiff", headers=headers)
        return Response(encode_png(heatmap_png_array(result.heatmap)), media_type="image/png", headers=headers)
    return Response(encode_png(overlay(done.decoded.rgb, result.objects)), media_type="image/png", headers=headers)


def _bacillus_out(b: Bacillus, mpp: float | None) -> BacillusOut:
    x, y, w, h = b.bbox
    return BacillusOut(
        id=b.id,
        bbox=BoundingBox(x=x, y=y, width=w, height=h),
        centroid=Point(x=b.centroid[0], y=b.centroid[1]),
        area_px=b.area_px,
        length_px=b.length_px,
        width_px=b.width_px,
        mean_probability=b.mean_probability,
        max_probability=b.max_probability,
        area_um2=round(b.area_px * mpp**2, 4) if mpp else None,
        length_um=round(b.length_px * mpp, 4) if mpp else None,
        width_um=round(b.width_px * mpp, 4) if mpp else None,
    )


@router.post(
    "/analyze",
    summary="Find the bacilli of one field: counts, measurements, outlines",
    response_model=AnalyzeResponse,
    responses={200: {"content": {"application/geo+json": {}}}, **ERRORS},  # type: ignore[dict-item]
    openapi_extra={"requestBody": IMAGE_BODY},
)
async def analyze(
    request: Request,
    state: ReadyDep,
    microns_per_pixel: Annotated[float | None, Query(gt=0, lt=1000, description="pixel size, for µm")] = None,
    format: Annotated[
        AnalyzeFormat, Query(description="json, or geojson (QuPath FeatureCollection)")
    ] = AnalyzeFormat.JSON,
) -> Response:
    """Objects are connected components of P(bacillus) > threshold with at least ``min_object_px`` pixels."""
    started = time.perf_counter()
    done = await _run(state, request, find_objects=True)
    assert state.segmenter is not None
    segmenter, result = state.segmenter, done.result
    if format is AnalyzeFormat.GEOJSON:
        body = feature_collection(result.bacilli, segmenter.model.meta.model_id, microns_per_pixel)
        return JSONResponse(body, media_type="application/geo+json", headers=_headers(state, done))
    response = AnalyzeResponse(
        model_id=segmenter.model.meta.model_id,
        image=ImageInfo(
            width=done.decoded.width, height=done.decoded.height, format=done.decoded.format, mode=done.decoded.mode
        ),
        microns_per_pixel=microns_per_pixel,
        threshold=segmenter.threshold,
        min_object_px=segmenter.min_object_px,
        timings=Timings(
            decode_ms=round(done.decode_seconds * 1000, 1),
            inference_ms=round(result.infer_seconds * 1000, 1),
            postprocess_ms=round(result.postprocess_seconds * 1000, 1),
            total_ms=round((time.perf_counter() - started) * 1000, 1),
        ),
        tiles=result.tiles,
        bacillus_pixel_fraction=round(result.bacillus_fraction, 6),
        count=len(result.bacilli),
        bacilli=[_bacillus_out(b, microns_per_pixel) for b in result.bacilli],
    )
    return JSONResponse(response.model_dump(), headers=_headers(state, done))
