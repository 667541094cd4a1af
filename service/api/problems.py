"""Errors as RFC 9457 problem details (``application/problem+json``): the problem types, and one builder.

Every error answer of the service, the API-key middleware's included, is built by :func:`problem_body`. Each
kind of problem is a class with its own status, ``type`` URI and title; a route raises one with a ``detail``
saying what happened to this request:

* :class:`InvalidRequest`: 422, ``/problems/invalid-request``, "Invalid request";
* :class:`NotFound`: 404, ``/problems/not-found``, "Not Found";
* :class:`Conflict`: 409, ``/problems/conflict``, "Conflict";
* :class:`Gone`: 410, ``/problems/gone``, "Gone" (a field image whose job expired);
* :class:`Busy`: 503, ``/problems/busy``, "Service Busy", with ``Retry-After``;
* :class:`Unavailable`: 503, ``/problems/unavailable``, "Service Unavailable", with ``Retry-After``.

A raise may name a more specific ``type`` (``Conflict(..., slug="idempotency-conflict")``) for clients that
branch on it; the title stays the class's. Image errors from the decoder, validation errors, Starlette's own
404/405 and unexpected exceptions are mapped here too, so no route builds an error body itself.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine.errors import EngineError, InvalidImage
from service.engine.image_io import ImageRejected, ImageTooLarge, ResampledTooLarge, UnsupportedImageType

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
LOADING_RETRY_AFTER_S = 5


class Problem(Exception):
    """Base of the problems a route raises on purpose: ``status``, ``slug`` (the ``type`` URI's last part) and
    ``title`` belong to the class; ``detail`` to the occurrence."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad Request"

    def __init__(self, detail: str, *, slug: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.type_slug = slug or type(self).slug

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the body."""
        return {}


class InvalidRequest(Problem):
    """A well-formed HTTP request that is not a usable call: no image, a malformed multipart body, too many
    files (422)."""

    status = 422
    slug = "invalid-request"
    title = "Invalid request"


class NotFound(Problem):
    """No such job, field, slide or route (404)."""

    status = 404
    slug = "not-found"
    title = "Not Found"


class Gone(Problem):
    """What was asked for existed but is no longer kept, e.g. a field's image after its job's retention (410)."""

    status = 410
    slug = "gone"
    title = "Gone"


class Conflict(Problem):
    """The request contradicts what exists: a slide id taken, a reused Idempotency-Key, a result not ready (409)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class Busy(Problem):
    """Every place is taken (inference workers and their queue, or the job queue): retry after ``retry_after_s``
    seconds (503 with ``Retry-After``)."""

    status = 503
    slug = "busy"
    title = "Service Busy"

    def __init__(self, detail: str, retry_after_s: int, *, slug: str | None = None) -> None:
        super().__init__(detail, slug=slug)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(Problem):
    """The service is starting: the model is loading and warming up (503 with ``Retry-After``)."""

    status = 503
    slug = "unavailable"
    title = "Service Unavailable"

    def __init__(self, detail: str = "the model is still loading", retry_after_s: int = LOADING_RETRY_AFTER_S) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def problem_body(
    status: int, slug: str, title: str, detail: str, instance: str, request_id: str | None, **extra: object
) -> dict[str, object]:
    """The one builder of problem-details bodies; ``type`` is a relative URI naming the kind of problem."""
    return {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
        **extra,
    }


def problem(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    """A problem-details response to ``request``."""
    request_id = getattr(request.state, "request_id", None)
    body = problem_body(status, slug, title, detail, request.url.path, request_id, **extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


# The decoder's refusals (engine errors, not HTTP ones): status, slug and title of each.
IMAGE_PROBLEMS: tuple[tuple[type[ImageRejected], int, str, str], ...] = (
    (ImageTooLarge, 413, "image-too-large", "Image too large"),
    (UnsupportedImageType, 415, "unsupported-media-type", "Unsupported image type"),
    (ResampledTooLarge, 422, "resampled-too-large", "Too large at the model's scale"),
    (ImageRejected, 422, "undecodable-image", "Image cannot be decoded"),
)


def install(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into a problem response."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem(request, exc.status, exc.type_slug, exc.title, exc.detail, headers=exc.headers() or None)

    @app.exception_handler(ImageRejected)
    async def _image(request: Request, exc: ImageRejected) -> JSONResponse:
        status, slug, title = next((s, sl, t) for kind, s, sl, t in IMAGE_PROBLEMS if isinstance(exc, kind))
        return problem(request, status, slug, title, str(exc))

    @app.exception_handler(InvalidImage)
    async def _invalid(request: Request, exc: InvalidImage) -> JSONResponse:
        return problem(request, 422, "invalid-image", "Invalid image", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem(request, 422, "validation-error", "Invalid request parameters", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.status_code
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(code, "http")
        title = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error"
        return problem(request, code, slug, title, str(exc.detail), headers=dict(exc.headers or {}) or None)

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        log.exception("engine error on %s", request.url.path)
        return problem(request, 500, "engine-error", "Inference failed", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "unexpected error on %s (request %s)", request.url.path, getattr(request.state, "request_id", None)
        )
        return problem(
            request,
            500,
            "internal-error",
            "Internal error",
            "an unexpected error occurred; quote the request_id when reporting it",
        )
