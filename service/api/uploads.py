"""Reading an uploaded image: multipart field ``file`` or the raw body, never more than the byte limit."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
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


async def read_upload(request: Request, max_bytes: int) -> Upload:
    """The image bytes of a request.

    Raises:
        ImageTooLarge: Content-Length or the bytes received exceed ``max_bytes`` (reading stops there).
        UnsupportedImageType: a Content-Type that is neither an image type we read nor multipart.
        BadRequest: a multipart body without a ``file`` field, or with no image in it (422).
    """
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
    if media_type != "multipart/form-data":
        if not body:
            raise BadRequest(
                "the request has no image: send it as the body or as the multipart field 'file'",
                status=422,
                slug="missing-image",
            )
        return Upload(bytes(body), None, media_type)

    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    form = await Request(request.scope, replay).form(max_files=4, max_fields=32)
    try:
        part = form.get("file")
        if part is None:
            raise BadRequest("the multipart body has no field 'file'", status=422, slug="missing-image")
        if not isinstance(part, UploadFile):
            raise BadRequest(
                "the multipart field 'file' must be a file, not a text value", status=422, slug="missing-image"
            )
        return Upload(await part.read(), part.filename, (part.content_type or "").lower())
    finally:
        await form.close()
