"""One field through the service: admission, upload, decode and segmentation on a worker, metrics."""

from __future__ import annotations

from starlette.requests import Request

from service.api.state import Serving
from service.api.uploads import read_upload
from service.field_result import FieldResult, segment_field


async def segment_upload(
    serving: Serving,
    request: Request,
    find_objects: bool,
    object_threshold: float | None = None,
    model: str | None = None,
) -> FieldResult:
    """Pick the model (404 when unknown), admit the request (or refuse it at once when the queue is full), read its
    image, segment it on a worker."""
    settings = serving.settings
    segmenter = serving.model(model).segmenter
    async with serving.gate.admit():
        upload = await read_upload(request, settings.max_upload_bytes)
        result = await serving.gate.run(
            segment_field, segmenter, upload.data, settings.max_pixels, find_objects, object_threshold
        )
    serving.metrics.record_field(result)
    return result


def result_headers(result: FieldResult) -> dict[str, str]:
    """What every image answer says about the field in its headers."""
    return {
        "X-Model-Id": result.segmentation.origin.model_id,
        "X-Inference-Ms": f"{result.segmentation.infer_seconds * 1000:.1f}",
        "X-Bacillus-Fraction": f"{result.segmentation.bacillus_fraction:.6f}",
        "X-Image-Size": f"{result.image.width}x{result.image.height}",
    }
