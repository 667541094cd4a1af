"""Response schemas of the HTTP API's own routes (pydantic, only at the edge).

A field's result (:mod:`service.field_result`) and a slide's report (:mod:`service.slide_report`) have their
schemas beside the code that builds them, since the batch command and the job runner write them too.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class FastVariant(BaseModel):
    precision: str = Field(description="fp32, or int8 (the folder's quantised networks)")
    coarse: str = Field(description="the coarse network's file")
    refine: str = Field(description="the dense network refining the tiles it flags")
    stride_px: int = Field(description="the coarse grid's spacing: its values equal the dense heatmap there")
    phase_px: list[int] = Field(description="field pixel (y, x) of grid point (0, 0)")
    screen_threshold: float = Field(description="a coarse P above which the tiles around it are refined")
    tile_px: int = Field(description="side of a refinement tile")


class ModelSummary(BaseModel):
    model_id: str
    default: bool = Field(description="used when a request names no model")
    recipe: str = Field(description="the training recipe the model's metadata names")
    training_data: str = Field(description="what it was trained on, from its metadata")
    filter_id: str | None = Field(description="its object filter; null when every candidate is kept")
    card_summary: str = Field(description="the first paragraph of its model card")
    folder: str
    memory_bytes: int = Field(description="resident memory the service grew by while loading and warming it")
    modes: list[str] = Field(description="the modes it runs: exact, and fast when its folder has the fast networks")
    fast: FastVariant | None = Field(description="the fast variant in use; null when it runs exact mode only")
    url: str


class ModelList(BaseModel):
    default_model: str
    models: list[ModelSummary]


class ModelInfo(ModelSummary):
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
    warm_up_seconds: float
    card_markdown: str


class ReloadResult(BaseModel):
    added: list[str] = Field(description="model ids loaded by this reload")
    models: list[str] = Field(description="every model id served now")
    default_model: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model_id: str | None = Field(None, description="the default model")
    models: list[str] = []
    providers: list[str] = []
    warm_up_seconds: float | None = None


class JobAccepted(BaseModel):
    job_id: str
    state: str = Field(description="queued, running, done or failed")
    created: bool = Field(description="false when an Idempotency-Key returned an earlier job")
    model_id: str | None = Field(description="the model that reads its fields")
    mode: str = Field(description="exact or fast: how its fields are read")
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
    model_id: str | None = Field(description="the model reading its fields (null for jobs from before models had ids)")
    mode: str = Field(description="exact or fast: how its fields are read (exact for jobs from before modes)")
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
