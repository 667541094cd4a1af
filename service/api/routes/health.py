"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.problems import LOADING_RETRY_AFTER_S
from service.api.schemas import Health, Readiness
from service.api.state import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="alive")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: model loaded and warmed up",
    responses={503: {"model": Readiness, "description": "still loading"}},
)
def readyz(state: StateDep) -> Response:
    serving = state.serving
    if serving is None:
        retry = {"Retry-After": str(LOADING_RETRY_AFTER_S)}
        return JSONResponse(Readiness(status="loading").model_dump(), status_code=503, headers=retry)
    default = serving.models.default
    return JSONResponse(
        Readiness(
            status="ready",
            model_id=default.model_id,
            models=serving.models.ids,
            providers=list(default.segmenter.model.providers),
            warm_up_seconds=round(sum(m.warm_up_seconds for m in serving.models.all()), 3),
        ).model_dump()
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(state: StateDep) -> Response:
    state.metrics.queue_depth.set(state.gate.waiting)
    state.metrics.in_flight.set(state.gate.running)
    if state.serving is not None:
        state.metrics.record_models(state.serving.models.all())
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
