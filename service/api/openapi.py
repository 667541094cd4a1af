"""What the routes declare in OpenAPI beyond FastAPI's inference: image request bodies and the usual errors.

Image routes read their body themselves (:mod:`service.api.uploads`), so FastAPI cannot see it; these
declarations make ``/docs``, client generators and schema fuzzers know both ways to send images.
"""

from __future__ import annotations

from typing import Any

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff")

Responses = dict[int | str, dict[str, Any]]  # FastAPI's ``responses=`` argument

IMAGE_ERRORS: Responses = {
    404: {"description": "no such model (the problem lists the models served)"},
    409: {"description": "mode=fast asked of a model whose folder has no fast-mode networks"},
    413: {"description": "upload over the byte limit, or an image over the pixel limit"},
    415: {"description": "not an image type we read"},
    422: {"description": "truncated or undecodable image, missing image, or invalid parameters"},
    503: {"description": "busy (queue full) or not ready; see Retry-After"},
}


def image_body(field: str = "file", many: bool = False, required: bool = True) -> dict[str, object]:
    """A request body of one image (multipart part ``field`` or the raw body), or of several parts ``field``."""
    binary = {"type": "string", "format": "binary"}
    part = {"type": "array", "items": binary} if many else binary
    multipart: dict[str, object] = {"type": "object", "properties": {field: part}}
    if required:
        multipart["required"] = [field]
    return {
        "required": required,
        "content": {
            "multipart/form-data": {"schema": multipart},
            **{media: {"schema": binary} for media in RAW_IMAGE_TYPES},
        },
    }
