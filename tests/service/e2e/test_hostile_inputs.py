"""A corpus of malformed and hostile inputs, generated here, against a real server; and schema-wide fuzzing.

Each input gets what a careful server gives: a correct result when it is a valid image we read (any size, bit
depth or colour mode), otherwise a 4xx with a problem-details JSON body. Afterwards the server is still ready and
within its memory bound.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.e2e.conftest import LiveServer
from training.data.synthetic import synthetic_field

FIELD = synthetic_field(33, height=90, width=120, background="blue").image
MEMORY_BOUND_MB = 1500  # random model, 96 px tiles, 2 MP images at most: the server needs far less


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_bad_crc() -> bytes:
    good = _save(Image.fromarray(FIELD), "PNG")
    return good[:29] + bytes([good[29] ^ 0xFF]) + good[30:]  # flips a byte of the IHDR CRC


def _png_claiming_huge_size() -> bytes:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _multipage_tiff() -> bytes:
    pages = [Image.fromarray(FIELD), Image.fromarray(FIELD[::-1].copy())]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _animated_gif() -> bytes:
    frames = [Image.fromarray(FIELD), Image.fromarray(FIELD[:, ::-1].copy())]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)


Raw = tuple[bytes, str]  # body, Content-Type
OK: dict[str, tuple[Callable[[], Raw], tuple[int, int]]] = {
    "1x1 PNG": (lambda: (_save(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG"), "image/png"), (1, 1)),
    "100000x1 PNG": (lambda: (_save(Image.new("RGB", (100_000, 1), (200, 30, 60)), "PNG"), "image/png"), (100_000, 1)),
    "1x20000 PNG": (lambda: (_save(Image.new("L", (1, 20_000), 128), "PNG"), "image/png"), (1, 20_000)),
    "16-bit grey TIFF": (
        lambda: (_save(Image.fromarray(FIELD[..., 0].astype(np.uint16) * 257), "TIFF"), "image/tiff"),
        (120, 90),
    ),
    "float TIFF": (
        lambda: (_save(Image.fromarray(FIELD[..., 1].astype(np.float32) / 255), "TIFF"), "image/tiff"),
        (120, 90),
    ),
    "CMYK JPEG": (lambda: (_save(Image.fromarray(FIELD).convert("CMYK"), "JPEG"), "image/jpeg"), (120, 90)),
    "multi-page TIFF (first page)": (lambda: (_multipage_tiff(), "image/tiff"), (120, 90)),
    "palette PNG": (lambda: (_save(Image.fromarray(FIELD).convert("P"), "PNG"), "image/png"), (120, 90)),
    "grey + alpha PNG": (lambda: (_save(Image.fromarray(FIELD).convert("LA"), "PNG"), "image/png"), (120, 90)),
    "1-bit PNG": (lambda: (_save(Image.fromarray(FIELD).convert("1"), "PNG"), "image/png"), (120, 90)),
    "JPEG sent as image/png": (lambda: (_save(Image.fromarray(FIELD), "JPEG"), "image/png"), (120, 90)),
    "octet-stream PNG": (lambda: (_save(Image.fromarray(FIELD), "PNG"), "application/octet-stream"), (120, 90)),
}
REFUSED: dict[str, tuple[Callable[[], Raw], int]] = {
    "zero bytes": (lambda: (b"", "image/png"), 422),
    "truncated PNG": (lambda: (_save(Image.fromarray(FIELD), "PNG")[:300], "image/png"), 422),
    "truncated JPEG": (lambda: (_save(Image.fromarray(FIELD), "JPEG")[:400], "image/jpeg"), 422),
    "PNG signature only": (lambda: (b"\x89PNG\r\n\x1a\n", "image/png"), 422),
    "PNG with a bad CRC": (lambda: (_png_with_bad_crc(), "image/png"), 422),
    "text named .png": (lambda: (b"hello, I am not an image\n" * 20, "image/png"), 415),
    "text/plain Content-Type": (lambda: (_save(Image.fromarray(FIELD), "PNG"), "text/plain"), 415),
    "application/json Content-Type": (lambda: (b'{"image": "x"}', "application/json"), 415),
    "decompression bomb (1-bit 20000x20000)": (
        lambda: (_save(Image.new("1", (20_000, 20_000)), "PNG"), "image/png"),
        413,
    ),
    "PNG header claiming 100000x100000": (lambda: (_png_claiming_huge_size(), "image/png"), 413),
    "animated GIF": (lambda: (_animated_gif(), "image/png"), 415),
    "BMP": (lambda: (_save(Image.fromarray(FIELD), "BMP"), "image/png"), 415),
    "WebP": (lambda: (_save(Image.fromarray(FIELD), "WEBP"), "image/png"), 415),
    "SVG": (lambda: (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "image/png"), 415),
    "over the byte limit": (lambda: (b"\x89PNG\r\n\x1a\n" + b"\0" * 3_100_000, "image/png"), 413),
    "multipart without a boundary": (lambda: (b"--x\r\n\r\n", "multipart/form-data"), 422),
}


def _problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["detail"] and body["type"].startswith("/problems/")


@pytest.mark.parametrize("name", list(OK))
def test_valid_images_of_any_kind_are_segmented(random_server: LiveServer, name: str) -> None:
    make, size = OK[name]
    body, content_type = make()
    response = httpx.post(
        f"{random_server.url}/v1/segment", content=body, headers={"content-type": content_type}, timeout=300
    )
    assert response.status_code == 200, response.text[:300]
    assert Image.open(io.BytesIO(response.content)).size == size


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_inputs_get_a_4xx_problem(random_server: LiveServer, name: str) -> None:
    make, status = REFUSED[name]
    body, content_type = make()
    _problem(
        httpx.post(f"{random_server.url}/v1/analyze", content=body, headers={"content-type": content_type}), status
    )


def test_bad_requests_around_the_image(random_server: LiveServer) -> None:
    url, png = random_server.url, _save(Image.fromarray(FIELD), "PNG")
    raw = {"content-type": "image/png"}
    many_fields = [("f", (None, "x")) for _ in range(2000)]  # a form with thousands of parts
    _problem(httpx.post(f"{url}/v1/segment", files=[*many_fields, ("file", ("a.png", png, "image/png"))]), 422)
    _problem(httpx.post(f"{url}/v1/segment", files={"picture": ("a.png", png, "image/png")}), 422)  # missing field
    _problem(httpx.post(f"{url}/v1/segment", data={"file": "not a file"}, files={"x": ("x", b"", "text/plain")}), 422)
    many_files = [("files", (f"{i}.png", png, "image/png")) for i in range(70)]  # over max files per request
    _problem(httpx.post(f"{url}/v1/slides", files=many_files), 422)
    for query in (
        "output=nonsense",
        "format=bmp",
        "object_threshold=2",
        "object_threshold=nan",
        "output=heatmap&format=",
    ):
        _problem(httpx.post(f"{url}/v1/segment?{query}", content=png, headers=raw), 422)
    for query in ("microns_per_pixel=-1", "microns_per_pixel=1e309", "include_rejected=maybe", "format=xml"):
        _problem(httpx.post(f"{url}/v1/analyze?{query}", content=png, headers=raw), 422)
    _problem(httpx.get(f"{url}/v1/slides/{'x' * 65}"), 422)
    _problem(httpx.put(f"{url}/v1/segment", content=png, headers=raw), 405)


def _chunks(head: bytes, size: int, tail: bytes = b"") -> Iterator[bytes]:
    yield head
    for _ in range(size // 100_000):
        yield b"\0" * 100_000
    yield tail


def test_bodies_streaming_past_the_byte_limit_are_cut_off(random_server: LiveServer) -> None:
    """Chunked bodies (no Content-Length) are counted as they arrive, raw or multipart, for one field or many."""
    url = random_server.url
    raw = _chunks(b"\x89PNG\r\n\x1a\n", 4_000_000)
    _problem(httpx.post(f"{url}/v1/analyze", content=raw, headers={"content-type": "image/png"}), 413)
    head = (
        b'--xx\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    )
    for path in ("/v1/segment", "/v1/slides", "/v1/jobs"):
        body = _chunks(head, 4_000_000, b"\r\n--xx--\r\n")
        response = httpx.post(
            f"{url}{path}", content=body, headers={"content-type": "multipart/form-data; boundary=xx"}
        )
        _problem(response, 413)
    assert httpx.get(f"{url}/readyz").status_code == 200


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_after_the_corpus_the_service_is_ready_and_within_its_memory_bound(random_server: LiveServer) -> None:
    assert httpx.get(f"{random_server.url}/readyz").status_code == 200
    png = _save(Image.fromarray(FIELD), "PNG")
    assert httpx.post(f"{random_server.url}/v1/segment", content=png, headers={"content-type": "image/png"}).is_success
    assert _rss_mb(random_server.process.pid) < MEMORY_BOUND_MB
    metrics = httpx.get(f"{random_server.url}/metrics").text
    assert 'status="500"' not in metrics


def test_the_corpus_has_at_least_25_inputs() -> None:
    assert len(OK) + len(REFUSED) >= 25
