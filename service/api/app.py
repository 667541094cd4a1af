"""The FastAPI application: ``create_app(settings)`` assembles routers, errors, metrics and the model's lifespan.

Start-up opens the stores, loads every model folder with its object filter (:mod:`service.model_registry`), warms
each up on one full tile, starts the job runner (whose fields go through the same inference gate as requests), and
only then reports ready (``/readyz``); until then every ``/v1`` route answers 503 with ``Retry-After``. A model
that cannot be loaded stops the start-up with a clear message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import problems
from service.api.auth import ApiKeyMiddleware
from service.api.gate import InferenceGate
from service.api.routes import (
    gallery,
    health,
    identity,
    jobs,
    labs,
    models,
    page,
    review,
    segment,
    slide_exports,
    slides,
)
from service.api.state import ServiceState, Serving
from service.api.uploads import BodyLimitMiddleware
from service.engine.image_io import ImageRejected
from service.field_result import FieldResult
from service.jobs.runner import JobFieldWork, JobRunner, file_into_slide
from service.jobs.store import JobStore
from service.labs.registry import load_labs
from service.metrics import MetricsMiddleware
from service.model_registry import ModelRegistry, load_registry
from service.settings import Settings
from service.slides.store import SlideStore

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


def _start(settings: Settings, state: ServiceState, registry: ModelRegistry) -> Serving:
    """Open the stores and start the job runner, once the models are loaded; on the event loop's thread (the job
    runner's fields reach the gate through it)."""
    slide_store = SlideStore(settings.data_dir / "slides.sqlite3")
    job_store = JobStore(settings.data_dir)
    token = anyio.lowlevel.current_token()

    def run_on_worker(work: Callable[[], FieldResult]) -> FieldResult:
        """From the job runner's thread: wait in the gate's queue like a request, infer on a worker."""
        return anyio.from_thread.run(state.gate.run_waiting, work, token=token)

    field_work = JobFieldWork(
        job_store, registry, settings.max_pixels, run_on_worker, state.metrics.record_field, slides=slide_store
    )
    runner = JobRunner(
        job_store,
        field_work,
        lambda job: file_into_slide(slide_store, job),
        settings.job_retention_s,
        field_errors=(ImageRejected,),
        fields_in_flight=settings.inference_workers,  # a job uses every worker, no more
    )
    serving = Serving(
        settings=settings,
        gate=state.gate,
        metrics=state.metrics,
        models=registry,
        slides=slide_store,
        jobs=job_store,
        job_runner=runner,
        labs=load_labs(settings.labs_dir, registry.ids, settings.key_lab_map),
    )
    runner.start()
    log.info("ready: %s (default %s)", ", ".join(registry.ids), registry.default_id)
    return serving


def _stop(serving: Serving) -> None:
    """Finish the job field in hand (within the grace period), close the stores."""
    grace = serving.settings.shutdown_grace_s
    log.info("shutting down: finishing the job field in hand (at most %d s)", grace)
    if not serving.job_runner.stop(grace):
        log.warning("the job runner did not stop in time; its job will be resumed at the next start")
    serving.jobs.close()
    serving.slides.close()


def _add_middleware(app: FastAPI, settings: Settings, state: ServiceState) -> None:
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.key_users:
        app.add_middleware(ApiKeyMiddleware, key_users=settings.key_users)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=["X-Model-Id", "X-Inference-Ms", "X-Bacillus-Fraction", "X-Request-Id", "Location"],
        )
    app.add_middleware(RequestIdMiddleware)


ROUTERS = (
    health.router,
    models.router,
    segment.router,
    slides.router,
    review.router,
    slide_exports.router,
    gallery.router,
    identity.router,
    labs.router,
    jobs.router,
)


def create_app(settings: Settings) -> FastAPI:
    """Build the application; the model loads when the app starts (lifespan), not here."""
    state = ServiceState(
        settings=settings, gate=InferenceGate(settings.inference_workers, settings.queue_size, settings.retry_after_s)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = await anyio.to_thread.run_sync(load_registry, settings)
        state.serving = serving = _start(settings, state, registry)
        yield
        await anyio.to_thread.run_sync(_stop, serving)

    app = FastAPI(
        title="tbseg: tuberculosis bacilli in Ziehl-Neelsen micrographs",
        version=VERSION,
        description="Segments every field of a ZN sputum smear: binary mask, probability heatmap, bacilli with "
        "measurements and outlines. Errors are RFC 9457 problem details (application/problem+json).",
        lifespan=lifespan,
    )
    app.state.service = state
    problems.install(app)
    _add_middleware(app, settings, state)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(page.router)
    app.mount("/ui", page.static_files(), name="ui")
    return app
