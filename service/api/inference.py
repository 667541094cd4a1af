"""One field through the service: admission, upload, decode and segmentation on a worker, metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import Request

from service.api.state import ServiceState
from service.api.uploads import read_upload
from service.engine.segmenter import Segmentation
from service.image_io import DecodedImage, decode_image


@dataclass(frozen=True)
class Done:
    """A decoded, segmented field."""

    decoded: DecodedImage
    result: Segmentation
    decode_seconds: float


def decode_and_segment(
    state: ServiceState, data: bytes, find_objects: bool, object_threshold: float | None = None
) -> Done:
    """Decode and segment on the calling (worker) thread."""
    assert state.segmenter is not None
    started = time.perf_counter()
    decoded = decode_image(data, state.settings.max_pixels)
    decoded_at = time.perf_counter()
    result = state.segmenter.segment(decoded.rgb, find_objects=find_objects, object_threshold=object_threshold)
    return Done(decoded, result, decoded_at - started)


def record(state: ServiceState, done: Done) -> None:
    metrics = state.metrics
    metrics.inference.observe(done.result.infer_seconds)
    metrics.postprocess.observe(done.result.postprocess_seconds)
    metrics.megapixels.inc(done.decoded.width * done.decoded.height / 1e6)
    metrics.fields.inc()


async def segment_upload(
    state: ServiceState, request: Request, find_objects: bool, object_threshold: float | None = None
) -> Done:
    """Admit the request (or refuse it at once when the queue is full), read its image, segment it on a worker."""
    async with state.gate.admit():
        upload = await read_upload(request, state.settings.max_upload_bytes)
        done = await state.gate.run(decode_and_segment, state, upload.data, find_objects, object_threshold)
    record(state, done)
    return done


def result_headers(state: ServiceState, done: Done) -> dict[str, str]:
    assert state.segmenter is not None
    return {
        "X-Model-Id": state.segmenter.model.meta.model_id,
        "X-Inference-Ms": f"{done.result.infer_seconds * 1000:.1f}",
        "X-Bacillus-Fraction": f"{done.result.bacillus_fraction:.6f}",
        "X-Image-Size": f"{done.decoded.width}x{done.decoded.height}",
    }
