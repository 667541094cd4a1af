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
    mean_probability: float
    max_probability: float
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
    threshold: float
    min_object_px: int
    timings: Timings
    tiles: int
    bacillus_pixel_fraction: float = Field(description="share of the image's pixels with P(bacillus) > threshold")
    count: int = Field(description="number of objects reported (each at least min_object_px pixels)")
    bacilli: list[BacillusOut]


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
