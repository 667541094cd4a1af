"""One field's result, and the one per-field summary that every interface returns.

:func:`segment_field` decodes an image's bytes and segments it with a field's :class:`FieldOptions` (what to find,
the object threshold, the mode, the pixel size): the one path every interface takes. The :class:`FieldResult` it
returns knows where it came from (the :class:`~service.engine.segmenter.Origin` of its segmentation) and what was
asked. :meth:`FieldResult.summary` is
the one builder of the per-field summary (:class:`FieldSummary`: origin, image, counts, bacilli with µm when the
pixel size is known) that ``POST /v1/analyze``, job results, slides and the batch command's ``_objects.json``
all carry, so a client reads one schema wherever a field's result comes from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import BaseModel, Field

from service.engine.fingerprint import digest, field_fingerprint
from service.engine.image_io import DecodedImage, decode_image
from service.engine.postprocess import DetectedObject
from service.engine.quality import QualityCheck
from service.engine.rescaled import segment_at_scale
from service.engine.scale import FieldScale, ModelScale, resolve_scale
from service.engine.scale_estimate import SlideScaleEvidence
from service.engine.segmenter import Mode, Segmentation, Segmenter


class BoundingBox(BaseModel):
    x: int = Field(description="left column, pixels from the image's left edge")
    y: int = Field(description="top row, pixels from the image's top edge")
    width: int
    height: int


class Point(BaseModel):
    x: float
    y: float


class BacillusOut(BaseModel):
    id: int = Field(description="1-based, in reading order of each object's first pixel")
    bbox: BoundingBox
    centroid: Point
    area_px: int
    length_px: float = Field(description="extent along the object's principal axis")
    width_px: float = Field(description="extent across the principal axis")
    mean_probability: float = Field(description="mean P(bacillus) of the network over the object's pixels")
    max_probability: float
    score: float | None = Field(description="object filter's P(bacillus) for the whole object; null without a filter")
    estimated_count: int = Field(description="bacilli in the object (touching rods), from its area; 1 without a filter")
    area_um2: float | None = Field(None, description="with microns_per_pixel")
    length_um: float | None = Field(None, description="with microns_per_pixel")
    width_um: float | None = Field(None, description="with microns_per_pixel")
    outline: list[tuple[int, int]] | None = Field(
        None,
        description="closed polygon [x, y] along the pixel edges (first point repeated last); in job results, "
        "where the web page draws it",
    )

    @classmethod
    def of(cls, b: DetectedObject, microns_per_pixel: float | None = None, outline: bool = False) -> BacillusOut:
        x, y, width, height = b.bbox
        microns = b.in_microns(microns_per_pixel) if microns_per_pixel else None
        return cls(
            id=b.id,
            bbox=BoundingBox(x=x, y=y, width=width, height=height),
            centroid=Point(x=b.centroid[0], y=b.centroid[1]),
            area_px=b.area_px,
            length_px=b.length_px,
            width_px=b.width_px,
            mean_probability=b.mean_probability,
            max_probability=b.max_probability,
            score=b.score,
            estimated_count=b.estimated_count,
            area_um2=microns.area_um2 if microns else None,
            length_um=microns.length_um if microns else None,
            width_um=microns.width_um if microns else None,
            outline=[(int(x), int(y)) for x, y in b.outline] if outline else None,
        )


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str
    mode: str


class Timings(BaseModel):
    decode_ms: float
    inference_ms: float
    coarse_ms: float | None = Field(None, description="fast mode: the coarse pass's share of inference_ms")
    postprocess_ms: float
    total_ms: float


class FieldEstimateOut(BaseModel):
    """A field's own scale estimate from its kept objects' lengths."""

    factor: float = Field(description="field pixels × factor = the model's pixels")
    objects: int = Field(description="the kept objects it rests on")


class ScaleOut(BaseModel):
    """The scale the field was read at (:mod:`service.engine.scale`)."""

    microns_per_pixel: float | None = Field(description="the uploaded field's pixel size; null when not known")
    source: str = Field(
        description="request (microns_per_pixel), lab (its profile), metadata (the image's resolution), estimated "
        "(from the lengths of the objects the model keeps on the field), slide (pooled from the estimates of the "
        "slide's earlier fields), assumed (nothing known: the model's own scale), or model-scale-unknown (the model "
        "declares none: read as uploaded)"
    )
    factor: float = Field(
        description="how much the field was enlarged (> 1) or reduced (< 1) for the model; 1: as sent"
    )
    model_microns_per_pixel: float | None = Field(description="the model's training fields' pixel size")
    reasons: list[str]
    relative_error: float | None = Field(
        None,
        description="estimated or slide: the estimated pixel size's relative standard error (µm are not measured on "
        "it)",
    )
    field_estimate: FieldEstimateOut | None = Field(
        None,
        description="the field's own estimate from its kept objects, when it made one (also under source slide when "
        "read as uploaded): a slide pools them for its later fields",
    )
    empty_probe: bool = Field(
        False, description="too few objects as uploaded and read ×2: a slide stops probing after a few such fields"
    )
    slide_fields: int | None = Field(None, description="slide: how many earlier fields the pooled estimate rests on")
    slide_objects: int | None = Field(None, description="slide: their kept objects together")


class DomainOut(BaseModel):
    """The field against the model's training domain (:mod:`service.engine.domain`)."""

    in_domain: bool = Field(description="every measurement of the field within the limit of the training fields'")
    distance: float = Field(description="the largest robust z-score of its measurements against the training fields")
    limit: float = Field(description="the distance above which a field is out of the domain")
    reasons: list[str] = Field(description="each measurement beyond the limit, in words")


class QualityCheckOut(BaseModel):
    """One quality check's verdict."""

    ok: bool
    values: dict[str, float] = Field(description="its measurements (see docs/model-format.md, quality.json)")
    reasons: list[str] = Field(description="why it failed, in words; empty when it passed")


class QualityOut(BaseModel):
    """Whether a count on the field can mean anything (:mod:`service.engine.quality`)."""

    readable: bool = Field(description="every check passed: focus, exposure, stain and smear")
    checks: dict[str, QualityCheckOut]
    reasons: list[str] = Field(description="every failed check's reason, e.g. 'out of focus: sharpness 1.12, …'")

    @classmethod
    def of(cls, q: QualityCheck) -> QualityOut:
        return cls(
            readable=q.readable,
            checks={
                name: QualityCheckOut(ok=c.ok, values=c.values, reasons=list(c.reasons)) for name, c in q.checks.items()
            },
            reasons=list(q.reasons),
        )


class FieldSummary(BaseModel):
    """One field: where its result came from, the image, the counts and the bacilli."""

    model_id: str
    filter_id: str | None = Field(description="the object filter in use; null when every candidate is kept")
    mode: str = Field(
        description="exact: every pixel through the dense network (patch-by-patch equivalent); fast: a coarse pass, "
        "then the dense network on the refined tiles only"
    )
    precision: str = Field(description="the networks' arithmetic: fp32, or int8 (fast mode's quantised networks)")
    refined_tiles: int | None = Field(
        None, description="fast mode: tiles that went through the dense network (of `tiles`); null in exact mode"
    )
    heatmap_exact: bool = Field(
        description="false in fast mode: the heatmap is the network's output wherever it is above the mask threshold "
        "(every refined tile's mask is exact mode's); elsewhere it may be interpolated from the outputs read nearby, "
        "below the mask threshold (outside refined tiles, and inside them where the cascade did not read)"
    )
    threshold: float = Field(description="P(bacillus) above which a pixel belongs to a candidate")
    min_object_px: int
    object_threshold: float | None = Field(description="filter score a candidate needed to be kept")
    image: ImageInfo
    microns_per_pixel: float | None = Field(description="the field's pixel size when known (µm measurements use it)")
    scale: ScaleOut | None = Field(None, description="the scale the field was read at")
    tiles: int
    bacillus_pixel_fraction: float = Field(description="share of the image's pixels with P(bacillus) > threshold")
    candidates: int = Field(description="objects of at least min_object_px pixels before the object filter")
    count: int = Field(description="objects kept as bacilli")
    estimated_bacilli: int = Field(description="bacilli in the kept objects, touching rods counted by size")
    bacilli: list[BacillusOut]
    rejected: list[BacillusOut] | None = Field(
        None, description="candidates the object filter rejected (when asked for)"
    )
    lab_id: str | None = Field(
        None, description="the lab profile it was read with (lab=: its operating point is the object threshold)"
    )
    lab_version: int | None = Field(None, description="that profile's version")
    domain: DomainOut | None = Field(
        None,
        description="whether the field looks like the model's training fields; null when its folder describes no "
        "domain (a slide of out-of-domain fields is never decided automatically)",
    )
    quality: QualityOut | None = Field(
        None,
        description="whether the field is readable (focus, exposure, stain, a ZN smear at all); an unreadable field "
        "is still segmented, but its count does not count towards a slide's examined fields; null when the model "
        "folder has no quality limits",
    )
    sha256: str | None = Field(None, description="SHA-256 of the image's bytes as sent")
    fingerprint: str | None = Field(
        None,
        description="the field's stain density on a 32×32 grid (base64): a slide counts a field sent twice once "
        "(service/engine/fingerprint.py)",
    )


class AnalyzedField(FieldSummary):
    """A field's summary with the time each stage took (``/v1/analyze``, job results, ``_objects.json``)."""

    timings: Timings


@dataclass(frozen=True)
class FieldOptions:
    """What a caller asks of one field; every interface (HTTP routes, jobs, the batch commands) builds one.

    Attributes:
        find_objects: find, measure and filter the candidates (False: the heatmap and the mask only).
        object_threshold: the filter score a candidate needs to be kept (None: the model's own).
        mode: exact or fast, already resolved for the model (:meth:`Segmenter.resolve_mode
            <service.engine.segmenter.Segmenter.resolve_mode>`).
        microns_per_pixel: the field's pixel size given with the request: read at the model's scale and measured in
            µm with it (None: the lab's, the image's metadata, else unknown).
        lab_pixel_size_um: the lab profile's pixel size, when it declares one.
        lab_id, lab_version: the lab profile the field is read with (its operating point is the object threshold),
            or None.
        estimate_scale: when nothing tells the field's pixel size, estimate it from the field's own kept objects
            (:mod:`service.engine.scale_estimate`) rather than assume the model's.
        slide_scale: the scale evidence of the slide the field joins (its earlier fields read by the same model),
            which this field's reading adds to; None: a field on its own.
    """

    find_objects: bool = True
    object_threshold: float | None = None
    mode: Mode = Mode.EXACT
    microns_per_pixel: float | None = None
    lab_pixel_size_um: float | None = None
    lab_id: str | None = None
    lab_version: int | None = None
    estimate_scale: bool = True
    slide_scale: SlideScaleEvidence | None = None

    def scale_of(self, model: ModelScale | None, image: DecodedImage) -> FieldScale:
        """The scale ``image`` is read at for a model of scale ``model`` (:func:`~service.engine.scale.resolve_scale`:
        the request's pixel size, the lab's, the image's metadata, else assumed)."""
        return resolve_scale(
            model,
            request=self.microns_per_pixel,
            lab=self.lab_pixel_size_um,
            metadata=image.microns_per_pixel,
            lab_id=self.lab_id,
        )


@dataclass(frozen=True)
class FieldResult:
    """A decoded field and its segmentation.

    Attributes:
        image: the decoded field.
        segmentation: heatmap, masks, bacilli and their origin.
        decode_seconds: time spent decoding.
        options: what was asked.
        fingerprint: the field's stain-density map (:mod:`service.engine.fingerprint`), when computed.
        sha256: its bytes' digest, when known.
    """

    image: DecodedImage
    segmentation: Segmentation
    decode_seconds: float
    options: FieldOptions = FieldOptions()
    fingerprint: str | None = None
    sha256: str | None = None

    def summary(self, include_rejected: bool = False, outlines: bool = False) -> FieldSummary:
        """The per-field summary (µm measurements with the options' pixel size); ``rejected`` is listed only with
        ``include_rejected``, each object's outline only with ``outlines``."""
        s, origin = self.segmentation, self.segmentation.origin
        scale = s.scale
        microns_per_pixel = scale.measured_microns if scale is not None else self.options.microns_per_pixel
        return FieldSummary(
            model_id=origin.model_id,
            filter_id=origin.filter_id,
            mode=origin.mode.value,
            precision=origin.precision,
            refined_tiles=s.refined_tiles,
            heatmap_exact=s.heatmap_exact,
            threshold=origin.threshold,
            min_object_px=origin.min_object_px,
            object_threshold=origin.object_threshold,
            image=ImageInfo(
                width=self.image.width, height=self.image.height, format=self.image.format, mode=self.image.mode
            ),
            microns_per_pixel=microns_per_pixel,
            scale=(
                ScaleOut(
                    microns_per_pixel=scale.microns_per_pixel,
                    source=scale.source.value,
                    factor=round(scale.factor, 6),
                    model_microns_per_pixel=scale.model_microns_per_pixel,
                    reasons=list(scale.reasons),
                    relative_error=scale.relative_error,
                    field_estimate=(
                        FieldEstimateOut(factor=scale.own_estimate[0], objects=scale.own_estimate[1])
                        if scale.own_estimate is not None
                        else None
                    ),
                    empty_probe=scale.empty_probe,
                    slide_fields=scale.slide.fields if scale.slide is not None else None,
                    slide_objects=scale.slide.objects if scale.slide is not None else None,
                )
                if scale is not None
                else None
            ),
            tiles=s.tiles,
            bacillus_pixel_fraction=round(s.bacillus_fraction, 6),
            candidates=len(s.bacilli) + len(s.rejected),
            count=len(s.bacilli),
            estimated_bacilli=s.estimated_bacilli,
            bacilli=[BacillusOut.of(b, microns_per_pixel, outlines) for b in s.bacilli],
            rejected=[BacillusOut.of(b, microns_per_pixel, outlines) for b in s.rejected] if include_rejected else None,
            lab_id=self.options.lab_id,
            lab_version=self.options.lab_version,
            domain=(
                DomainOut(
                    in_domain=s.domain.in_domain,
                    distance=s.domain.distance,
                    limit=s.domain.limit,
                    reasons=list(s.domain.reasons),
                )
                if s.domain is not None
                else None
            ),
            quality=QualityOut.of(s.quality) if s.quality is not None else None,
            sha256=self.sha256,
            fingerprint=self.fingerprint,
        )

    def analyzed(self, total_seconds: float, include_rejected: bool = False, outlines: bool = False) -> AnalyzedField:
        """The summary with its timings; ``total_seconds`` is the caller's whole time for the field."""
        return AnalyzedField(
            **dict(self.summary(include_rejected, outlines)),
            timings=Timings(
                decode_ms=round(self.decode_seconds * 1000, 1),
                inference_ms=round(self.segmentation.infer_seconds * 1000, 1),
                coarse_ms=(
                    round(self.segmentation.coarse_seconds * 1000, 1)
                    if self.segmentation.coarse_seconds is not None
                    else None
                ),
                postprocess_ms=round(self.segmentation.postprocess_seconds * 1000, 1),
                total_ms=round(total_seconds * 1000, 1),
            ),
        )


def segment_field(
    segmenter: Segmenter, data: bytes, *, max_pixels: int, options: FieldOptions = FieldOptions()
) -> FieldResult:
    """Decode an image's bytes and segment it as ``options`` ask, on the calling thread.

    Raises:
        ImageRejected: an image that cannot be read or is over ``max_pixels`` (as sent, or at the model's scale).
        ValueError: a pixel size that is not a positive number.
        ModeUnavailable: ``options.mode`` is one this segmenter cannot run.
        EngineError: inference failed.
    """
    started = time.perf_counter()
    decoded = decode_image(data, max_pixels)
    decoded_at = time.perf_counter()
    result = segment_at_scale(
        segmenter,
        decoded.rgb,
        options.scale_of(segmenter.scale, decoded),
        find_objects=options.find_objects,
        object_threshold=options.object_threshold,
        mode=options.mode,
        max_pixels=max_pixels,
        estimate=options.estimate_scale,
        slide=options.slide_scale,
    )
    return FieldResult(decoded, result, decoded_at - started, options, field_fingerprint(decoded.rgb), digest(data))
