"""The slide decision: ``positive``, ``negative`` or ``review``, decided automatically only where evidence covers it.

A grade is proposed for every slide (:mod:`service.engine.grading`); whether the service may *sign* the
presence of bacilli depends on what is known about the false bacilli its model makes on such fields:

* **in the model's domain** (the field reads like its training fields: :mod:`service.engine.domain`): the false
  bacilli per field measured on the model's own validation fields, at their Poisson 95% upper bound;
* **out of its domain** (another microscope, camera or stain routine), or on a field the folder cannot check: the
  false bacilli per field measured on another lab's negative fields (train and validation slides), at their 95%
  upper bound, times :data:`UNMEASURED_LAB_FACTOR`: a lab never measured may well be an order of magnitude worse
  than the one that was (on the same UFAM negative fields, the developers' multi-lab model made 11.75 false bacilli
  per field and the shipped one 1.0; ``docs/results.md`` section 8).

Those rates, summed over the slide's fields, give the false bacilli the slide could hold with no bacillus at all;
the slide is ``positive`` only when its AFB exceed the 99.9% Poisson quantile of that sum, its grade is not scanty,
and its count is not near a grade boundary. A ``negative`` decision needs a lab profile (what the lab's own
confirmed-negative fields produce), which the service does not have yet: without one, every slide that is not
clearly positive is ``review``, with the reasons. A model folder without a ``domain.json`` gives no evidence at all:
its slides are always ``review``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.engine.domain import DomainModel, FalseRate, poisson_quantile
from service.engine.grading import Grade, SlideGrade
from service.slides.model import Slide

UNMEASURED_LAB_FACTOR = 10.0
POSITIVE_CONFIDENCE = 0.999


@dataclass(frozen=True)
class ModelEvidence:
    """What a model folder measured of its false bacilli (its ``domain.json``)."""

    in_domain: FalseRate | None
    foreign: FalseRate | None

    @classmethod
    def of(cls, domain: DomainModel | None) -> ModelEvidence | None:
        if domain is None:
            return None
        return cls(domain.in_domain_false, domain.foreign_false)


@dataclass(frozen=True)
class SlideDecision:
    """The decision, why, and the figures it rests on.

    Attributes:
        decision: ``positive``, ``negative`` or ``review``.
        reasons: why, in words.
        fields_in_domain, fields_out_of_domain, fields_unchecked: the slide's fields by their domain check.
        false_bacilli_ceiling: the false bacilli the slide's fields could hold with no bacillus (the sum of their
            rates); None without evidence.
        positive_above: the AFB above which the slide is beyond what false bacilli produce; None without evidence.
        rates: the measured rates used, each with its factor.
    """

    decision: str
    reasons: tuple[str, ...]
    fields_in_domain: int
    fields_out_of_domain: int
    fields_unchecked: int
    false_bacilli_ceiling: float | None
    positive_above: int | None
    rates: tuple[tuple[FalseRate, float], ...]


def _boundary(reason: str) -> bool:
    return "of the boundary" in reason


def decide(slide: Slide, grade: SlideGrade | None, evidence: Mapping[str, ModelEvidence | None]) -> SlideDecision:
    """The decision for ``slide`` with its automatic ``grade`` (module docstring); ``evidence`` by model id."""
    fields = slide.fields
    in_domain = sum(f.in_domain is True for f in fields)
    out = sum(f.in_domain is False for f in fields)
    unchecked = len(fields) - in_domain - out
    counts = (in_domain, out, unchecked)
    if grade is None or not fields:
        return SlideDecision("review", ("no field examined yet",), *counts, None, None, ())
    ceiling, used, missing = 0.0, {}, []
    for f in fields:
        known = evidence.get(f.model_id)
        rate, factor = (None, 1.0)
        if known is not None:
            rate, factor = (known.in_domain, 1.0) if f.in_domain else (known.foreign, UNMEASURED_LAB_FACTOR)
        if rate is None:
            missing.append(f.model_id)
            continue
        ceiling += rate.upper_95 * factor
        used[(rate.source, factor)] = (rate, factor)
    reasons: list[str] = []
    if out:
        reasons.append(
            f"{out} of {len(fields)} fields do not look like the model's training fields (another microscope, "
            "camera or stain routine?): its false bacilli there were never measured"
        )
    if missing:
        models = ", ".join(sorted(set(missing)))
        reasons.append(
            f"no measured false-bacilli rate for model {models} on such fields (its folder has no domain.json: "
            "python -m training domain writes it)"
        )
        return SlideDecision("review", tuple(reasons), *counts, None, None, tuple(used.values()))
    above = poisson_quantile(POSITIVE_CONFIDENCE, ceiling)
    total = grade.total_afb
    if total > above and grade.grade is not Grade.SCANTY and not any(_boundary(r) for r in grade.reasons):
        return SlideDecision(
            "positive",
            (
                f"{total} AFB in {len(fields)} fields: more than false bacilli can produce here (at most {above} at "
                f"{POSITIVE_CONFIDENCE:.1%}, from up to {ceiling:.3g} expected)",
                *reasons,
            ),
            *counts,
            round(ceiling, 3),
            above,
            tuple(used.values()),
        )
    if total > above:
        reasons.append(f"{total} AFB exceed what false bacilli produce, but the grade needs a person's reading")
    else:
        reasons.append(
            f"{total} AFB in {len(fields)} fields lie within what false bacilli alone can produce here (up to {above} "
            f"at {POSITIVE_CONFIDENCE:.1%})"
        )
    reasons.append("no lab profile: a negative slide is never signed automatically without the lab's own negatives")
    return SlideDecision("review", tuple(reasons), *counts, round(ceiling, 3), above, tuple(used.values()))
