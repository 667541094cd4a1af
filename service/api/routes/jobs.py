"""Long jobs (``/v1/jobs``): submit fields, get 202 at once, poll, fetch results when done.

A slide of many fields takes minutes on a CPU, longer than many clients and proxies wait; a job answers at once
and keeps going in the background (:mod:`service.jobs`). Every field is decoded once on submission, so an image we
cannot read is refused then (4xx) rather than accepted and lost later; accepted fields are on disk before the
202. ``Idempotency-Key`` makes a retried submission return the first job instead of making a second.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.inference import lab_of, plan_reading
from service.api.lookups import ExistingJob, PolledJob
from service.api.model_choice import LabParam, MixedModels, ModelParam, ModeParam, check_one_model
from service.api.openapi import IMAGE_ERRORS, Responses, image_body
from service.api.params import JobId, MicronsPerPixel
from service.api.problems import Busy, Conflict, InvalidRequest, NotFound
from service.api.schemas import JobAccepted, JobFieldState, JobStatus
from service.api.state import ReadyDep, Serving
from service.api.uploads import read_uploads
from service.engine.image_io import decode_image
from service.engine.rescaled import check_resampled_size
from service.engine.scale import ModelScale
from service.field_result import FieldOptions
from service.jobs.store import FieldState, IdempotencyConflict, Job, JobParams, JobState
from service.slides.model import SLIDE_ID_PATTERN

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JOB_BODY = image_body("files", many=True)
ERRORS: Responses = {
    **IMAGE_ERRORS,
    404: {"description": "no such job (or it expired), no such field, or no such model"},
    409: {
        "description": "the Idempotency-Key was used for a different request, the result is not ready, or the "
        "slide was read by another model, or mode=fast asked of a model without fast-mode networks"
    },
    422: {"description": "an undecodable image, no image, too many files, or invalid parameters"},
    503: {"description": "not ready, or too many jobs waiting; see Retry-After"},
}


def status(job: Job, serving: Serving) -> JobStatus:
    retention = serving.settings.job_retention_s
    return JobStatus(
        job_id=job.job_id,
        state=job.state,
        slide_id=job.slide_id,
        model_id=job.params.model_id,
        mode=job.params.mode,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.finished_at + retention if job.finished_at is not None else None,
        error=job.error,
        **job.progress,
        fields=[JobFieldState(index=f.position, name=f.name, state=f.state, error=f.error) for f in job.fields],
        result_url=f"/v1/jobs/{job.job_id}/result" if job.state is JobState.DONE else None,
    )


def _check_images(
    uploads: list[tuple[str, bytes]], max_pixels: int, model: ModelScale | None, options: FieldOptions
) -> None:
    """Refuse at submission what the job could not read: an image that does not decode, is over the pixel limit,
    or would be over it at the model's scale."""
    for name, data in uploads:
        try:
            image = decode_image(data, max_pixels)
            check_resampled_size(options.scale_of(model, image), image.width, image.height, max_pixels)
        except Exception as exc:
            exc.args = (f"{name}: {exc}",)
            raise


@router.post(
    "",
    summary="Submit fields (or a slide) as a background job; 202 with the job at once",
    status_code=202,
    response_model=JobAccepted,
    responses=ERRORS,
    openapi_extra={"requestBody": JOB_BODY},
)
async def submit_job(
    request: Request,
    serving: ReadyDep,
    slide_id: Annotated[str | None, Query(pattern=SLIDE_ID_PATTERN, description="grade as this slide")] = None,
    object_threshold: Annotated[float | None, Query(ge=0, le=1, description="object filter score to keep")] = None,
    microns_per_pixel: MicronsPerPixel = None,
    model: ModelParam = None,
    mode: ModeParam = None,
    mixed_models: MixedModels = False,
    lab: LabParam = None,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=200, description="a retried submit with the same key is safe")
    ] = None,
) -> JSONResponse:
    """Fields as multipart parts named ``files`` (or one as the raw body). With ``slide_id`` the fields are added
    to that slide when the job is done and the result carries its grade. The job is read by ``model`` (the default
    model when absent, resolved now) in ``mode`` (TBSEG_MODE when absent, resolved now); a slide read by another
    model refuses it (409) unless ``mixed_models``."""
    store, settings = serving.jobs, serving.settings
    reading = plan_reading(
        serving,
        model,
        mode,
        FieldOptions(object_threshold=object_threshold, microns_per_pixel=microns_per_pixel),
        lab_of(serving, request, lab),
    )
    model_id, chosen, options = reading.model_id, reading.options.mode, reading.options
    if slide_id is not None:
        check_one_model(serving.slides.get(slide_id, objects=False), model_id, mixed_models)
    if store.queued_count() >= settings.max_queued_jobs:
        raise Busy(f"{settings.max_queued_jobs} jobs are waiting already; retry later", settings.retry_after_s)
    uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files_per_request)
    if not uploads:
        raise InvalidRequest(
            "the job has no image: send multipart 'files' or one image as the body", slug="missing-image"
        )
    files = [(u.filename or f"field-{i}", u.data) for i, u in enumerate(uploads)]
    model_scale = serving.models.get(model_id).segmenter.scale
    await anyio.to_thread.run_sync(_check_images, files, settings.max_pixels, model_scale, options)
    params = JobParams(
        object_threshold=options.object_threshold,
        model_id=model_id,
        mixed_models=mixed_models,
        mode=chosen.value,
        lab_id=options.lab_id,
        lab_version=options.lab_version,
        lab_pixel_size_um=options.lab_pixel_size_um,
        microns_per_pixel=options.microns_per_pixel,
    )
    try:
        job, new = await anyio.to_thread.run_sync(store.submit, files, params, slide_id, idempotency_key)
    except IdempotencyConflict as exc:
        raise Conflict(str(exc), slug="idempotency-conflict") from exc
    if new:
        serving.job_runner.wake()
    body = JobAccepted(
        job_id=job.job_id,
        state=job.state,
        model_id=job.params.model_id,
        mode=job.params.mode,
        status_url=f"/v1/jobs/{job.job_id}",
        created=new,
        **job.progress,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.job_id}"})


@router.get("/{job_id}", summary="A job's state and progress", response_model=JobStatus, responses=ERRORS)
def get_job(serving: ReadyDep, job: PolledJob) -> JobStatus:
    return status(job, serving)


@router.get(
    "/{job_id}/result", summary="A finished job's results: per field counts and bacilli, slide grade", responses=ERRORS
)
def job_result(serving: ReadyDep, job: ExistingJob) -> JSONResponse:
    if job.state is not JobState.DONE:
        raise Conflict(f"job {job.job_id} is {job.state}, not done", slug="not-done")
    body: dict[str, object] = {
        **status(job, serving).model_dump(mode="json"),
        "results": [
            {
                "index": f.position,
                "name": f.name,
                "state": f.state,
                "error": f.error,
                **(f.result or {}),
                **(
                    {
                        "mask_url": f"/v1/jobs/{job.job_id}/fields/{f.position}/mask",
                        "objects_url": f"/v1/jobs/{job.job_id}/fields/{f.position}/objects",
                    }
                    if f.state is FieldState.DONE
                    else {}
                ),
            }
            for f in job.fields
        ],
    }
    if job.slide_id:
        slide = serving.slides.get(job.slide_id)
        body["slide"] = serving.report(slide).model_dump(mode="json") if slide is not None else None
    return JSONResponse(body)


@router.get(
    "/{job_id}/fields/{index}/{kind}",
    summary="A finished field's mask (the paper's) or objects mask (kept bacilli), 0/255 PNG",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
)
def job_field_image(
    serving: ReadyDep,
    job_id: JobId,
    index: Annotated[int, Path(ge=0, le=100_000)],
    kind: Annotated[str, Path(pattern="^(mask|objects)$")],
    job: PolledJob,
) -> Response:
    if index >= len(job.fields):
        raise NotFound(f"no field {index} in job {job_id}")
    if job.fields[index].state is not FieldState.DONE:
        raise Conflict(f"field {index} of job {job_id} is {job.fields[index].state}", slug="not-done")
    return Response(serving.jobs.output_path(job_id, index, kind).read_bytes(), media_type="image/png")
