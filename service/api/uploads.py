"""Reading uploaded images: multipart file parts or the raw body, parsed once as the bytes stream in.

Limits, all answered with a problem before anything is segmented:

* bytes: a ``Content-Length`` over ``max_upload_bytes`` is refused before the body is read (413); a body that
  streams past it (chunked, or lying about its length) is cut off where it crosses the limit by
  :class:`BodyLimitMiddleware`, which counts every request's bytes as the route reads them (413);
* parts and files: Starlette's streaming multipart parser refuses more than ``max_files`` file parts or
  ``max_files + 32`` parts in all as it meets them (422); file parts are spooled (memory, then a temporary
  file), so a large upload is never held twice;
* type: neither an image type we read nor multipart (415); no image at all (422).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import InvalidRequest
from service.engine.image_io import MEDIA_TYPES, ImageTooLarge, UnsupportedImageType

RAW_TYPES = MEDIA_TYPES | {"application/octet-stream", ""}
MULTIPART = "multipart/form-data"
EXTRA_PARTS = 32  # text parts a client may send beside its files


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None
    content_type: str


def _too_large(size: int | str, limit: int) -> ImageTooLarge:
    return ImageTooLarge(f"the upload is {size} bytes; the limit is {limit} bytes")


class BodyLimitMiddleware:
    """Counts each request's body as it is received and stops it where it crosses ``max_bytes``.

    The route reading the body gets :class:`~service.engine.image_io.ImageTooLarge` from ``receive`` at that
    point (a 413 problem); nothing past the limit is read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(f"more than {self.max_bytes}", self.max_bytes)
            return message

        await self.app(scope, counted, send)


def _media_type(request: Request) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in RAW_TYPES and media_type != MULTIPART:
        raise UnsupportedImageType(
            f"Content-Type {media_type!r} is not read: send image/png, image/jpeg or image/tiff as the body, "
            "or multipart/form-data with the image in the field 'file'"
        )
    return media_type


def _check_declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(declared, max_bytes)


async def _raw_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    if not body:
        raise InvalidRequest(
            "the request has no image: send it as the body or as the multipart field 'file'", slug="missing-image"
        )
    return bytes(body)


async def _multipart_files(request: Request, names: tuple[str, ...], max_files: int) -> list[Upload]:
    """The file parts named one of ``names``, parsed from the stream (other parts are skipped)."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_files + EXTRA_PARTS)
    except HTTPException as exc:  # Starlette's own refusal of too many parts, or a malformed body
        raise InvalidRequest(f"the multipart body was refused: {exc.detail}", slug="bad-multipart") from exc
    try:
        uploads = []
        for name, part in form.multi_items():
            if name not in names:
                continue
            if not isinstance(part, UploadFile):
                raise InvalidRequest(
                    f"the multipart field {name!r} must be a file, not a text value", slug="missing-image"
                )
            uploads.append(Upload(await part.read(), part.filename, (part.content_type or "").lower()))
        return uploads
    finally:
        await form.close()


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """The image bytes of a request: the raw body, or the multipart field ``file``.

    Raises:
        ImageTooLarge: Content-Length or the bytes received exceed ``max_bytes`` (reading stops there).
        UnsupportedImageType: a Content-Type that is neither an image type we read nor multipart.
        InvalidRequest: a multipart body without a ``file`` field, or with no image in it (422).
    """
    media_type = _media_type(request)
    _check_declared_length(request, max_bytes)
    if media_type != MULTIPART:
        return Upload(await _raw_body(request), None, media_type)
    uploads = await _multipart_files(request, ("file",), max_files=4)
    if not uploads:
        raise InvalidRequest("the multipart body has no field 'file'", slug="missing-image")
    return uploads[0]


async def read_uploads(request: Request, max_bytes: int, max_files: int) -> list[Upload]:
    """Every image of a request: the raw body (one), or each multipart file part named ``files`` or ``file``
    (any number up to ``max_files``, none allowed). Errors as :func:`read_upload`, and 422 over ``max_files``."""
    if not _has_body(request):
        return []
    media_type = _media_type(request)
    _check_declared_length(request, max_bytes)
    if media_type != MULTIPART:
        return [Upload(await _raw_body(request), None, media_type)]
    uploads = await _multipart_files(request, ("files", "file"), max_files=max_files)
    if len(uploads) > max_files:
        raise InvalidRequest(f"{len(uploads)} files sent; at most {max_files} per request", slug="too-many")
    return uploads


def _has_body(request: Request) -> bool:
    declared = request.headers.get("content-length")
    return (
        bool(request.headers.get("content-type"))
        or (declared is not None and declared != "0")
        or ("transfer-encoding" in request.headers)
    )
