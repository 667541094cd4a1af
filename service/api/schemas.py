"""Response schemas of the HTTP API's own routes (pydantic, only at the edge).

A field's result (:mod:`service.field_result`) and a slide's report (:mod:`service.slide_report`) have their
schemas beside the code that builds them, since the batch command and the job runner write them too.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    model_id: str
    path: str
    providers: list[str]
    receptive_field_px: int
    halo_px: int
    classes: list[str]
    tile_px: int
    batch_tiles: int
    threshold: float
    object_filter: dict[str, object] | None = Field(
        description="the object filter in use (id, threshold, classifier, cross-validated figures); null without"
    )
    object_threshold: float | None
    input_normalisation: dict[str, object] | None = Field(
        description="how each field is normalised before the network and the object filter (the model's "
        "input_normalisation: method, reference background, parameters); null when fields are fed as they are"
    )
    metadata: dict[str, str]
    validation_metrics: dict[str, object]
    card_markdown: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model_id: str | None = None
    providers: list[str] = []
    warm_up_seconds: float | None = None


class JobAccepted(BaseModel):
    job_id: str
    state: str = Field(description="queued, running, done or failed")
    created: bool = Field(description="false when an Idempotency-Key returned an earlier job")
    status_url: str
    fields_total: int
    fields_done: int
    fields_failed: int


class JobFieldState(BaseModel):
    index: int
    name: str
    state: str = Field(description="queued, done or failed")
    error: str | None


class JobStatus(BaseModel):
    job_id: str
    state: str = Field(description="queued, running, done or failed")
    slide_id: str | None
    created_at: float = Field(description="Unix time")
    started_at: float | None
    finished_at: float | None
    expires_at: float | None = Field(description="when a finished job and its results are removed")
    error: str | None
    fields_total: int
    fields_done: int
    fields_failed: int
    fields: list[JobFieldState]
    result_url: str | None
