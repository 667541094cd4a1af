"""What the app holds while it runs: settings, the loaded engine, readiness, the gate and the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from service.api.gate import InferenceGate
from service.api.problems import NotReady
from service.engine.segmenter import Segmenter
from service.jobs import JobRunner, JobStore
from service.metrics import Metrics
from service.settings import Settings
from service.slides import SlideStore


@dataclass
class ServiceState:
    settings: Settings
    gate: InferenceGate
    metrics: Metrics = field(default_factory=Metrics)
    segmenter: Segmenter | None = None
    warm_up_seconds: float | None = None
    card: str = ""
    slides: SlideStore | None = None
    jobs: JobStore | None = None
    job_runner: JobRunner | None = None

    @property
    def ready(self) -> bool:
        return self.segmenter is not None and self.warm_up_seconds is not None


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _ready_state(request: Request) -> ServiceState:
    state = _state(request)
    if not state.ready:
        raise NotReady("the model is still loading")
    return state


StateDep = Annotated[ServiceState, Depends(_state)]
ReadyDep = Annotated[ServiceState, Depends(_ready_state)]
