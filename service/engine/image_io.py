"""Decoding images into the RGB arrays the network sees, within limits, and encoding results.

The one image reader of the project: the API, the batch command and training (``training.data.dataset``) all
decode fields here, so a lab's 16-bit or RGBA TIFF is the same array in training and in serving. Reads PNG, JPEG
and TIFF (8 or 16 bit; grey, RGB, RGBA, palette, CMYK), converting to 8-bit RGB (transparent pixels onto
white, as a slide). The pixel limit is checked from the header before any pixel is decoded, so decompression
bombs are refused cheaply. Refusals are :class:`ImageRejected` subclasses; only the HTTP layer maps them to
statuses.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from service.engine.scale import metadata_microns

READABLE_FORMATS = frozenset({"PNG", "JPEG", "TIFF", "MPO"})  # MPO: multi-picture JPEG from some cameras
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
MEDIA_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/tiff", "image/tif"}


class ImageRejected(Exception):
    """Base of the reasons an image is refused (the input's fault, not the engine's)."""


class UnsupportedImageType(ImageRejected):
    """Not an image format we read."""


class ImageTooLarge(ImageRejected):
    """More bytes or more pixels than the limits."""


class UndecodableImage(ImageRejected):
    """A format we read, but truncated or corrupt."""


class ResampledTooLarge(ImageRejected):
    """A field whose pixel size would make it larger than the pixel limit at the model's scale."""


@dataclass(frozen=True)
class DecodedImage:
    """An uploaded image as ``[y, x, 3]`` uint8 RGB, with what it was."""

    rgb: npt.NDArray[np.uint8]
    format: str
    mode: str
    microns_per_pixel: float | None = None  # from its resolution metadata, when credible for a microscope

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _to_rgb8(img: Image.Image) -> npt.NDArray[np.uint8]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or wide.max() > 255 else 255.0
        grey = np.clip(wide / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 1.0 if values.max() <= 1.0 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent → white, as a slide
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode an uploaded image into RGB.

    Raises:
        UnsupportedImageType: not PNG, JPEG or TIFF (or not an image at all).
        ImageTooLarge: more than ``max_pixels`` pixels (checked before decoding).
        UndecodableImage: empty, truncated or corrupt.
    """
    if not data:
        raise UndecodableImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if data.startswith(SIGNATURES):  # one of our formats, but broken: say so rather than "wrong type"
            raise UndecodableImage("the image starts like a PNG, JPEG or TIFF but is corrupt") from exc
        raise UnsupportedImageType("not an image we read: send PNG, JPEG or TIFF") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image has too many pixels ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UndecodableImage(f"the image is truncated or corrupt ({exc})") from exc
    if img.format not in READABLE_FORMATS:
        raise UnsupportedImageType(f"{img.format} images are not read: send PNG, JPEG or TIFF")
    width, height = img.size
    if width < 1 or height < 1:
        raise UndecodableImage(f"image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}×{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            rgb = _to_rgb8(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise UndecodableImage(f"the {img.format} image is truncated or corrupt ({exc})") from exc
    return DecodedImage(
        rgb=rgb, format=str(img.format), mode=str(img.mode), microns_per_pixel=metadata_microns(img.info)
    )


def encode_png(array: npt.NDArray[np.uint8]) -> bytes:
    """A greyscale (``[y, x]``) or RGB (``[y, x, 3]``) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def encode_float_tiff(array: npt.NDArray[np.float32]) -> bytes:
    """A ``[y, x]`` float32 array as a 32-bit floating-point TIFF."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()
