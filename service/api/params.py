"""Path parameters shared by several route modules (routes never import one another)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from service.slides import SLIDE_ID_PATTERN

SlideId = Annotated[str, Path(pattern=SLIDE_ID_PATTERN, description="1–64 letters, digits, ., _ or -")]
