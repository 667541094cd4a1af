"""Path parameters shared by several route modules (routes never import one another)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from service.slides.model import SLIDE_ID_PATTERN

SlideId = Annotated[str, Path(pattern=SLIDE_ID_PATTERN, description="1–64 letters, digits, ., _ or -")]
JobId = Annotated[str, Path(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")]
FieldIndex = Annotated[int, Path(ge=0, le=100_000, description="0-based, as in the slide report")]
ObjectNumber = Annotated[int, Path(ge=1, le=1_000_000, description="1-based within the field")]
MicronsPerPixel = Annotated[
    float | None,
    Query(
        gt=0,
        lt=1000,
        description="the field's pixel size (µm): it is read at the model's scale (resampled) and measured in µm",
    ),
]
