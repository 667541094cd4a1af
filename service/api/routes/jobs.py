"""Long jobs (``/v1/jobs``): submit fields, get 202 at once, poll, fetch results when done.

On a CPU one field takes about a minute, longer than many clients and proxies wait; a job answers at once and
keeps going in the background (:mod:`service.jobs`). Every field is decoded once on submission, so an image we
cannot read is refused then (4xx) rather than accepted and lost later; accepted fields are on disk before the
202. ``Idempotency-Key`` makes a retried submission return the first job instead of making a second.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from service.api.inference import decode_and_segment, record
from service.api.openapi import IMAGE_ERRORS, image_body
from service.api.problems import BadRequest
from service.api.routes.slides import report
from service.api.schemas import JobAccepted, JobStatus
from service.api.state import ReadyDep, ServiceState, StateDep
from service.api.uploads import read_uploads
from service.image_io import decode_image, encode_png
from service.jobs import IdempotencyConflict, Job, JobStore
from service.render import mask_png_array
from service.slides import SLIDE_ID_PATTERN, FieldCount

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JOB_BODY = image_body("files", many=True)
ERRORS = {
    **IMAGE_ERRORS,
    404: {"description": "no such job (or it expired), or no such field"},
    409: {"description": "the Idempotency-Key was used for a different request, or the result is not ready"},
    422: {"description": "an undecodable image, no image, too many files, or invalid parameters"},
    503: {"description": "not ready, or too many jobs waiting; see Retry-After"},
}
JobId = Annotated[str, Path(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")]


def _jobs(state: ServiceState) -> JobStore:
    if state.jobs is None:
        raise BadRequest("jobs are not available yet", status=503, slug="not-ready")
    return state.jobs


def status(job: Job, state: ServiceState) -> JobStatus:
    retention = state.settings.job_retention_s
    return JobStatus(
        job_id=job.job_id,
        state=job.state,
        slide_id=job.slide_id,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.finished_at + retention if job.finished_at is not None else None,
        error=job.error,
        **job.progress,
        fields=[{"index": f.position, "name": f.name, "state": f.state, "error": f.error} for f in job.fields],
        result_url=f"/v1/jobs/{job.job_id}/result" if job.state == "done" else None,
    )


def _check_images(uploads: list[tuple[str, bytes]], max_pixels: int) -> None:
    for name, data in uploads:
        try:
            decode_image(data, max_pixels)
        except Exception as exc:
            exc.args = (f"{name}: {exc}",)
            raise


@router.post(
    "",
    summary="Submit fields (or a slide) as a background job; 202 with the job at once",
    status_code=202,
    response_model=JobAccepted,
    responses=ERRORS,  # type: ignore[arg-type]
    openapi_extra={"requestBody": JOB_BODY},
)
async def submit_job(
    request: Request,
    state: ReadyDep,
    slide_id: Annotated[str | None, Query(pattern=SLIDE_ID_PATTERN, description="grade as this slide")] = None,
    object_threshold: Annotated[float | None, Query(ge=0, le=1, description="object filter score to keep")] = None,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=200, description="a retried submit with the same key is safe")
    ] = None,
) -> JSONResponse:
    """Fields as multipart parts named ``files`` (or one as the raw body). With ``slide_id`` the fields are added
    to that slide when the job is done and the result carries its grade."""
    store, settings = _jobs(state), state.settings
    if store.queued_count() >= settings.max_queued_jobs:
        raise BadRequest(f"{settings.max_queued_jobs} jobs are waiting already; retry later", status=503, slug="busy")
    uploads = await read_uploads(request, settings.max_upload_bytes, settings.max_files_per_request)
    if not uploads:
        raise BadRequest("the job has no image: send multipart 'files' or one image as the body", 422, "missing-image")
    files = [(u.filename or f"field-{i}", u.data) for i, u in enumerate(uploads)]
    await anyio.to_thread.run_sync(_check_images, files, settings.max_pixels)
    params = {"object_threshold": object_threshold}
    try:
        job, new = await anyio.to_thread.run_sync(store.submit, files, params, slide_id, idempotency_key)
    except IdempotencyConflict as exc:
        raise BadRequest(str(exc), status=409, slug="idempotency-conflict") from exc
    if new and state.job_runner is not None:
        state.job_runner.wake()
    body = JobAccepted(
        job_id=job.job_id, state=job.state, status_url=f"/v1/jobs/{job.job_id}", created=new, **job.progress
    )
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": f"/v1/jobs/{job.job_id}"})


@router.get("/{job_id}", summary="A job's state and progress", response_model=JobStatus, responses=ERRORS)  # type: ignore[arg-type]
def get_job(state: StateDep, job_id: JobId) -> JobStatus:
    job = _jobs(state).get(job_id)
    if job is None:
        raise BadRequest(f"no job {job_id} (finished jobs are removed after the retention time)", 404, "not-found")
    return status(job, state)


@router.get(
    "/{job_id}/result", summary="A finished job's results: per field counts and bacilli, slide grade", responses=ERRORS
)  # type: ignore[arg-type]
def job_result(state: StateDep, job_id: JobId) -> JSONResponse:
    job = _jobs(state).get(job_id)
    if job is None:
        raise BadRequest(f"no job {job_id}", 404, "not-found")
    if job.state != "done":
        raise BadRequest(f"job {job_id} is {job.state}, not done", status=409, slug="not-done")
    body: dict[str, object] = {
        **status(job, state).model_dump(),
        "results": [
            {"index": f.position, "name": f.name, "state": f.state, "error": f.error, **(f.result or {})}
            for f in job.fields
        ],
    }
    if job.slide_id and state.slides is not None:
        slide = state.slides.get(job.slide_id)
        body["slide"] = report(slide).model_dump() if slide is not None else None
    return JSONResponse(body)


@router.get(
    "/{job_id}/fields/{index}/{kind}",
    summary="A finished field's mask (the paper's) or objects mask (kept bacilli), 0/255 PNG",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **ERRORS},  # type: ignore[dict-item]
)
def job_field_image(
    state: StateDep,
    job_id: JobId,
    index: Annotated[int, Path(ge=0, le=100_000)],
    kind: Annotated[str, Path(pattern="^(mask|objects)$")],
) -> Response:
    store = _jobs(state)
    job = store.get(job_id)
    if job is None or index >= len(job.fields):
        raise BadRequest(f"no field {index} in job {job_id}", 404, "not-found")
    if job.fields[index].state != "done":
        raise BadRequest(f"field {index} of job {job_id} is {job.fields[index].state}", status=409, slug="not-done")
    return Response(store.output_path(job_id, index, kind).read_bytes(), media_type="image/png")


def run_job_field(state: ServiceState, job: Job, position: int, data: bytes) -> dict[str, object]:
    """The job runner's work for one field: segment, write both masks, return the field's JSON result."""
    done = decode_and_segment(state, data, True, job.params.get("object_threshold"))  # type: ignore[arg-type]
    record(state, done)
    store, result, segmenter = _jobs(state), done.result, state.segmenter
    assert segmenter is not None
    for kind, mask in (("mask", result.mask), ("objects", result.objects)):
        path = store.output_path(job.job_id, position, kind)
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_bytes(encode_png(mask_png_array(mask)))
        temporary.replace(path)
    return {
        "width": done.decoded.width,
        "height": done.decoded.height,
        "model_id": segmenter.model.meta.model_id,
        "filter_id": segmenter.object_filter.meta.filter_id if segmenter.object_filter else None,
        "object_threshold": result.object_threshold,
        "inference_ms": round(result.infer_seconds * 1000, 1),
        "bacillus_pixel_fraction": round(result.bacillus_fraction, 6),
        "candidates": len(result.bacilli) + len(result.rejected),
        "count": len(result.bacilli),
        "estimated_bacilli": result.estimated_bacilli,
        "bacilli": [b.summary() for b in result.bacilli],
        "mask_url": f"/v1/jobs/{job.job_id}/fields/{position}/mask",
        "objects_url": f"/v1/jobs/{job.job_id}/fields/{position}/objects",
    }


def file_into_slide(state: ServiceState, job: Job) -> None:
    """When a finished job names a slide, add its read fields to that slide (created when new)."""
    if not job.slide_id or state.slides is None:
        return
    counts = [
        FieldCount(
            name=f.name,
            objects=int(f.result["count"]),  # type: ignore[call-overload]
            estimated_bacilli=int(f.result["estimated_bacilli"]),  # type: ignore[call-overload]
            width=int(f.result["width"]),  # type: ignore[call-overload]
            height=int(f.result["height"]),  # type: ignore[call-overload]
            model_id=str(f.result["model_id"]),
            filter_id=f.result["filter_id"],  # type: ignore[arg-type]
        )
        for f in job.fields
        if f.state == "done" and f.result is not None
    ]
    state.slides.ensure(job.slide_id)
    state.slides.add_fields(job.slide_id, counts)
