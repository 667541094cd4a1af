"""Decoding uploads: every mode and depth we read becomes 8-bit RGB; everything else is refused by class."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.engine.image_io import (
    ImageTooLarge,
    UndecodableImage,
    UnsupportedImageType,
    decode_image,
    encode_float_tiff,
    encode_png,
)


def _save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("data", "expected_shape"),
    [
        (_save(Image.fromarray(RGB), "PNG"), (30, 40, 3)),  # RGB PNG
        (_save(Image.fromarray(RGB), "JPEG", quality=95), (30, 40, 3)),  # JPEG
        (_save(Image.fromarray(RGB), "TIFF"), (30, 40, 3)),  # 8-bit TIFF
        (_save(Image.fromarray(RGB).convert("L"), "PNG"), (30, 40, 3)),  # grey
        (_save(Image.fromarray(RGB).convert("RGBA"), "PNG"), (30, 40, 3)),  # RGBA
        (_save(Image.fromarray(RGB).convert("P"), "PNG"), (30, 40, 3)),  # palette
        (_save(Image.fromarray(RGB).convert("CMYK"), "JPEG"), (30, 40, 3)),  # CMYK JPEG
        (_save(Image.fromarray(RGB[..., 0].astype(np.uint16) * 257), "TIFF"), (30, 40, 3)),  # 16-bit grey
        (_save(Image.fromarray(RGB[..., 0].astype(np.float32) / 255, mode="F"), "TIFF"), (30, 40, 3)),  # float
        (_save(Image.new("RGB", (1, 1)), "PNG"), (1, 1, 3)),  # one pixel
    ],
)
def test_readable_images_become_rgb8(data: bytes, expected_shape: tuple[int, ...]) -> None:
    decoded = decode_image(data, max_pixels=10_000)
    assert decoded.rgb.shape == expected_shape and decoded.rgb.dtype == np.uint8


def test_lossless_rgb_is_exact_and_16_bit_scales() -> None:
    np.testing.assert_array_equal(decode_image(_save(Image.fromarray(RGB), "PNG"), 10_000).rgb, RGB)
    wide = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert (decode_image(_save(wide, "TIFF"), 100).rgb == 255).all()


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", UndecodableImage, "empty"),
        (b"hello, this is text", UnsupportedImageType, "PNG, JPEG or TIFF"),
        (_save(Image.fromarray(RGB), "GIF"), UnsupportedImageType, "GIF"),
        (_save(Image.fromarray(RGB), "BMP"), UnsupportedImageType, "BMP"),
        (_save(Image.fromarray(RGB), "PNG")[:200], UndecodableImage, "truncated"),
        (_save(Image.fromarray(RGB), "JPEG")[:300], UndecodableImage, "truncated"),
        (_save(Image.new("L", (200, 200)), "PNG"), ImageTooLarge, "40000 pixels"),
    ],
)
def test_refusals(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_image(data, max_pixels=10_000)


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _save(Image.new("1", (20_000, 20_000)), "PNG")  # 400 MP of zeros in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, max_pixels=40_000_000)


def test_encoders_round_trip() -> None:
    mask = (RGB[..., 0] > 128).astype(np.uint8) * 255
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(mask)))), mask)
    heat = RGB[..., 1].astype(np.float32) / 255
    back = Image.open(io.BytesIO(encode_float_tiff(heat)))
    assert back.mode == "F"
    np.testing.assert_array_equal(np.asarray(back), heat)
