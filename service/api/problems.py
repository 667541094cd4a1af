"""Errors as RFC 9457 problem details (``application/problem+json``), one place for every status mapping."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine.errors import EngineError, InvalidImage
from service.image_io import ImageRejected, ImageTooLarge, UnsupportedImageType

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class QueueFull(Exception):
    """Every worker is busy and the queue is full: the client should retry later (HTTP 503)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the service is busy: every inference worker is in use and the queue is full")
        self.retry_after_s = retry_after_s


class NotReady(Exception):
    """The model is not loaded and warm yet (HTTP 503)."""


class BadRequest(Exception):
    """A request that is well-formed HTTP but not a usable call (HTTP 400, or the given status)."""

    def __init__(self, detail: str, status: int = 400, slug: str = "bad-request") -> None:
        super().__init__(detail)
        self.status, self.slug = status, slug


def problem(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    """A problem-details response; ``type`` is a relative URI naming the kind of problem."""
    body = {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": getattr(request.state, "request_id", None),
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def install(app: FastAPI) -> None:
    """Register the exception handlers that turn every error into a problem response."""

    @app.exception_handler(ImageRejected)
    async def _image(request: Request, exc: ImageRejected) -> JSONResponse:
        if isinstance(exc, ImageTooLarge):
            return problem(request, 413, "image-too-large", "Image too large", str(exc))
        if isinstance(exc, UnsupportedImageType):
            return problem(request, 415, "unsupported-media-type", "Unsupported image type", str(exc))
        return problem(request, 422, "undecodable-image", "Image cannot be decoded", str(exc))

    @app.exception_handler(InvalidImage)
    async def _invalid(request: Request, exc: InvalidImage) -> JSONResponse:
        return problem(request, 422, "invalid-image", "Invalid image", str(exc))

    @app.exception_handler(QueueFull)
    async def _busy(request: Request, exc: QueueFull) -> JSONResponse:
        return problem(request, 503, "busy", "Service busy", str(exc), headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return problem(
            request,
            503,
            "not-ready",
            "Not ready",
            str(exc) or "the model is still loading",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> JSONResponse:
        return problem(request, exc.status, exc.slug, "Bad request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return problem(request, 422, "validation-error", "Invalid request parameters", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(exc.status_code, "http")
        return problem(
            request,
            exc.status_code,
            slug,
            str(exc.detail) if exc.status_code < 500 else "Error",
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

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
