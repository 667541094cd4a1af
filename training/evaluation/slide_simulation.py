"""Figures at the slide level (``python -m training simulate-slides``): what the service decides on whole slides.

Each field is read once through the model folder (fast mode, every candidate scored, the domain check); slides are
then drawn from them, graded and decided by the service's own rules (:mod:`service.engine.grading`,
:mod:`service.engine.slide_decision`):

* **negative slides**: 100 fields drawn with replacement from a lab's negative fields (UFAM DDS1, the slides of
  ``--subset``); the share decided ``positive`` (must be 0), ``negative`` and ``review``, and the review workload:
  the gallery items a person must reject to sign one negative (its kept objects, and at least the gallery's
  GALLERY_DEPTH best candidates: :mod:`service.slides.review_decision`'s rule);
* **positive slides**: the same, plus ``k`` of the lab's annotated bacilli drawn from all of them (each the candidate
  found at its positive patch's centre; a bacillus the model has no candidate for cannot be shown by any gallery);
  the share of slides whose first true bacillus is in the top 5 of the gallery (all candidates, best score first),
  and the decisions;
* **the model's own lab**: the test fields of ZNSM-iDB MS-2 as one slide and each as a slide of its own (decisions),
  and the rank of the first true bacillus in each field's gallery (a candidate whose centre lies in an expert box);

without a lab profile, and with one (``--lab``: a profile made from the lab's other slides, never from
``--subset``'s).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.grading import grade_slide
from service.engine.lab_profile import LabProfile
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import open_folder
from service.engine.segmenter import Segmenter
from service.engine.slide_decision import GALLERY_DEPTH, FieldEvidence, ModelEvidence, decide
from training.data.annotations import Box
from training.data.dataset import discover_fields, read_annotation, read_rgb
from training.data.split import DatasetSplit
from training.data.ufam import read_positives, read_ufam
from training.evaluation.lab_profiles import candidate_scores, centre_score

log = logging.getLogger(__name__)
DECISIONS = ("positive", "negative", "review")


@dataclass(frozen=True)
class ReadField:
    """A field read once: every candidate's score, the bacilli it stands for (touching rods counted by size), and
    whether each is a true bacillus (when known)."""

    name: str
    scores: tuple[float, ...]
    counts: tuple[int, ...]
    true: tuple[bool, ...]
    in_domain: bool | None


def _read(
    segmenter: Segmenter,
    rgb: npt.NDArray[np.uint8],
    name: str,
    boxes: tuple[Box, ...] = (),
    pixel_size_um: float | None = None,
) -> ReadField:
    scores, objects = candidate_scores(segmenter, rgb, pixel_size_um)
    bacillus_boxes = [b for b in boxes if b.label.is_bacillus]
    true = tuple(
        any(b.x <= o.centroid[0] < b.x + b.width and b.y <= o.centroid[1] < b.y + b.height for b in bacillus_boxes)
        for o in objects
    )
    domain = segmenter.domain.check(rgb) if segmenter.domain is not None else None
    counts = tuple(o.estimated_count for o in objects)
    return ReadField(name, tuple(scores), counts, true, domain.in_domain if domain else None)


@dataclass(frozen=True)
class SimulatedField:
    """A read field on a simulated slide: its AFB at a threshold (estimated bacilli, as the service counts them)
    and what the decision needs of it."""

    afb: int
    evidence: FieldEvidence


def _slide_field(
    read: ReadField, threshold: float, model_id: str, lab: LabProfile | None, extra: int = 0
) -> SimulatedField:
    afb = sum(c for s, c in zip(read.scores, read.counts, strict=True) if s >= threshold) + extra
    lab_id, version = (lab.lab_id, lab.version) if lab else (None, None)
    return SimulatedField(afb, FieldEvidence(model_id, read.in_domain, lab_id, version))


def _decide(
    fields: list[SimulatedField], evidence: dict[str, ModelEvidence | None], labs: dict[str, LabProfile]
) -> str:
    """The service's decision (:func:`service.engine.slide_decision.decide`) on the service's grade."""
    grade = grade_slide([f.afb for f in fields])
    return decide([f.evidence for f in fields], grade, evidence, labs).decision


def _share(decisions: list[str]) -> dict[str, float]:
    return {d: round(decisions.count(d) / len(decisions), 4) for d in DECISIONS} if decisions else {}


def simulate(
    model_dir: Path,
    ufam: Path,
    ufam_split: Path,
    subset: str,
    znsm: Path,
    znsm_split: Path,
    lab: Path | None,
    slides: int = 200,
    fields_per_slide: int = 100,
    seed: int = 0,
    bacilli: int | None = None,
    own_fields: int | None = None,
) -> dict[str, Any]:
    """The slide-level figures (module docstring), as a JSON-ready record. For a quicker, rougher run: ``bacilli``
    reads a seeded sample of that many of the lab's annotated bacilli and ``own_fields`` the first that many of the
    model's own lab's test fields (None: all of them)."""
    folder = open_folder(model_dir)
    segmenter = load_segmenter(SegmenterConfig.of_folder(folder, domain=True))
    own_threshold = segmenter.object_threshold if segmenter.object_threshold is not None else 0.0
    evidence = {folder.model_id: ModelEvidence.of(segmenter.domain)}
    part = read_ufam(ufam).of_slides(list(getattr(DatasetSplit.load(ufam_split), subset)))
    images, _ = read_positives(part, None)
    positives = list(part.positives)
    if bacilli is not None and bacilli < len(positives):
        chosen = np.random.default_rng(seed).choice(len(positives), bacilli, replace=False)
        positives = [positives[i] for i in sorted(chosen)]

    def reading(pixel_size_um: float | None) -> tuple[list[ReadField], list[float | None]]:
        """The lab's fields and bacilli read as the service reads them (at the model's scale with a pixel size)."""
        fields = [
            _read(segmenter, read_rgb(n.path), n.field_id, pixel_size_um=pixel_size_um)
            for n in tqdm(part.negatives, desc="negative fields", unit="field", leave=False)
        ]
        truths = [  # None: the model has no candidate at that bacillus, so no gallery can show it
            centre_score(segmenter, images[p.patch_id], pixel_size_um)
            for p in tqdm(positives, desc="positive patches", unit="patch", leave=False)
        ]
        return fields, truths

    negatives, true_scores = reading(None)
    profile = LabProfile.load(lab) if lab is not None else None
    at_lab_scale = reading(profile.pixel_size_um) if profile is not None and profile.pixel_size_um else None
    record: dict[str, Any] = {
        "model_id": folder.model_id,
        "lab": f"{ufam.name} {subset} slides {' '.join(part.slides)}",
        "negative_fields": len(negatives),
        "annotated_bacilli": len(positives),
        "bacilli_with_a_candidate": sum(s is not None for s in true_scores),
        "slides": slides,
        "fields_per_slide": fields_per_slide,
        "seed": seed,
        "by_profile": {},
    }
    configurations: list[tuple[str, float, LabProfile | None]] = [("no lab profile", own_threshold, None)]
    if profile is not None:
        configurations.append((f"lab profile {profile.lab_id} v{profile.version}", profile.object_threshold, profile))
    for name, threshold, used in configurations:
        if used is not None and at_lab_scale is not None:
            negatives, true_scores = at_lab_scale
            record.setdefault("at_lab_scale", {})[name] = {
                "pixel_size_um": used.pixel_size_um,
                "bacilli_with_a_candidate": sum(s is not None for s in true_scores),
            }
        labs = {used.lab_id: used} if used else {}
        rng = np.random.default_rng(seed)
        negative_decisions, workload = [], []
        positive: dict[str, Any] = {}
        for _ in range(slides):
            drawn = [negatives[i] for i in rng.integers(0, len(negatives), fields_per_slide)]
            fields = [_slide_field(f, threshold, folder.model_id, used) for f in drawn]
            negative_decisions.append(_decide(fields, evidence, labs))
            # a person signs a negative having rejected every kept object and the gallery's best candidates
            kept = sum(sum(s >= threshold for s in f.scores) for f in drawn)
            workload.append(max(kept, min(GALLERY_DEPTH, sum(len(f.scores) for f in drawn))))
        for k in (1, 5, 20):
            ranks, decisions = [], []
            for _ in range(slides):
                drawn = [negatives[i] for i in rng.integers(0, len(negatives), fields_per_slide)]
                drawn_truths = [true_scores[i] for i in rng.integers(0, len(true_scores), k)] if true_scores else []
                truths = [t for t in drawn_truths if t is not None]
                false = [s for f in drawn for s in f.scores]
                best = max(truths, default=-math.inf)
                ranks.append(1 + sum(s > best for s in false) if truths else math.inf)
                fields = [_slide_field(f, threshold, folder.model_id, used) for f in drawn]
                kept_true = sum(s >= threshold for s in truths)
                fields[0] = _slide_field(drawn[0], threshold, folder.model_id, used, extra=kept_true)
                decisions.append(_decide(fields, evidence, labs))
            finite = [r for r in ranks if math.isfinite(r)]
            positive[f"{k} bacilli"] = {
                "first_true_in_top_5": round(sum(r <= 5 for r in ranks) / len(ranks), 4),
                "first_true_rank_median": float(np.median(finite)) if finite else None,
                "decisions": _share(decisions),
            }
        record["by_profile"][name] = {
            "object_threshold": threshold,
            "negative_slides": _share(negative_decisions),
            "workload_to_sign_negative": {
                "mean": round(float(np.mean(workload)), 2),
                "median": float(np.median(workload)),
                "max": int(max(workload)),
            },
            "positive_slides": positive,
        }
    record["own_lab"] = own_lab(segmenter, znsm, znsm_split, own_threshold, evidence, folder.model_id, own_fields)
    return record


def own_lab(
    segmenter: Segmenter,
    data: Path,
    split_path: Path,
    threshold: float,
    evidence: dict[str, ModelEvidence | None],
    model_id: str,
    limit: int | None = None,
) -> dict[str, Any]:
    """The model's own lab's test fields (the first ``limit``): decisions as one slide and one by one; the first
    true bacillus's rank."""
    fields = {f.field_id: f for f in discover_fields(data)}
    ids = list(DatasetSplit.load(split_path).test)[:limit]
    reads = [
        _read(segmenter, read_rgb(fields[i].image), i, read_annotation(fields[i]).boxes)
        for i in tqdm(ids, desc="own lab's test fields", unit="field", leave=False)
    ]
    slide_fields = [_slide_field(r, threshold, model_id, None) for r in reads]
    ranks = []
    for r in reads:
        order = sorted(range(len(r.scores)), key=lambda j: -r.scores[j])
        ranks.append(next((n + 1 for n, j in enumerate(order) if r.true[j]), math.inf))
    return {
        "fields": len(reads),
        "in_domain": sum(r.in_domain is True for r in reads),
        "as_one_slide": _decide(slide_fields, evidence, {}),
        "one_by_one": _share([_decide([f], evidence, {}) for f in slide_fields]),
        "first_true_in_top_5_per_field": round(sum(r <= 5 for r in ranks) / len(ranks), 4),
    }


def write_report(record: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "slides.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    lines = [f"# Slides simulated from {record['lab']} ({record['model_id']})", ""]
    for name, r in record["by_profile"].items():
        n = r["negative_slides"]
        w = r["workload_to_sign_negative"]
        lines.append(
            f"- {name} (object threshold {r['object_threshold']:g}): negative slides {n}; items to reject to sign one "
            f"negative: mean {w['mean']}, max {w['max']}"
        )
        for k, p in r["positive_slides"].items():
            lines.append(
                f"  - positive, {k}: first true bacillus in the top 5 {p['first_true_in_top_5']:.1%}; {p['decisions']}"
            )
    own = record["own_lab"]
    lines.append(
        f"- own lab: {own['in_domain']}/{own['fields']} test fields in the domain; as one slide {own['as_one_slide']}; "
        f"one by one {own['one_by_one']}; first true bacillus in a field's top 5: "
        f"{own['first_true_in_top_5_per_field']:.1%}"
    )
    (out / "slides.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("\n".join(lines))
