"""The slide decision: ``positive``, ``negative`` or ``review``, decided automatically only where evidence covers it.

In the engine, beside the grading it builds on, so that the service's slides (:mod:`service.slides.report`) and
training's slide simulation decide by the same rules from plain per-field values.

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
and its count is not near a grade boundary. Without a lab profile no slide is ``negative``: every slide that is not
clearly positive is ``review``, with the reasons. A model folder without a ``domain.json`` gives no evidence at all:
its slides are always ``review``.

**With a lab profile** (every field read with ``lab=`` the same profile, :mod:`service.engine.lab_profile`), the
lab's own confirmed-negative fields are the evidence, whatever the domain check says: the false bacilli per field at
the lab's operating point, at their 95% upper bound, ``λ``. Over ``N`` fields:

* ``positive``: the AFB exceed the 99.9% Poisson quantile of ``λ·N``, the grade is not scanty and not near a boundary;
* ``negative``: no object was kept at all in at least the fields a negative grade needs (100), and the lab's
  negatives make that the expected outcome (``λ·N ≤ 3``, i.e. zero lies within their 95% range). A count above
  zero but within what the lab's negatives produce could hide a scanty slide (1–9 AFB in 100 fields are positive
  on the WHO/IUATLD scale), so it is ``review``: the gallery ranks its candidates for a person;
* otherwise ``review``.

A slide read with a profile that has been made again since (another version) is ``review``: a profile never changes
a stored slide's decision silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.engine.domain import DomainModel, FalseRate, poisson_quantile
from service.engine.grading import Grade, SlideGrade
from service.engine.lab_profile import LabProfile

UNMEASURED_LAB_FACTOR = 10.0
POSITIVE_CONFIDENCE = 0.999
GALLERY_DEPTH = 50  # candidates a reviewer rejects, best score first, to sign a negative (issue 25: ≤ 50 per slide)
ZERO_EXPECTED = 3.0  # λ·N at which no false bacillus at all is still within the 95% range (e^-3 ≈ 0.05)


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
class FieldEvidence:
    """What the decision needs of one of a slide's fields: the model that read it, its domain check (None: not
    checked), and the lab profile it was read with."""

    model_id: str
    in_domain: bool | None = None
    lab_id: str | None = None
    lab_version: int | None = None


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
        lab_profile: ``<lab_id> v<version>`` when a lab profile decided it.
    """

    decision: str
    reasons: tuple[str, ...]
    fields_in_domain: int
    fields_out_of_domain: int
    fields_unchecked: int
    false_bacilli_ceiling: float | None
    positive_above: int | None
    rates: tuple[tuple[FalseRate, float], ...]
    lab_profile: str | None = None


def _boundary(reason: str) -> bool:
    return "of the boundary" in reason


def _positive(grade: SlideGrade) -> bool:
    """Whether a count beyond the false bacilli may be signed: not scanty, not near a grade boundary."""
    return grade.grade is not Grade.SCANTY and not any(_boundary(r) for r in grade.reasons)


def decide_with_lab(fields: int, grade: SlideGrade, profile: LabProfile, counts: tuple[int, int, int]) -> SlideDecision:
    """The decision on a lab's own negatives (module docstring) for a slide of ``fields`` fields."""
    total = grade.total_afb
    rate = FalseRate(
        f"lab {profile.lab_id} v{profile.version}: {profile.negatives.source}, at its operating point "
        f"{profile.object_threshold:g}",
        profile.negatives.fields,
        profile.negatives.false_at(profile.object_threshold),
        round(profile.false_rate_upper_95, 4),
    )
    ceiling = profile.false_rate_upper_95 * fields
    above = poisson_quantile(POSITIVE_CONFIDENCE, ceiling)
    tag = f"{profile.lab_id} v{profile.version}"
    common = (*counts, round(ceiling, 3), above, ((rate, 1.0),), tag)
    if total > above and _positive(grade):
        why = (
            f"{total} AFB in {fields} fields: more than lab {profile.lab_id}'s negative fields produce (up to {above})"
        )
        return SlideDecision("positive", (why,), *common)
    enough = grade.fields_needed is None or fields >= grade.fields_needed
    if total == 0 and ceiling <= ZERO_EXPECTED and enough:
        why = (
            f"no object kept in {fields} fields, and lab {profile.lab_id}'s negative fields make that the expected "
            f"outcome (up to {ceiling:.3g} false bacilli expected at its operating point)"
        )
        return SlideDecision("negative", (why,), *common)
    if total > above:
        reasons = [f"{total} AFB exceed what lab {profile.lab_id}'s negatives produce, but the grade needs a person"]
    elif total == 0 and not enough:
        reasons = [f"no object kept, but a negative slide needs {grade.fields_needed} fields; {fields} were examined"]
    elif total == 0:
        reasons = [
            f"no object kept, but lab {profile.lab_id}'s negatives would leave up to {ceiling:.3g} false bacilli in "
            f"{fields} fields: too few fields, or too many false bacilli at its operating point, to sign negative"
        ]
    else:
        reasons = [
            f"{total} AFB in {fields} fields lie within what lab {profile.lab_id}'s negative fields produce (up to "
            f"{above} at {POSITIVE_CONFIDENCE:.1%}): a person must look at them (the gallery ranks them)"
        ]
    return SlideDecision("review", tuple(reasons), *common)


def decide(
    fields: Sequence[FieldEvidence],
    grade: SlideGrade | None,
    evidence: Mapping[str, ModelEvidence | None],
    labs: Mapping[str, LabProfile] | None = None,
) -> SlideDecision:
    """The decision for a slide of ``fields`` with its automatic ``grade`` (module docstring); ``evidence`` by model
    id, ``labs`` the served profiles by lab id."""
    in_domain = sum(f.in_domain is True for f in fields)
    out = sum(f.in_domain is False for f in fields)
    unchecked = len(fields) - in_domain - out
    counts = (in_domain, out, unchecked)
    if grade is None or not fields:
        return SlideDecision("review", ("no field examined yet",), *counts, None, None, ())
    read_with = {(f.lab_id, f.lab_version) for f in fields}
    if any(lab for lab, _ in read_with):
        if len(read_with) > 1:
            named = ", ".join(sorted(f"{lab or 'no lab'} v{v}" if lab else "no lab" for lab, v in read_with))
            reason = f"its fields were read with different lab profiles ({named}): their counts are not comparable"
            return SlideDecision("review", (reason,), *counts, None, None, ())
        ((lab_id, version),) = read_with
        profile = (labs or {}).get(lab_id or "")
        if profile is None or profile.version != version:
            now = "no longer served" if profile is None else f"now at version {profile.version}"
            reason = (
                f"its fields were read with lab profile {lab_id} v{version}, {now}: read them again to decide with it"
            )
            return SlideDecision("review", (reason,), *counts, None, None, ())
        return decide_with_lab(len(fields), grade, profile, counts)
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
    if total > above and _positive(grade):
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
