"""What the app holds while it runs: settings, the gate and the metrics from the start; once started, the
warm models, the stores and the job runner (:class:`Serving`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from service.api.gate import InferenceGate
from service.api.problems import NotFound, Unavailable
from service.engine.lab_profile import LabProfile
from service.engine.slide_decision import ModelEvidence
from service.jobs.runner import JobRunner
from service.jobs.store import JobStore
from service.labs.registry import LabRegistry, UnknownLab
from service.metrics import Metrics
from service.model_registry import LoadedModel, ModelRegistry, UnknownModel
from service.settings import Settings
from service.slides.model import Slide
from service.slides.report import SlideReport, slide_report
from service.slides.store import SlideStore


@dataclass(frozen=True)
class Serving:
    """Everything a route needs once the service has started: nothing in it is optional."""

    settings: Settings
    gate: InferenceGate
    metrics: Metrics
    models: ModelRegistry
    slides: SlideStore
    jobs: JobStore
    job_runner: JobRunner
    labs: LabRegistry

    def report(self, slide: Slide) -> SlideReport:
        """The slide's report, decided with the evidence of the served models (their ``domain.json``) and the
        served lab profiles."""
        evidence = {m.model_id: ModelEvidence.of(m.segmenter.domain) for m in self.models.all()}
        return slide_report(slide, evidence=evidence, labs=self.labs.profiles)

    def lab(self, lab_id: str) -> LabProfile:
        """The profile a request names.

        Raises:
            NotFound: no such lab (404 listing the labs).
        """
        try:
            return self.labs.get(lab_id)
        except UnknownLab as exc:
            raise NotFound(str(exc), slug="unknown-lab") from exc

    def model(self, model_id: str | None) -> LoadedModel:
        """The model a request names (the default for None).

        Raises:
            NotFound: no such model (404 naming the loaded ones).
        """
        try:
            return self.models.get(model_id)
        except UnknownModel as exc:
            raise NotFound(str(exc), slug="unknown-model") from exc


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
