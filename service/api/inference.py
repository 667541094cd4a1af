"""One field through the service: admission, upload, decode and segmentation on a worker, metrics."""

from __future__ import annotations

from starlette.requests import Request

from service.api.model_choice import choose_mode
from service.api.state import Serving
from service.api.uploads import read_upload
from service.engine.segmenter import Mode
from service.field_result import FieldResult, segment_field


async def segment_upload(
    serving: Serving,
    request: Request,
    find_objects: bool,
    object_threshold: float | None = None,
    model: str | None = None,
    mode: Mode | None = None,
) -> FieldResult:
    """Pick the model (404 when unknown) and the mode (409 when the model cannot run it), admit the request (or
    refuse it at once when the queue is full), read its image, segment it on a worker."""
    settings = serving.settings
    segmenter = serving.model(model).segmenter
    chosen = choose_mode(segmenter, mode, settings.mode)
    async with serving.gate.admit():
        upload = await read_upload(request, settings.max_upload_bytes)
        result = await serving.gate.run(
            segment_field, segmenter, upload.data, settings.max_pixels, find_objects, object_threshold, chosen
        )
    serving.metrics.record_field(result)
    return result


def result_headers(result: FieldResult) -> dict[str, str]:
    """What every image answer says about the field in its headers."""
    s = result.segmentation
    fast = {} if s.refined_tiles is None else {"X-Refined-Tiles": f"{s.refined_tiles}/{s.tiles}"}
    return fast | {
        "X-Model-Id": result.segmentation.origin.model_id,
        "X-Mode": s.origin.mode.value,
        "X-Precision": s.origin.precision,
        "X-Heatmap": "exact" if s.refined_tiles is None else "approximate outside refined tiles",
        "X-Inference-Ms": f"{result.segmentation.infer_seconds * 1000:.1f}",
        "X-Bacillus-Fraction": f"{result.segmentation.bacillus_fraction:.6f}",
        "X-Image-Size": f"{result.image.width}x{result.image.height}",
    }
