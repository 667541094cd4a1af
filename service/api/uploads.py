"""Reading an uploaded image: multipart field ``file`` or the raw body, never more than the byte limit."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

from service.api.problems import BadRequest
from service.image_io import MEDIA_TYPES, ImageTooLarge, UnsupportedImageType

RAW_TYPES = MEDIA_TYPES | {"application/octet-stream", ""}


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None
    content_type: str


def _too_large(size: int | str, limit: int) -> ImageTooLarge:
    return ImageTooLarge(f"the upload is {size} bytes; the limit is {limit} bytes")


async def _read_body(request: Request, max_bytes: int) -> tuple[str, bytes]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in RAW_TYPES and media_type != "multipart/form-data":
        raise UnsupportedImageType(
            f"Content-Type {media_type!r} is not read: send image/png, image/jpeg or image/tiff as the body, "
            "or multipart/form-data with the image in the field 'file'"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(declared, max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(f"more than {max_bytes}", max_bytes)
    if media_type != "multipart/form-data" and not body:
        raise BadRequest(
            "the request has no image: send it as the body or as the multipart field 'file'",
            status=422,
            slug="missing-image",
        )
    return media_type, bytes(body)


async def _multipart_files(request: Request, body: bytes, names: tuple[str, ...], max_files: int) -> list[Upload]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=max_files + 32)
    except HTTPException as exc:  # Starlette's own refusal of too many parts, or a malformed body
        raise BadRequest(f"the multipart body was refused: {exc.detail}", status=422, slug="bad-multipart") from exc
    try:
        uploads = []
        for name, part in form.multi_items():
            if name not in names:
                continue
            if not isinstance(part, UploadFile):
                raise BadRequest(
                    f"the multipart field {name!r} must be a file, not a text value", status=422, slug="missing-image"
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
        BadRequest: a multipart body without a ``file`` field, or with no image in it (422).
    """
    media_type, body = await _read_body(request, max_bytes)
    if media_type != "multipart/form-data":
        return Upload(body, None, media_type)
    uploads = await _multipart_files(request, body, ("file",), max_files=4)
    if not uploads:
        raise BadRequest("the multipart body has no field 'file'", status=422, slug="missing-image")
    return uploads[0]


async def read_uploads(request: Request, max_bytes: int, max_files: int) -> list[Upload]:
    """Every image of a request: the raw body (one), or each multipart file part named ``files`` or ``file``
    (any number up to ``max_files``, none allowed). Errors as :func:`read_upload`, and 422 over ``max_files``."""
    media_type, body = await _read_body(request, max_bytes) if _has_body(request) else ("", b"")
    if not body and media_type != "multipart/form-data":
        return []
    if media_type != "multipart/form-data":
        return [Upload(body, None, media_type)]
    uploads = await _multipart_files(request, body, ("files", "file"), max_files=max_files)
    if len(uploads) > max_files:
        raise BadRequest(f"{len(uploads)} files sent; at most {max_files} per request", status=422, slug="too-many")
    return uploads


def _has_body(request: Request) -> bool:
    declared = request.headers.get("content-length")
    return (
        bool(request.headers.get("content-type"))
        or (declared is not None and declared != "0")
        or ("transfer-encoding" in request.headers)
    )
