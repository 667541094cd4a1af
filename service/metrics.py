"""Prometheus metrics of the service: one registry per app, route-template labels, units in names.

The engine never touches Prometheus: routes and the job runner record its timings here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.field_result import FieldResult

if TYPE_CHECKING:  # the registry imports the settings; metrics only read its records
    from service.model_registry import LoadedModel

LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
UNTRACKED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class Metrics:
    """Every collector of the service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tbseg_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tbseg_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "tbseg_inference_seconds",
            "Time in the network per field (tiling included)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.postprocess = Histogram(
            "tbseg_postprocess_seconds",
            "Time finding and measuring objects per field",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("tbseg_queue_depth", "Requests admitted and waiting for a worker", registry=r)
        self.in_flight = Gauge("tbseg_inference_in_flight", "Fields being inferred now", registry=r)
        self.megapixels = Counter("tbseg_megapixels_processed_total", "Megapixels segmented", registry=r)
        self.fields = Counter(
            "tbseg_fields_processed_total", "Fields segmented, by model and mode", ["model_id", "mode"], registry=r
        )
        self.model_memory = Gauge(
            "tbseg_model_memory_bytes",
            "Resident memory the service grew by while loading and warming each model",
            ["model_id"],
            registry=r,
        )
        self.models_loaded = Gauge("tbseg_models_loaded", "Models served", registry=r)
        self.rejected = Counter(
            "tbseg_requests_rejected_total", "Requests refused before inference, by reason", ["reason"], registry=r
        )

    def record_field(self, result: FieldResult) -> None:
        """A field segmented (by a request or a job)."""
        self.inference.observe(result.segmentation.infer_seconds)
        self.postprocess.observe(result.segmentation.postprocess_seconds)
        self.megapixels.inc(result.image.width * result.image.height / 1e6)
        origin = result.segmentation.origin
        self.fields.labels(origin.model_id, origin.mode.value).inc()

    def record_models(self, models: Sequence[LoadedModel]) -> None:
        """The models served now, with their memory."""
        self.models_loaded.set(len(models))
        for m in models:
            self.model_memory.labels(m.model_id).set(m.memory_bytes)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every request by route template (never raw paths: bounded label values) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            if template not in UNTRACKED_PATHS:
                self.metrics.latency.labels(template).observe(time.perf_counter() - started)
