"""Fields through the service: the one path every inference route takes.

:func:`plan_reading` picks the model (404 when unknown) and resolves the mode (409 when the model cannot run it), at
the operating point of the lab the request names (:func:`lab_of`);
:func:`segment_upload` (one image: ``/v1/segment``, ``/v1/analyze``) and :func:`segment_uploads` (several:
``/v1/slides``) admit the request (or refuse it at once when the queue is full), read its images and segment each
on an inference worker, recording its metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from starlette.requests import Request

from service.api.auth import request_user
from service.api.model_choice import choose_mode
from service.api.problems import Conflict
from service.api.state import Serving
from service.api.uploads import Upload, read_upload, read_uploads
from service.engine.lab_profile import LabProfile
from service.engine.segmenter import Mode, Segmenter
from service.field_result import FieldOptions, FieldResult, segment_field


@dataclass(frozen=True)
class Reading:
    """How a request's fields are read: the model's segmenter and the field options, the mode resolved."""

    model_id: str
    segmenter: Segmenter
    options: FieldOptions


def lab_of(serving: Serving, request: Request, lab: str | None) -> LabProfile | None:
    """The lab a request names (``lab=``), else its API key's user's default lab; 404 for an unknown one."""
    chosen = lab or serving.labs.for_user(request_user(request))
    return serving.lab(chosen) if chosen else None


def plan_reading(
    serving: Serving,
    model: str | None,
    mode: Mode | None,
    options: FieldOptions | None = None,
    lab: LabProfile | None = None,
) -> Reading:
    """The model a request names (404 when unknown) and ``options`` in the mode it runs (409 when the model
    cannot run the one asked for; the service's default else). With a ``lab``, the model is the one its profile
    validated (409 when the request names another) and the object threshold its operating point unless the request
    gives one."""
    options = options or FieldOptions()
    if lab is not None:
        if model and model != lab.model_id:
            raise Conflict(
                f"lab {lab.lab_id} validated model {lab.model_id}, not {model}: leave model= out, or make a profile "
                "of the lab for that model (python -m training lab-profile)",
                slug="lab-model",
            )
        model = lab.model_id
        threshold = options.object_threshold if options.object_threshold is not None else lab.object_threshold
        options = replace(
            options,
            lab_id=lab.lab_id,
            lab_version=lab.version,
            object_threshold=threshold,
            lab_pixel_size_um=lab.pixel_size_um,
        )
    served = serving.model(model)
    chosen = choose_mode(served.segmenter, mode, serving.settings.mode)
    return Reading(served.model_id, served.segmenter, replace(options, mode=chosen))


async def _segment(serving: Serving, reading: Reading, upload: Upload) -> FieldResult:
    result = await serving.gate.run(
        segment_field, reading.segmenter, upload.data, max_pixels=serving.settings.max_pixels, options=reading.options
    )
    serving.metrics.record_field(result)
    return result


async def segment_upload(serving: Serving, request: Request, reading: Reading) -> FieldResult:
    """Admit the request, read its one image, segment it on a worker."""
    async with serving.gate.admit():
        upload = await read_upload(request, serving.settings.max_upload_bytes)
        return await _segment(serving, reading, upload)


async def segment_uploads(serving: Serving, request: Request, reading: Reading) -> list[tuple[Upload, FieldResult]]:
    """Admit the request, read its images (multipart ``files``, or one as the body), segment each in turn on a
    worker; any bad image fails the whole request."""
    settings = serving.settings
    async with serving.gate.admit():
        uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files_per_request)
        return [(upload, await _segment(serving, reading, upload)) for upload in uploads]


def result_headers(result: FieldResult) -> dict[str, str]:
    """What every image answer says about the field in its headers."""
    s = result.segmentation
    fast = {} if s.refined_tiles is None else {"X-Refined-Tiles": f"{s.refined_tiles}/{s.tiles}"}
    return (
        fast
        | {
            "X-Model-Id": s.origin.model_id,
            "X-Mode": s.origin.mode.value,
            "X-Precision": s.origin.precision,
            "X-Heatmap": "exact" if s.heatmap_exact else "approximate below the mask threshold",
            "X-Inference-Ms": f"{s.infer_seconds * 1000:.1f}",
            "X-Bacillus-Fraction": f"{s.bacillus_fraction:.6f}",
            "X-Image-Size": f"{result.image.width}x{result.image.height}",
        }
        | ({"X-Scale": f"{s.scale.factor:.4g} ({s.scale.source.value})"} if s.scale is not None else {})
    )
