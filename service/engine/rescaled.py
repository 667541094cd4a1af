"""A field read at the model's scale (:mod:`service.engine.scale`) and its result mapped back to the uploaded pixels.

The field is resampled once, segmented exactly as any field (:meth:`Segmenter.segment
<service.engine.segmenter.Segmenter.segment>`: tiling, the object filter's features and its decisions all at the
model's scale), then the heatmap is resampled back (bilinear), the masks by nearest neighbour, and each object's box,
centroid, outline, area, length and width are divided by the factor, so every coordinate a client receives is in
the image it sent, and µm measurements (pixels × the uploaded field's pixel size) are the same as at the model's
scale. At factor 1 nothing is resampled: the result is the segmenter's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from service.engine.image_io import ResampledTooLarge
from service.engine.postprocess import DetectedObject
from service.engine.scale import FieldScale, resample, resample_mask, resample_probabilities
from service.engine.segmenter import Mode, Segmentation, Segmenter


def map_object(o: DetectedObject, factor: float, width: int, height: int) -> DetectedObject:
    """An object found at the model's scale, in the uploaded field's pixels (``factor``: model px per field px)."""
    x, y, w, h = o.bbox
    x0, y0 = math.floor(x / factor), math.floor(y / factor)
    x1, y1 = min(width, math.ceil((x + w) / factor)), min(height, math.ceil((y + h) / factor))
    outline = tuple((round(px / factor), round(py / factor)) for px, py in o.outline)
    return replace(
        o,
        bbox=(x0, y0, max(1, x1 - x0), max(1, y1 - y0)),
        centroid=(round(o.centroid[0] / factor, 3), round(o.centroid[1] / factor, 3)),
        area_px=max(1, round(o.area_px / factor**2)),
        length_px=round(o.length_px / factor, 3),
        width_px=round(o.width_px / factor, 3),
        outline=outline,
    )


def check_resampled_size(scale: FieldScale, width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The field's size at the model's scale.

    Raises:
        ResampledTooLarge: over ``max_pixels`` there.
    """
    size = scale.resampled_size(width, height)
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ResampledTooLarge(
            f"at {scale.microns_per_pixel:g} µm per pixel ({scale.source.value}) the {width}×{height} field is "
            f"{size[0]}×{size[1]} at the model's {scale.model_microns_per_pixel:g} µm per pixel (×{scale.factor:.3g}): "
            f"over the limit of {max_pixels} pixels; send a smaller field or check microns_per_pixel"
        )
    return size


def segment_at_scale(
    segmenter: Segmenter,
    rgb: npt.NDArray[np.uint8],
    scale: FieldScale,
    *,
    find_objects: bool = True,
    object_threshold: float | None = None,
    mode: Mode = Mode.EXACT,
    max_pixels: int | None = None,
) -> Segmentation:
    """``rgb`` segmented at the model's scale, in the uploaded pixels (module docstring); ``scale`` is recorded on
    the result.

    Raises:
        ResampledTooLarge: the field at the model's scale would be over ``max_pixels``.
        ModeUnavailable: as :meth:`Segmenter.segment`.
    """
    height, width = rgb.shape[:2]
    if not scale.resampled:
        result = segmenter.segment(rgb, find_objects=find_objects, object_threshold=object_threshold, mode=mode)
        return replace(result, scale=scale)
    size = check_resampled_size(scale, width, height, max_pixels)
    result = segmenter.segment(
        resample(rgb, size), find_objects=find_objects, object_threshold=object_threshold, mode=mode
    )
    factor = size[0] / width  # the factor actually applied (the size is rounded)
    return replace(
        result,
        heatmap=resample_probabilities(result.heatmap, (width, height)),
        mask=resample_mask(result.mask, (width, height)),
        objects=resample_mask(result.objects, (width, height)),
        bacilli=tuple(map_object(o, factor, width, height) for o in result.bacilli),
        rejected=tuple(map_object(o, factor, width, height) for o in result.rejected),
        scale=scale,
    )
