"""How a field enters a slide: from the per-field summary every interface carries (:mod:`service.field_result`)
to the slide's own record (:class:`~service.slides.model.SlideField`).

The one place the slide domain meets the wire schema: ``POST /v1/slides`` turns the summary of a field it has just
read, a finished job the summaries its fields stored (a job may finish after a restart, so its stored results are
what it has), and the batch commands the summaries they wrote. The store never sees a wire schema.
"""

from __future__ import annotations

from service.field_result import BacillusOut, FieldSummary, ScaleOut
from service.slides.model import ObjectSource, SlideField, SlideObject


def slide_object(number: int, source: ObjectSource, b: BacillusOut) -> SlideObject:
    """A summary's object as the ``number``-th object of a slide's field."""
    return SlideObject(
        number=number,
        source=source,
        x=b.centroid.x,
        y=b.centroid.y,
        bbox=(b.bbox.x, b.bbox.y, b.bbox.width, b.bbox.height),
        outline=tuple((int(p[0]), int(p[1])) for p in b.outline) if b.outline else None,
        score=b.score,
        estimated_count=b.estimated_count,
    )


def slide_field(
    name: str, summary: FieldSummary, added_at: float = 0.0, job: tuple[str, int] | None = None
) -> SlideField:
    """The field of a summary under the name it was sent with; its objects are kept (for review) when the summary
    lists its rejected candidates too. ``job``: the (job id, field) holding its image."""
    reviewable = summary.rejected is not None
    kept = tuple(slide_object(i, ObjectSource.KEPT, b) for i, b in enumerate(summary.bacilli, start=1))
    rejected = tuple(
        slide_object(len(kept) + i, ObjectSource.REJECTED, b) for i, b in enumerate(summary.rejected or (), start=1)
    )
    return SlideField(
        name=name,
        kept_objects=summary.count,
        estimated_bacilli=summary.estimated_bacilli,
        width=summary.image.width,
        height=summary.image.height,
        model_id=summary.model_id,
        filter_id=summary.filter_id,
        added_at=added_at,
        mode=summary.mode,
        job_id=job[0] if job else None,
        job_field=job[1] if job else None,
        reviewable=reviewable,
        objects=kept + rejected if reviewable else (),
        in_domain=summary.domain.in_domain if summary.domain else None,
        domain_distance=summary.domain.distance if summary.domain else None,
        domain_reasons=tuple(summary.domain.reasons) if summary.domain else (),
        lab_id=summary.lab_id,
        lab_version=summary.lab_version,
        readable=summary.quality.readable if summary.quality else None,
        quality_reasons=tuple(summary.quality.reasons) if summary.quality else (),
        sha256=summary.sha256,
        fingerprint=summary.fingerprint,
        scale_source=summary.scale.source if summary.scale is not None else None,
        scale_estimate=scale_estimate(summary.scale),
        scale_empty_probe=summary.scale.empty_probe if summary.scale is not None else False,
    )


def scale_estimate(scale: ScaleOut | None) -> tuple[float, int] | None:
    """A field's own scale estimate ``(factor, objects)`` from its summary's scale, when it made one: what a slide's
    later fields pool (:mod:`service.engine.scale_estimate`)."""
    own = scale.field_estimate if scale is not None else None
    return (own.factor, own.objects) if own is not None else None
