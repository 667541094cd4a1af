"""The FastAPI application: ``create_app(settings)`` assembles routers, errors, metrics and the model's lifespan.

Start-up loads the model, checks its metadata, warms it up on one full tile, and only then reports ready
(``/readyz``). A model that cannot be loaded stops the start-up with a clear message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import problems
from service.api.auth import ApiKeyMiddleware
from service.api.gate import InferenceGate
from service.api.routes import health, jobs, model, segment, slides
from service.api.state import ServiceState
from service.engine.errors import ModelContractError
from service.engine.model import OnnxModel
from service.engine.object_filter import ObjectFilter
from service.engine.segmenter import Segmenter
from service.image_io import ImageRejected
from service.jobs import JobRunner, JobStore
from service.metrics import MetricsMiddleware
from service.settings import Settings
from service.slides import SlideStore

log = logging.getLogger(__name__)
VERSION = "0.1.0"


class RequestIdMiddleware:
    """Gives every request an id (the client's ``X-Request-Id`` or a new one), in logs, errors and headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = given if given.replace("-", "").isalnum() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        await self.app(scope, receive, with_id)


def check_pair(model: OnnxModel, object_filter: ObjectFilter) -> None:
    """Refuse an object filter trained on another dense model's candidates (its scores would not transfer)."""
    if object_filter.meta.dense_model_id != model.meta.model_id:
        raise ModelContractError(
            f"{object_filter.path}: trained on the candidates of {object_filter.meta.dense_model_id}, not of "
            f"{model.meta.model_id}; retrain it (python -m training objects) or set TBSEG_OBJECT_FILTER=none"
        )


def load_segmenter(settings: Settings) -> Segmenter:
    """Load the model named by the settings and wrap it in a segmenter (raises ModelContractError)."""
    onnx_model = OnnxModel(
        settings.model_path, providers=settings.provider_list, intra_op_threads=settings.intra_op_threads
    )
    log.info(
        "model %s loaded from %s on %s", onnx_model.meta.model_id, settings.model_path, ", ".join(onnx_model.providers)
    )
    object_filter = None
    if settings.object_filter_path is not None:
        object_filter = ObjectFilter(settings.object_filter_path)
        check_pair(onnx_model, object_filter)
        log.info("object filter %s loaded, threshold %s", object_filter.meta.filter_id, object_filter.meta.threshold)
    else:
        log.info("no object filter: every candidate is reported (TBSEG_OBJECT_FILTER=%s)", settings.object_filter)
    return Segmenter(
        onnx_model,
        tile_px=settings.tile_px,
        batch_tiles=settings.batch_tiles,
        threshold=settings.threshold,
        min_object_px=settings.min_object_px,
        object_filter=object_filter,
        object_threshold=settings.object_threshold,
    )


def create_app(settings: Settings) -> FastAPI:
    """Build the application; the model loads when the app starts (lifespan), not here."""
    state = ServiceState(
        settings=settings, gate=InferenceGate(settings.inference_workers, settings.queue_size, settings.retry_after_s)
    )
    card = settings.model_path.with_name("MODEL_CARD.md")
    state.card = card.read_text(encoding="utf-8") if card.is_file() else ""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.slides = SlideStore(settings.data_dir / "slides.sqlite3")
        state.jobs = JobStore(settings.data_dir)
        segmenter = await anyio.to_thread.run_sync(load_segmenter, settings)
        state.segmenter = segmenter
        state.warm_up_seconds = await anyio.to_thread.run_sync(segmenter.warm_up)
        runner = JobRunner(
            state.jobs,
            lambda job, position, data: jobs.run_job_field(state, job, position, data),
            lambda job: jobs.file_into_slide(state, job),
            settings.job_retention_s,
            field_errors=(ImageRejected,),
        )
        state.job_runner = runner
        runner.start()
        log.info("ready: %s", segmenter.model.meta.model_id)
        yield
        log.info("shutting down: finishing the job field in hand (at most %d s)", settings.shutdown_grace_s)
        stopped = await anyio.to_thread.run_sync(runner.stop, settings.shutdown_grace_s)
        if not stopped:
            log.warning("the job runner did not stop in time; its job will be resumed at the next start")
        state.jobs.close()
        state.slides.close()

    app = FastAPI(
        title="tbseg: tuberculosis bacilli in Ziehl-Neelsen micrographs",
        version=VERSION,
        description="Segments every field of a ZN sputum smear: binary mask, probability heatmap, bacilli with "
        "measurements and outlines. Errors are RFC 9457 problem details (application/problem+json).",
        lifespan=lifespan,
    )
    app.state.service = state
    problems.install(app)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.api_key is not None and settings.api_key.get_secret_value():
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=["X-Model-Id", "X-Inference-Ms", "X-Bacillus-Fraction", "X-Request-Id", "Location"],
        )
    app.add_middleware(RequestIdMiddleware)
    for router in (health.router, model.router, segment.router, slides.router, jobs.router):
        app.include_router(router)
    return app
