"""What the app holds while it runs: settings, the gate and the metrics from the start; once started, the
warm segmenter, the stores and the job runner (:class:`Serving`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from service.api.gate import InferenceGate
from service.api.problems import Unavailable
from service.engine.segmenter import Segmenter
from service.jobs.runner import JobRunner
from service.jobs.store import JobStore
from service.metrics import Metrics
from service.settings import Settings
from service.slides import SlideStore


@dataclass(frozen=True)
class Serving:
    """Everything a route needs once the service has started: nothing in it is optional."""

    settings: Settings
    gate: InferenceGate
    metrics: Metrics
    card: str
    segmenter: Segmenter
    warm_up_seconds: float
    slides: SlideStore
    jobs: JobStore
    job_runner: JobRunner


@dataclass
class ServiceState:
    settings: Settings
    gate: InferenceGate
    metrics: Metrics = field(default_factory=Metrics)
    serving: Serving | None = None

    @property
    def ready(self) -> bool:
        return self.serving is not None


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _serving(request: Request) -> Serving:
    serving = _state(request).serving
    if serving is None:
        raise Unavailable("the model is still loading")
    return serving


StateDep = Annotated[ServiceState, Depends(_state)]
ReadyDep = Annotated[Serving, Depends(_serving)]
