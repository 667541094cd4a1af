"""The shape of ``report.json`` written by ``python -m training evaluate`` (TypedDicts), for the code that reads
it back: the Markdown report and curves (:mod:`training.evaluation.report`) and the model card
(:mod:`training.fit.shipping`)."""

from __future__ import annotations

from typing import NotRequired, TypedDict

Metrics = dict[str, float]  # PixelCounts.metrics() / ObjectCounts.metrics(): recall, precision, f1, counts


class FieldScores(TypedDict):
    pixel: Metrics
    bacillus: Metrics
    boxes: int
    counted: int
    count_error: int


class Sweep(TypedDict):
    thresholds: list[float]
    pixel: list[Metrics]
    bacillus: list[Metrics]


class Scores(TypedDict):
    """A method's totals over the fields, per field, and over the threshold sweep."""

    pixel: Metrics
    bacillus: Metrics
    mean_abs_count_error: float
    per_field: dict[str, FieldScores]
    sweep: Sweep


class Inference(TypedDict):
    seconds: float
    megapixels: float
    megapixels_per_second: float | None
    note: str
    providers: list[str]
    tile_px: int
    mode: NotRequired[str]
    mode_why: NotRequired[str]


class ColourFit(TypedDict):
    criterion: str
    fitted_on: str
    threshold: float
    precision: float
    recall: float
    f1: float
    fields: int


class MethodDescription(TypedDict):
    """What a method says of itself; keys beyond ``name``, ``kind``, ``threshold`` and ``score`` depend on it."""

    name: str
    kind: str
    threshold: float
    score: str
    model: NotRequired[str]
    model_id: NotRequired[str]
    recipe: NotRequired[str]
    inference: NotRequired[Inference]
    fit: NotRequired[ColourFit]
    object_filter: NotRequired[str]
    filter_id: NotRequired[str]
    estimated_bacilli_per_field: NotRequired[dict[str, int]]


class MethodReport(MethodDescription, Scores):
    """One method of the report: its description and its scores."""


class CropScores(TypedDict):
    pixel: Metrics
    bacillus: Metrics
    mean_abs_count_error: float


class CropReport(TypedDict):
    side_px: int
    regions_y0_x0_h_w: dict[str, list[int]]
    pixels: int
    dense_engine: CropScores
    patch_by_patch: CropScores
    max_abs_difference: float
    mask_pixels_differing: int
    identical_metrics: bool
    patch_by_patch_seconds: float
    patch_by_patch_seconds_per_megapixel: float | None


class EvaluationReport(TypedDict):
    data: str
    split: str | None
    subset: str
    fields: list[str]
    ground_truth: str
    object_rules: dict[str, float]
    object_rules_text: str
    # the model under test at the top level, as earlier reports and the model card read it
    model: str
    model_id: str
    recipe: str
    threshold: float
    pixel: Metrics
    bacillus: Metrics
    mean_abs_count_error: float
    per_field: dict[str, FieldScores]
    inference: Inference
    methods: list[MethodReport]
    patch_by_patch_crops: CropReport | None
    gallery_method: str | None
