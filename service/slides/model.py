"""The slide domain: a slide's fields, each field's objects and their review, signatures, the review history.

Plain frozen dataclasses, no storage and no HTTP: the store (:mod:`service.slides.store`) reads and writes them, the
report (:mod:`service.slides.report`) grades them, and a field enters a slide from its per-field summary through
:mod:`service.slides.intake`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

SLIDE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # 1–64 characters; also the API's parameter pattern
SLIDE_ID = re.compile(SLIDE_ID_PATTERN)
POINT_BOX_PX = 20  # side of the box an added point stands for (as training reads point annotations)


def check_slide_id(slide_id: str) -> str:
    """``slide_id`` when valid.

    Raises:
        ValueError: naming the id and the rule.
    """
    if not SLIDE_ID.match(slide_id):
        raise ValueError(
            f"slide id {slide_id[:80]!r} is not valid: 1–64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return slide_id


class ObjectSource(StrEnum):
    """Where an object of a slide's field comes from."""

    KEPT = "kept"  # kept as a bacillus by the model (and its object filter)
    REJECTED = "rejected"  # a candidate the object filter rejected
    ADDED = "added"  # marked by a reviewer where the model found nothing


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True)
class SlideObject:
    """One object of a slide's field and its review.

    Attributes:
        number: 1-based within the field: the model's kept objects, then its rejected candidates, then added ones.
        source: kept, rejected or added.
        x, y: centre (pixels, origin top-left).
        bbox: (x, y, width, height).
        outline: closed polygon along the pixel edges; None for an added point.
        score: the object filter's P(bacillus); None without a filter or for an added point.
        estimated_count: bacilli the object stands for (touching rods); 1 for an added point.
        decision: the reviewer's, or None when not reviewed.
        reviewer: who decided (the API key's user, or the name the client gave); None when unknown.
        reviewed_at: Unix time of the decision.
    """

    number: int
    source: ObjectSource
    x: float
    y: float
    bbox: tuple[int, int, int, int]
    outline: tuple[tuple[int, int], ...] | None
    score: float | None
    estimated_count: int
    decision: Decision | None = None
    reviewer: str | None = None
    reviewed_at: float | None = None

    @property
    def counted(self) -> bool:
        """Whether it counts after review: accepted, or kept by the model and not rejected."""
        return self.decision is Decision.ACCEPT or (self.decision is None and self.source is ObjectSource.KEPT)


@dataclass(frozen=True)
class SlideField:
    """One examined field of a slide.

    Attributes:
        name: the file name it was sent with (or ``field-<index>``).
        kept_objects: objects the model kept as bacilli.
        estimated_bacilli: bacilli in them, touching rods counted by size.
        width, height: the image's size.
        model_id, filter_id, mode: what read it.
        added_at: Unix time it joined the slide.
        job_id, job_field: the job (and its field) whose input holds the image; None when sent directly.
        reviewable: its objects are kept (:attr:`objects`), so they can be reviewed.
        objects: its kept objects, rejected candidates and added bacilli, with their review.
        in_domain: whether it looked like the model's training fields; None when not checked.
        domain_distance: its distance from them (robust SD); None when not checked.
        domain_reasons: why it is out of the domain.
        lab_id, lab_version: the lab profile it was read with (its operating point), or None.
        readable: whether its quality check passed; None when not checked (the model folder has no limits).
        quality_reasons: why it is unreadable.
        sha256, fingerprint: its bytes' digest and stain-density map (:mod:`service.engine.fingerprint`): the same
            field sent twice is counted once.
        scale_source: where the pixel size it was read at came from (a field's ``scale.source``), or None.
        scale_estimate: its own scale estimate ``(factor, objects)`` when it made one, and
        scale_empty_probe: whether it showed too few objects as uploaded and at ×2: what the slide's later fields
            read without a pixel size learn from it (:mod:`service.engine.scale_estimate`).
    """

    name: str
    kept_objects: int
    estimated_bacilli: int
    width: int
    height: int
    model_id: str
    filter_id: str | None
    added_at: float = 0.0
    mode: str = "exact"
    job_id: str | None = None
    job_field: int | None = None
    reviewable: bool = False
    objects: tuple[SlideObject, ...] = ()
    in_domain: bool | None = None
    domain_distance: float | None = None
    domain_reasons: tuple[str, ...] = ()
    lab_id: str | None = None
    lab_version: int | None = None
    readable: bool | None = None
    quality_reasons: tuple[str, ...] = ()
    sha256: str | None = None
    fingerprint: str | None = None
    scale_source: str | None = None
    scale_estimate: tuple[float, int] | None = None
    scale_empty_probe: bool = False

    @property
    def afb(self) -> int:
        """Bacilli counted for grading: the estimated bacilli with an object filter, else the objects."""
        return self.estimated_bacilli if self.filter_id else self.kept_objects

    def afb_of(self, item: SlideObject) -> int:
        """Bacilli an object counts for, as :attr:`afb` counts them: its estimate with a filter, else 1."""
        return item.estimated_count if self.filter_id and item.source is not ObjectSource.ADDED else 1

    @property
    def reviewed_afb(self) -> int:
        """Bacilli counted after review; equals :attr:`afb` before any decision (or without kept objects)."""
        if not self.reviewable:
            return self.afb
        return sum(self.afb_of(o) for o in self.objects if o.counted)

    @property
    def decisions(self) -> tuple[SlideObject, ...]:
        return tuple(o for o in self.objects if o.decision is not None)


@dataclass(frozen=True)
class ReviewEvent:
    """One entry of a slide's review history: every decision, cleared decision, addition, removal and
    signature, with who and when (a decision cleared later stays in the history)."""

    at: float
    reviewer: str | None
    action: str  # accept, reject, clear, add, remove, sign
    field: int | None
    number: int | None


@dataclass(frozen=True)
class Signature:
    """A reviewer's signature of the slide's reviewed grade, as it stood when signed."""

    signed_at: float
    signed_by: str
    grade: str | None
    report: str | None
    total_afb: int
    fields_examined: int


@dataclass(frozen=True)
class Slide:
    slide_id: str
    created_at: float
    fields: tuple[SlideField, ...]
    signatures: tuple[Signature, ...] = ()

    @property
    def signature(self) -> Signature | None:
        return self.signatures[-1] if self.signatures else None

    @property
    def model_ids(self) -> list[str]:
        """The models that read its fields, in the order they first appear."""
        return list(dict.fromkeys(f.model_id for f in self.fields))

    def scale_evidence(self, model_id: str) -> tuple[list[tuple[float, int]], int]:
        """What its fields read by ``model_id`` showed of its pixel size: their own estimates ``(factor, objects)``
        and how many probed in vain (:mod:`service.engine.scale_estimate`)."""
        fields = [f for f in self.fields if f.model_id == model_id]
        estimates = [f.scale_estimate for f in fields if f.scale_estimate is not None]
        return estimates, sum(f.scale_empty_probe for f in fields)

    def other_models(self, model_id: str) -> list[str]:
        """The models other than ``model_id`` that read some of its fields."""
        return [m for m in self.model_ids if m != model_id]
