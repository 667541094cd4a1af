"""Request and response schemas of the HTTP API's own routes (pydantic, only at the edge).

A field's result (:mod:`service.field_result`) and a slide's report (:mod:`service.slides.report`) have their
schemas beside the code that builds them, since the batch command and the job runner write them too.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from service.slides.model import Decision, ObjectSource, SlideField, SlideObject
from service.slides.report import SlideReport


class FastVariant(BaseModel):
    precision: str = Field(description="fp32, or int8 (the folder's quantised networks)")
    coarse: str = Field(description="the coarse network's file")
    refine: str = Field(description="the dense network refining the tiles it flags")
    stride_px: int = Field(description="the coarse grid's spacing: its values equal the dense heatmap there")
    phase_px: list[int] = Field(description="field pixel (y, x) of grid point (0, 0)")
    screen_threshold: float = Field(description="a coarse P above which the tiles around it are refined")
    tile_px: int = Field(description="side of a refinement tile")
    cascade: dict[str, object] | None = Field(
        None,
        description="the cascade's rule when fast mode reads the network's last convolution only where a sparser look "
        "saw anything (the folder's cascade.json: first_step, first_threshold, refine_step, refine_threshold), and "
        "`screening`: how its coarse grid is read (precision fp32, or int8 with the model's margin, the threshold it "
        "screens at, its first-level threshold, the int8 lattice threshold of a refined tile, and `fp32_band_logit`: "
        "refined pixels are read in int8 and again in fp32 within this many logits of the mask threshold or the object "
        "filter's sure level, null when every refined pixel that can reach the mask is read in fp32); null when it "
        "reads every grid point and refined pixel",
    )


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


class Override(BaseModel):
    """A candidate setting of the service that differs from what the model's object filter was trained with."""

    name: str = Field(description="threshold or min_object_px")
    trained: float = Field(description="the value the object filter's training candidates were cut with")
    used: float = Field(description="the value in use (TBSEG_THRESHOLD, TBSEG_MIN_OBJECT_PX)")


class ModelInfo(ModelSummary):
    path: str
    providers: list[str]
    receptive_field_px: int
    halo_px: int
    classes: list[str]
    tile_px: int
    batch_tiles: int
    threshold: float = Field(
        description="P(bacillus) above which a pixel belongs to a candidate: by default what the object filter was "
        "trained with"
    )
    min_object_px: int = Field(description="the smallest candidate: by default the object filter's")
    overrides: list[Override] = Field(
        description="settings that differ from what the object filter was trained with (its candidates are then "
        "cut unlike its training ones); empty by default"
    )
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


# Slide review (service.api.routes.review) and identity (service.api.routes.identity)

Name = Annotated[str | None, Field(None, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class ObjectOut(BaseModel):
    number: int = Field(description="1-based within the field")
    origin: ObjectSource = Field(
        description="kept (by the model), rejected (by its object filter) or added (in review)"
    )
    x: float = Field(description="centre, pixels from the left")
    y: float = Field(description="centre, pixels from the top")
    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height")
    outline: list[tuple[int, int]] | None = Field(description="closed polygon; null for an added point")
    score: float | None = Field(description="the object filter's P(bacillus)")
    afb: int = Field(description="bacilli it counts for when counted")
    counted: bool = Field(description="counted after review: accepted, or kept and not rejected")
    decision: Decision | None
    reviewer: str | None
    reviewed_at: float | None = Field(description="Unix time")

    @classmethod
    def of(cls, field: SlideField, o: SlideObject) -> ObjectOut:
        return cls(
            number=o.number,
            origin=o.source,
            x=o.x,
            y=o.y,
            bbox=o.bbox,
            outline=list(o.outline) if o.outline is not None else None,
            score=o.score,
            afb=field.afb_of(o),
            counted=o.counted,
            decision=o.decision,
            reviewer=o.reviewer,
            reviewed_at=o.reviewed_at,
        )


class FieldObjects(BaseModel):
    slide_id: str
    index: int
    name: str
    width: int
    height: int
    model_id: str
    filter_id: str | None
    mode: str
    reviewable: bool
    afb: int
    reviewed_afb: int
    image_url: str | None
    objects: list[ObjectOut]


class ReviewIn(BaseModel):
    decision: Decision | None = Field(description="accept, reject, or null to clear the decision")
    reviewer: Name = Field(None, description="who decides, when the API key names nobody (ignored when it does)")


class AddIn(BaseModel):
    x: float = Field(ge=0, description="pixels from the left")
    y: float = Field(ge=0, description="pixels from the top")
    reviewer: Name = Field(None, description="who adds it, when the API key names nobody")


class SignIn(BaseModel):
    signer: Name = Field(None, description="who signs, when the API key names nobody")


class ReviewEventOut(BaseModel):
    at: float = Field(description="Unix time")
    reviewer: str | None
    action: str = Field(description="accept, reject, clear, add, remove or sign")
    field: int | None = Field(description="0-based field index; null for a signature")
    number: int | None = Field(description="the object's number in its field; null for a signature")


class ObjectReviewed(BaseModel):
    object: ObjectOut
    slide: SlideReport


class Me(BaseModel):
    user: str | None = Field(description="the user the API key names; null when it names nobody (or no key)")
    key_required: bool
    lab: str | None = Field(
        default=None, description="the user's default lab (TBSEG_KEY_LABS): requests without lab= use it"
    )


# The ranked gallery (service.api.routes.gallery)


class GalleryItemOut(BaseModel):
    rank: int = Field(description="1 = the best object-filter score of the slide")
    field_index: int = Field(description="0-based, as in the slide report")
    field_name: str
    number: int = Field(description="the object's number in its field (the review routes take it)")
    origin: ObjectSource = Field(description="kept (by the model) or rejected (by its object filter)")
    score: float | None = Field(description="the object filter's P(bacillus); null without a filter")
    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height in the field")
    counted: bool = Field(description="counted after review: accepted, or kept and not rejected")
    decision: Decision | None = Field(description="the reviewer's, or null")
    reviewer: str | None
    thumbnail_url: str | None = Field(description="a crop around it; null when the field's image is not kept")


class Gallery(BaseModel):
    slide_id: str
    candidates: int = Field(description="candidates in the slide's reviewable fields, kept and rejected")
    shown: int
    reviewed: int = Field(description="candidates with a reviewer's decision")
    unreviewable_fields: int = Field(description="fields whose objects were not kept (not in the gallery)")
    decision: str = Field(description="the slide's automatic decision")
    grade: str | None = Field(description="the grade after review")
    items: list[GalleryItemOut]


# Lab profiles (service.api.routes.labs)


class LabSummary(BaseModel):
    lab_id: str
    version: int = Field(description="bumped each time the profile is made again; slides record it")
    model_id: str = Field(description="the model it validated: requests with lab= use it")
    filter_id: str | None
    object_threshold: float = Field(description="the lab's operating point: lab= requests keep candidates above it")
    budget: float = Field(description="false bacilli per negative field (95% bound) the operating point may keep")
    negative_fields: int = Field(description="the lab's confirmed-negative fields it rests on")
    false_bacilli_per_field: float = Field(description="on them, at the operating point")
    false_bacilli_upper_95: float = Field(description="its one-sided 95% Poisson upper bound")
    positives: int | None = Field(description="annotated bacilli it was measured on (null: none given)")
    recall: float | None = Field(description="share of them kept at the operating point")
    pixel_size_um: float | None
    url: str


class LabList(BaseModel):
    labs: list[LabSummary]
