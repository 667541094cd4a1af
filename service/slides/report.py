"""A slide's report: its fields' counts and its WHO/IUATLD grade (:mod:`service.engine.grading`), as clients read
it.

One schema for ``GET /v1/slides/{id}``, a finished job's ``slide`` and the batch command's ``slide.json``. Both
figures are kept: the automatic ones (what the model counted) at the top level, and under ``review`` the ones
after a technician accepted, rejected or added objects (equal to the automatic ones until somebody reviews).

Only readable fields count (:class:`Counted`): a field whose quality check failed (:mod:`service.engine.quality`)
is listed with its reasons but is not a field examined, so a negative or scanty grade needs 100 readable fields; a
field that repeats an earlier one (the same bytes, or the same stain map: :mod:`service.engine.fingerprint`) is
counted once; and a slide whose fields are mostly unreadable is ``review``, saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from service.engine.fingerprint import duplicates
from service.engine.grading import SlideGrade, grade_slide
from service.engine.lab_profile import LabProfile
from service.engine.slide_decision import FieldEvidence, ModelEvidence, SlideDecision, decide
from service.slides.model import Decision, ObjectSource, Slide, SlideField
from service.slides.review_decision import ReviewedDecision, reviewed_decision

D = TypeVar("D", SlideDecision, ReviewedDecision)


class SlideFieldOut(BaseModel):
    index: int = Field(description="0-based, in the order the fields were added")
    name: str = Field(description="the uploaded file's name, or field-<index>")
    objects: int = Field(description="objects kept as bacilli")
    afb: int = Field(description="bacilli counted for grading: estimated_bacilli with an object filter, else objects")
    estimated_bacilli: int
    width: int
    height: int
    model_id: str
    filter_id: str | None
    mode: str = Field(description="exact or fast: how the field was read")
    added_at: float = Field(description="Unix time")
    reviewable: bool = Field(
        description="its objects are kept, so they can be reviewed (fields read by a job or by POST /v1/slides)"
    )
    reviewed_afb: int = Field(description="bacilli counted after review (equal to afb before any decision)")
    objects_reviewed: int = Field(description="objects accepted, rejected or added by a reviewer")
    image_url: str | None = Field(description="the field's image, while the job that read it is kept")
    job_id: str | None = Field(description="the job that read it (null: sent to /v1/slides directly)")
    in_domain: bool | None = Field(
        None, description="whether it looked like the model's training fields; null when it was not checked"
    )
    lab_id: str | None = Field(None, description="the lab profile it was read with (lab=), or null")
    lab_version: int | None = None
    domain_distance: float | None = Field(None, description="its distance from them, in robust SD")
    domain_reasons: list[str] = Field(default_factory=list, description="why it is out of the model's domain")
    readable: bool | None = Field(
        None, description="whether its quality check passed (focus, exposure, stain, a smear); null: not checked"
    )
    quality_reasons: list[str] = Field(default_factory=list, description="why it is unreadable")
    duplicate_of: int | None = Field(
        None, description="the index of the earlier field it repeats (the same image, or nearly): counted once"
    )
    counted: bool = Field(
        True, description="whether it counts towards the fields examined and the grade: readable and not a repeat"
    )
    scale_source: str | None = Field(
        None,
        description="where the pixel size it was read at came from (as a field's scale.source: request, lab, "
        "metadata, estimated, slide, assumed); null: not recorded",
    )


class SignatureOut(BaseModel):
    signed_by: str
    signed_at: float = Field(description="Unix time")
    grade: str | None = Field(description="the reviewed grade when it was signed")
    report: str | None
    total_afb: int
    fields_examined: int
    current: bool = Field(description="false when the reviewed figures changed after the signature")


class SlideReviewOut(BaseModel):
    """The slide's figures after review; until a decision is made they equal the automatic ones."""

    objects_reviewed: int
    objects_accepted: int = Field(description="rejected candidates (or kept objects) a reviewer accepted")
    objects_rejected: int = Field(description="kept objects (or candidates) a reviewer rejected")
    objects_added: int = Field(description="bacilli a reviewer marked where the model found none")
    fields_reviewed: int = Field(description="fields with at least one decision")
    total_afb: int
    afb_per_field: float | None
    afb_per_100_fields: float | None
    grade: str | None
    report: str | None
    needs_review: bool
    reasons: list[str]
    decision: str = Field(
        description="the decision after review: positive once a person confirmed a bacillus; negative when a person "
        "rejected every kept object and the gallery's best-scoring candidates on enough fields; else the automatic "
        "rule on the reviewed counts, or review (decision_reasons says what is missing); the automatic decision "
        "before any review"
    )
    decision_reasons: list[str]
    reviewed_by: list[str] = Field(description="users who made decisions (named by their API key or by the client)")
    last_reviewed_at: float | None
    signature: SignatureOut | None = Field(description="the latest signature, if any")


class FalseRateOut(BaseModel):
    source: str = Field(description="the fields the rate was measured on")
    fields: int
    false_bacilli: int
    upper_95: float = Field(description="one-sided 95% Poisson upper bound on false bacilli per field")
    factor: float = Field(description="the factor it is taken with (an unmeasured lab's margin; 1 in the domain)")


class DecisionEvidenceOut(BaseModel):
    fields_in_domain: int
    fields_out_of_domain: int
    fields_unchecked: int = Field(description="fields its model's folder could not check (no domain.json)")
    false_bacilli_ceiling: float | None = Field(
        description="false bacilli the slide's fields could hold with no bacillus at all (the sum of their rates)"
    )
    positive_above: int | None = Field(
        description="AFB above which the slide is beyond what false bacilli produce (99.9% Poisson quantile)"
    )
    rates: list[FalseRateOut]
    lab_profile: str | None = Field(None, description="the lab profile the decision used, '<lab_id> v<version>'")


class SlideReport(BaseModel):
    slide_id: str
    created_at: float = Field(description="Unix time")
    models: list[str] = Field(description="the models that read its fields (more than one needs review)")
    modes: list[str] = Field(description="the modes its fields were read in (exact, fast)")
    fields: list[SlideFieldOut]
    fields_examined: int
    total_afb: int
    afb_per_field: float | None
    afb_per_100_fields: float | None
    grade: str | None = Field(description="WHO/IUATLD: negative, scanty, 1+, 2+ or 3+; null before any field")
    report: str | None = Field(description="as a lab writes it, e.g. 'scanty (7 AFB in 100 fields)'")
    fields_needed: int | None = Field(description="fields the grade's definition asks for")
    needs_review: bool
    reasons: list[str]
    decision: str = Field(
        description="positive: more AFB than false bacilli can produce here; negative: within what the lab's own "
        "negative fields produce (needs a lab profile); review: a person must read it (decision_reasons says why)"
    )
    decision_reasons: list[str]
    decision_evidence: DecisionEvidenceOut
    review: SlideReviewOut


def _review(
    slide: Slide, grade: SlideGrade | None, more_reasons: tuple[str, ...], decided: ReviewedDecision
) -> SlideReviewOut:
    decisions = [o for f in slide.fields for o in f.decisions]
    unreviewable = sum(not f.reviewable for f in slide.fields)
    reasons = [
        *(grade.reasons if grade else ["no field examined yet"]),
        *(
            (
                f"{unreviewable} field(s) have no kept objects to review (read before review existed, or by the batch "
                "command)",
            )
            if unreviewable
            else ()
        ),
        *more_reasons,
    ]
    signature = slide.signature
    return SlideReviewOut(
        objects_reviewed=len(decisions),
        objects_accepted=sum(o.decision is Decision.ACCEPT and o.source is not ObjectSource.ADDED for o in decisions),
        objects_rejected=sum(o.decision is Decision.REJECT for o in decisions),
        objects_added=sum(o.source is ObjectSource.ADDED for o in decisions),
        fields_reviewed=sum(bool(f.decisions) for f in slide.fields),
        total_afb=grade.total_afb if grade else 0,
        afb_per_field=grade.afb_per_field if grade else None,
        afb_per_100_fields=grade.afb_per_100_fields if grade else None,
        grade=grade.grade.value if grade else None,
        report=grade.report if grade else None,
        needs_review=bool(reasons),
        reasons=reasons,
        decision=decided.decision,
        decision_reasons=list(decided.reasons),
        reviewed_by=sorted({o.reviewer for o in decisions if o.reviewer}),
        last_reviewed_at=max((o.reviewed_at for o in decisions if o.reviewed_at), default=None),
        signature=(
            SignatureOut(
                signed_by=signature.signed_by,
                signed_at=signature.signed_at,
                grade=signature.grade,
                report=signature.report,
                total_afb=signature.total_afb,
                fields_examined=signature.fields_examined,
                current=(signature.grade, signature.total_afb, signature.fields_examined)
                == (grade.grade.value if grade else None, grade.total_afb if grade else 0, len(slide.fields)),
            )
            if signature
            else None
        ),
    )


def _field_out(slide_id: str, index: int, f: SlideField, duplicate_of: int | None) -> SlideFieldOut:
    return SlideFieldOut(
        index=index,
        name=f.name,
        objects=f.kept_objects,
        afb=f.afb,
        estimated_bacilli=f.estimated_bacilli,
        width=f.width,
        height=f.height,
        model_id=f.model_id,
        filter_id=f.filter_id,
        mode=f.mode,
        added_at=f.added_at,
        reviewable=f.reviewable,
        reviewed_afb=f.reviewed_afb,
        objects_reviewed=len(f.decisions),
        image_url=f"/v1/slides/{slide_id}/fields/{index}/image" if f.job_id else None,
        job_id=f.job_id,
        in_domain=f.in_domain,
        domain_distance=f.domain_distance,
        domain_reasons=list(f.domain_reasons),
        lab_id=f.lab_id,
        lab_version=f.lab_version,
        readable=f.readable,
        quality_reasons=list(f.quality_reasons),
        duplicate_of=duplicate_of,
        counted=duplicate_of is None and f.readable is not False,
        scale_source=f.scale_source,
    )


@dataclass(frozen=True)
class Counted:
    """Which of a slide's fields count: readable and not a repeat of an earlier field (module docstring)."""

    slide: Slide  # the slide with its counted fields only
    repeats: list[int | None]  # per field, the earlier field it repeats
    reasons: tuple[str, ...]  # what a person should know about the fields left out
    mostly_unreadable: str | None  # the reason a slide is review for its unreadable fields

    @classmethod
    def of(cls, slide: Slide) -> Counted:
        repeats = duplicates([(f.sha256, f.fingerprint) for f in slide.fields])
        unreadable = [i for i, f in enumerate(slide.fields) if repeats[i] is None and f.readable is False]
        counted = tuple(f for i, f in enumerate(slide.fields) if repeats[i] is None and f.readable is not False)
        reasons: list[str] = []
        if unreadable:
            listed = "; ".join(
                f"field {i} ({slide.fields[i].quality_reasons[0] if slide.fields[i].quality_reasons else 'unreadable'})"
                for i in unreadable[:5]
            )
            more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
            reasons.append(f"{len(unreadable)} unreadable field(s) not counted as examined: {listed}{more}")
        repeated = [(i, j) for i, j in enumerate(repeats) if j is not None]
        if repeated:
            pairs = ", ".join(f"field {i} = field {j}" for i, j in repeated[:5])
            reasons.append(f"{len(repeated)} field(s) repeat an earlier one and are counted once ({pairs})")
        distinct = len(slide.fields) - len(repeated)
        mostly = None
        if distinct and len(unreadable) * 2 > distinct:
            mostly = (
                f"most of its fields are unreadable ({len(unreadable)} of {distinct}): re-photograph them "
                "(the reasons are listed per field)"
            )
        return cls(replace(slide, fields=counted), repeats, tuple(reasons), mostly)


def _evidence_of(slide: Slide) -> list[FieldEvidence]:
    return [FieldEvidence(f.model_id, f.in_domain, f.lab_id, f.lab_version) for f in slide.fields]


def _decision_fields(decided: SlideDecision) -> dict[str, Any]:
    return {
        "decision": decided.decision,
        "decision_reasons": list(decided.reasons),
        "decision_evidence": DecisionEvidenceOut(
            fields_in_domain=decided.fields_in_domain,
            fields_out_of_domain=decided.fields_out_of_domain,
            fields_unchecked=decided.fields_unchecked,
            false_bacilli_ceiling=decided.false_bacilli_ceiling,
            positive_above=decided.positive_above,
            rates=[FalseRateOut(**asdict(rate), factor=factor) for rate, factor in decided.rates],
            lab_profile=decided.lab_profile,
        ),
    }


def slide_report(
    slide: Slide,
    more_reasons: tuple[str, ...] = (),
    evidence: Mapping[str, ModelEvidence | None] | None = None,
    labs: Mapping[str, LabProfile] | None = None,
) -> SlideReport:
    """The report of a slide, graded from its fields' AFB and decided (:mod:`service.engine.slide_decision`) with the
    ``evidence`` of the models that read it (by model id; none: every slide is ``review``) and the served lab
    profiles (by lab id); ``more_reasons`` (e.g.
    fields that could not be read) are added to the review reasons and make it need review."""
    evidence = evidence or {}
    counted = Counted.of(slide)
    fields = [_field_out(slide.slide_id, i, f, counted.repeats[i]) for i, f in enumerate(slide.fields)]
    more_reasons = (*more_reasons, *counted.reasons)
    everything, slide = slide, counted.slide
    if not slide.fields:
        automatic = _mostly_unreadable(decide(_evidence_of(slide), None, evidence, labs), counted)
        return SlideReport(
            slide_id=slide.slide_id,
            created_at=slide.created_at,
            models=everything.model_ids,
            modes=list(dict.fromkeys(f.mode for f in everything.fields)),
            fields=fields,
            fields_examined=0,
            total_afb=0,
            afb_per_field=None,
            afb_per_100_fields=None,
            grade=None,
            report=None,
            fields_needed=None,
            needs_review=True,
            reasons=["no readable field examined yet" if everything.fields else "no field examined yet", *more_reasons],
            **_decision_fields(automatic),
            review=_review(everything, None, more_reasons, reviewed_decision(slide, None, automatic, automatic)),
        )
    grade = grade_slide([f.afb for f in slide.fields])
    models = everything.model_ids  # every model that read a field, repeats and unreadable ones too
    mixed = (
        (f"its fields were read by {len(models)} models ({', '.join(models)}): their counts are not comparable",)
        if len(models) > 1
        else ()
    )
    reasons = [*grade.reasons, *mixed, *more_reasons]
    automatic = _mostly_unreadable(decide(_evidence_of(slide), grade, evidence, labs), counted)
    reviewed = grade_slide([f.reviewed_afb for f in slide.fields])
    on_reviewed = _mostly_unreadable(decide(_evidence_of(slide), reviewed, evidence, labs), counted)
    return SlideReport(
        slide_id=slide.slide_id,
        created_at=slide.created_at,
        models=models,
        modes=list(dict.fromkeys(f.mode for f in everything.fields)),
        fields=fields,
        fields_examined=grade.fields_examined,
        total_afb=grade.total_afb,
        afb_per_field=grade.afb_per_field,
        afb_per_100_fields=grade.afb_per_100_fields,
        grade=grade.grade.value,
        report=grade.report,
        fields_needed=grade.fields_needed,
        needs_review=bool(reasons),
        reasons=reasons,
        **_decision_fields(automatic),
        review=_review(
            everything,
            reviewed,
            (*mixed, *more_reasons),
            _mostly_unreadable(reviewed_decision(slide, reviewed, automatic, on_reviewed), counted),
        ),
    )


def _mostly_unreadable(decided: D, counted: Counted) -> D:
    """``decided``, made ``review`` when most of the slide's fields are unreadable."""
    if counted.mostly_unreadable is None:
        return decided
    return replace(decided, decision="review", reasons=(counted.mostly_unreadable, *decided.reasons))
