"""The slide's decision after a person reviewed it: what the reviewer's decisions let the report sign.

The automatic decision (:mod:`service.engine.slide_decision`) rests on the model's evidence alone. A reviewer adds
their own: one bacillus a person confirmed (accepted or added) makes the slide ``positive`` (Zurac et al.: one
confirmed patch makes it positive; its grade is the reviewed grade); a person may sign a slide ``negative`` when
they rejected every object the model kept **and** the :data:`GALLERY_DEPTH` best-scoring candidates of the gallery
(:mod:`service.slides.gallery`), on at least the fields a negative grade needs, all read by one model. Otherwise the
automatic rule is applied again to the reviewed counts (a slide can stay ``positive`` on the model's evidence for
the objects nobody rejected), and what is missing for a person's negative is said.

Before any decision the reviewed decision is the automatic one.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.engine.grading import SlideGrade
from service.engine.slide_decision import GALLERY_DEPTH, SlideDecision
from service.slides.gallery import ranked_candidates
from service.slides.model import Decision, ObjectSource, Slide


@dataclass(frozen=True)
class ReviewedDecision:
    decision: str
    reasons: tuple[str, ...]


def reviewed_decision(
    slide: Slide, grade: SlideGrade | None, automatic: SlideDecision, on_reviewed_counts: SlideDecision
) -> ReviewedDecision:
    """The decision after review (module docstring); ``automatic`` is the decision on the model's counts,
    ``on_reviewed_counts`` the same rule on the reviewed ones."""
    objects = [(f, o) for f in slide.fields for o in f.objects]
    if not any(o.decision is not None for _, o in objects):
        return ReviewedDecision(automatic.decision, ("no object reviewed yet: the automatic decision",))
    confirmed = [(f, o) for f, o in objects if o.source is ObjectSource.ADDED or o.decision is Decision.ACCEPT]
    if confirmed:
        bacilli = sum(f.afb_of(o) for f, o in confirmed)
        who = sorted({o.reviewer for _, o in confirmed if o.reviewer})
        by = f" by {', '.join(who)}" if who else ""
        fields = len({id(f) for f, _ in confirmed})
        return ReviewedDecision(
            "positive", (f"{bacilli} bacill{'us' if bacilli == 1 else 'i'} confirmed{by} in {fields} field(s)",)
        )
    missing: list[str] = []
    unreviewable = sum(not f.reviewable for f in slide.fields)
    if unreviewable:
        missing.append(f"{unreviewable} field(s) have no kept objects a person could review")
    kept = sum(o.source is ObjectSource.KEPT and o.decision is None for _, o in objects)
    if kept:
        missing.append(f"{kept} object(s) the model kept are not yet reviewed")
    top = ranked_candidates(slide)[:GALLERY_DEPTH]
    open_top = sum(g.item.decision is None for g in top)
    if open_top:
        missing.append(
            f"{open_top} of the {len(top)} best-scoring candidates in the gallery are not yet reviewed (a negative "
            f"signed by a person needs them rejected)"
        )
    needed = grade.fields_needed if grade is not None else None
    if grade is None or (needed is not None and grade.fields_examined < needed):
        examined = grade.fields_examined if grade else 0
        missing.append(f"{examined} field(s) examined: a negative needs {needed or 100}")
    if len(slide.model_ids) > 1:
        missing.append("its fields were read by more than one model")
    if not missing:
        return ReviewedDecision(
            "negative",
            (
                f"no bacillus confirmed: every kept object and the {len(top)} best-scoring candidates of "
                f"{len(slide.fields)} fields were rejected by a reviewer",
            ),
        )
    if on_reviewed_counts.decision == "positive":
        return ReviewedDecision("positive", on_reviewed_counts.reasons)
    return ReviewedDecision("review", (*missing,))
