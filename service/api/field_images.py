"""A slide field's image, while the job that read it keeps it: as sent (for the browser) or decoded (for
thumbnails), with a small cache of decoded fields so a gallery of a hundred thumbnails decodes each field once."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.api.problems import Gone
from service.api.state import Serving
from service.engine.image_io import decode_image, encode_png
from service.slides.model import SlideField

BROWSER_FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg")}
CACHED_FIELDS = 4  # decoded fields kept (a 5-megapixel field is 15 MB)


def field_image_bytes(serving: Serving, field: SlideField) -> tuple[bytes, str, str] | None:
    """The field's image as (bytes, media type, extension), as a browser shows it; None when no longer kept."""
    if field.job_id is None or field.job_field is None:
        return None
    path = serving.jobs.input_path(field.job_id, field.job_field)
    if not path.is_file():
        return None
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as probe:
        kind = BROWSER_FORMATS.get(probe.format or "")
    if kind is not None:
        return data, *kind
    return encode_png(decode_image(data, serving.settings.max_pixels).rgb), "image/png", "png"  # TIFF


def not_kept(index: int, field: SlideField, serving: Serving) -> Gone:
    """The 410 for a field whose image is no longer kept, saying why."""
    return Gone(
        f"the image of field {index} ({field.name}) is not kept: "
        + (
            "it was sent to /v1/slides directly, and only jobs keep their images"
            if field.job_id is None
            else f"its job expired (jobs are kept {serving.settings.job_retention_s // 3600} h)"
        )
    )


class DecodedFields:
    """The last few fields decoded for thumbnails, by (job, field); safe from worker threads."""

    def __init__(self, size: int = CACHED_FIELDS) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], npt.NDArray[np.uint8]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, serving: Serving, field: SlideField) -> npt.NDArray[np.uint8] | None:
        """The field's RGB, decoded once while it stays among the last few; None when its image is not kept."""
        if field.job_id is None or field.job_field is None:
            return None
        key = (field.job_id, field.job_field)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        path = serving.jobs.input_path(*key)
        if not path.is_file():
            return None
        rgb = decode_image(path.read_bytes(), serving.settings.max_pixels).rgb
        with self._lock:
            self._items[key] = rgb
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return rgb
