"""Response schemas of the HTTP API (pydantic, only at the edge)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class BoundingBox(BaseModel):
    x: int = Field(description="left column, pixels from the image's left edge")
    y: int = Field(description="top row, pixels from the image's top edge")
    width: int
    height: int


class Point(BaseModel):
    x: float
    y: float


class BacillusOut(BaseModel):
    id: int = Field(description="1-based, in reading order of each object's first pixel")
    bbox: BoundingBox
    centroid: Point
    area_px: int
    length_px: float = Field(description="extent along the object's principal axis")
    width_px: float = Field(description="extent across the principal axis")
    mean_probability: float = Field(description="mean P(bacillus) of the network over the object's pixels")
    max_probability: float
    score: float | None = Field(description="object filter's P(bacillus) for the whole object; null without a filter")
    estimated_count: int = Field(description="bacilli in the object (touching rods), from its area; 1 without a filter")
    area_um2: float | None = Field(None, description="with microns_per_pixel")
    length_um: float | None = Field(None, description="with microns_per_pixel")
    width_um: float | None = Field(None, description="with microns_per_pixel")


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str
    mode: str


class Timings(BaseModel):
    decode_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float


class AnalyzeResponse(BaseModel):
    model_id: str
    image: ImageInfo
    microns_per_pixel: float | None
    threshold: float = Field(description="P(bacillus) above which a pixel belongs to a candidate")
    min_object_px: int
    filter_id: str | None = Field(description="the object filter in use; null when every candidate is kept")
    object_threshold: float | None = Field(description="filter score a candidate needed to be kept")
    timings: Timings
    tiles: int
    bacillus_pixel_fraction: float = Field(description="share of the image's pixels with P(bacillus) > threshold")
    candidates: int = Field(description="objects of at least min_object_px pixels before the object filter")
    count: int = Field(description="objects kept as bacilli")
    estimated_bacilli: int = Field(description="bacilli in the kept objects, touching rods counted by size")
    bacilli: list[BacillusOut]
    rejected: list[BacillusOut] | None = Field(
        None, description="candidates the object filter rejected (with include_rejected=true)"
    )


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


class SlideFieldOut(BaseModel):
    index: int = Field(description="0-based, in the order the fields were added")
    name: str = Field(description="the uploaded file's name, or field-<index>")
    objects: int = Field(description="objects kept as bacilli")
    afb: int = Field(description="bacilli counted for grading: estimated_bacilli with an object filter, else objects")
    estimated_bacilli: int
    width: int
    height: int
    model_id: str
    filter_id: str | None
    added_at: float = Field(description="Unix time")


class SlideReport(BaseModel):
    slide_id: str
    created_at: float = Field(description="Unix time")
    fields: list[SlideFieldOut]
    fields_examined: int
    total_afb: int
    afb_per_field: float | None
    afb_per_100_fields: float | None
    grade: str | None = Field(description="WHO/IUATLD: negative, scanty, 1+, 2+ or 3+; null before any field")
    report: str | None = Field(description="as a lab writes it, e.g. 'scanty (7 AFB in 100 fields)'")
    fields_needed: int | None = Field(description="fields the grade's definition asks for")
    needs_review: bool
    reasons: list[str]


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
