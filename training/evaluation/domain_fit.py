"""A model folder's training domain (``python -m training domain``): ``domain.json`` and how well it separates labs.

1. The measurements of :func:`service.engine.domain.describe_field` on the model's **training** fields give each
   one's median and robust spread.
2. The **limit** is chosen on validation data only: on the in-domain side, the training fields left out one at a
   time (each against spreads fitted without it) and the validation fields of the model's lab; on the other side,
   another lab's fields from its train and validation slides (UFAM DDS1; never its test slides). The limit is the
   geometric mean of the largest in-domain and the smallest out-of-domain distance when they separate, else the
   largest in-domain distance (in-domain fields are never flagged by the choice).
3. **False bacilli**, the evidence the slide decision rests on: the folder's model and filter (fast mode, as the
   service runs by default) on its lab's validation fields (kept objects that match no expert box) and on the other
   lab's negative fields of its train and validation slides (every kept object), each with its Poisson 95% upper
   bound per field.
4. The distributions on the test fields of both labs, and on any more labs' fields given (``--more NAME=FOLDER``),
   are reported (``domain_report.json``, a figure), never used for a choice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from service.engine.domain import DomainModel, FalseRate, describe_field, poisson_upper
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import DOMAIN_JSON, open_folder
from service.engine.segmenter import Mode, Segmenter
from training.data.dataset import FieldFiles, discover_fields, read_annotation, read_rgb
from training.data.split import DatasetSplit
from training.data.ufam import NegativeField, read_ufam
from training.evaluation.metrics import match_objects

log = logging.getLogger(__name__)


def _describe(paths: list[Path], what: str) -> list[dict[str, float]]:
    return [describe_field(read_rgb(p)) for p in tqdm(paths, desc=f"describe {what}", unit="field", leave=False)]


def choose_limit(inside: list[float], outside: list[float]) -> tuple[float, str]:
    """The limit from validation distances (module docstring), and the rule in words."""
    top_in = max(inside)
    if outside and min(outside) > top_in:
        limit = math.sqrt(top_in * min(outside))
        return limit, (
            f"geometric mean of the largest in-domain validation distance ({top_in:.2f}) and the smallest "
            f"out-of-domain one ({min(outside):.2f})"
        )
    return top_in, f"the largest in-domain validation distance ({top_in:.2f}); the two sides overlap"


def leave_one_out(model_id: str, described: list[dict[str, float]]) -> list[float]:
    """Each training field's distance against spreads fitted on the others."""
    distances = []
    for i, values in enumerate(described):
        others = DomainModel.fit(model_id, described[:i] + described[i + 1 :], math.inf, "", "")
        distances.append(others.distance(values))
    return distances


def false_on_annotated(segmenter: Segmenter, fields: list[FieldFiles], source: str) -> FalseRate:
    """Kept objects matching no expert box, on annotated fields."""
    false = 0
    for f in tqdm(fields, desc="false bacilli (annotated)", unit="field", leave=False):
        result = segmenter.segment(read_rgb(f.image), mode=Mode.FAST if Mode.FAST in segmenter.modes else Mode.EXACT)
        false += match_objects(result.objects, read_annotation(f).boxes).counts().false_positives
    return FalseRate(source, len(fields), false, round(poisson_upper(false, len(fields)), 4))


def false_on_negatives(segmenter: Segmenter, fields: list[NegativeField], source: str) -> FalseRate:
    """Every kept object, on negative fields."""
    false = 0
    for f in tqdm(fields, desc="false bacilli (negative fields)", unit="field", leave=False):
        result = segmenter.segment(read_rgb(f.path), mode=Mode.FAST if Mode.FAST in segmenter.modes else Mode.EXACT)
        false += len(result.bacilli)
    return FalseRate(source, len(fields), false, round(poisson_upper(false, len(fields)), 4))


def _figure(groups: dict[str, list[float]], limit: float, out: Path) -> None:
    """A strip of each group's distances (log scale) with the limit: what in and out of the domain look like."""
    width, row, left = 900, 46, 230
    image = Image.new("RGB", (width, row * len(groups) + 60), "white")
    draw = ImageDraw.Draw(image)
    top = max(max(v) for v in groups.values() if v)
    scale = (width - left - 30) / math.log10(max(top, limit) * 1.5 / 0.1)

    def x(value: float) -> float:
        return left + scale * math.log10(max(value, 0.1) / 0.1)

    for i, (name, values) in enumerate(groups.items()):
        y = 30 + i * row
        draw.text((10, y), f"{name} ({len(values)})", fill="black")
        for v in values:
            colour = (20, 130, 60) if v <= limit else (200, 60, 40)
            draw.ellipse((x(v) - 3, y + 2, x(v) + 3, y + 8), outline=colour, width=2)
    draw.line((x(limit), 20, x(limit), image.height - 30), fill=(40, 40, 200), width=2)
    draw.text((x(limit) + 4, image.height - 28), f"limit {limit:.2f} robust SD", fill=(40, 40, 200))
    for tick in (0.1, 1, 10, 100, 1000):
        if x(tick) < width:
            draw.text((x(tick) - 6, image.height - 14), f"{tick:g}", fill="grey")
    image.save(out)


def build_domain(
    folder_path: Path,
    data: Path,
    split_path: Path,
    ufam: Path,
    ufam_split: Path,
    out: Path,
    more: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Write ``domain.json`` into the model folder and ``domain_report.json`` + ``domain.png`` into ``out``;
    returns the report."""
    folder = open_folder(folder_path)
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    train = _describe([fields[i].image for i in split.train], "training fields")
    validation = _describe([fields[i].image for i in split.validation], "validation fields")
    test = _describe([fields[i].image for i in split.test], "test fields")
    lab = read_ufam(ufam)
    slides = DatasetSplit.load(ufam_split)
    calibration_slides = set(slides.train) | set(slides.validation)
    foreign_calibration = [n for n in lab.negatives if n.slide in calibration_slides]
    foreign_test = [n for n in lab.negatives if n.slide in set(slides.test)]
    foreign_described = _describe([n.path for n in foreign_calibration], f"{ufam.name} train/validation")
    foreign_test_described = _describe([n.path for n in foreign_test], f"{ufam.name} test")

    base = DomainModel.fit(folder.model_id, train, math.inf, "", "")
    inside = leave_one_out(folder.model_id, train) + [base.distance(v) for v in validation]
    outside = [base.distance(v) for v in foreign_described]
    limit, rule = choose_limit(inside, outside)
    source = f"{data.name} train split ({len(train)} fields)"
    rule = (
        f"{rule}; in-domain: {len(train)} {data.name} training fields left out one at a time and its "
        f"{len(validation)} validation fields; out of domain: {len(foreign_described)} negative fields of "
        f"{ufam.name}'s train and validation slides"
    )
    domain = replace(base, z_limit=round(limit, 3), source=source, z_limit_rule=rule)

    segmenter = load_segmenter(SegmenterConfig.of_folder(folder))
    domain = replace(
        domain,
        in_domain_false=false_on_annotated(
            segmenter, [fields[i] for i in split.validation], f"{data.name} validation fields"
        ),
        foreign_false=false_on_negatives(
            segmenter,
            foreign_calibration,
            f"{ufam.name} negative fields of slides {' '.join(sorted(calibration_slides))} (train and validation)",
        ),
    )
    domain.write(folder.path / DOMAIN_JSON)

    def distances(described: list[dict[str, float]]) -> list[float]:
        return [domain.check_values(v).distance for v in described]

    groups = {
        f"{data.name} train (leave-one-out)": [round(d, 3) for d in inside[: len(train)]],
        f"{data.name} validation": distances(validation),
        f"{data.name} test": distances(test),
        f"{ufam.name} train+validation": distances(foreign_described),
        f"{ufam.name} test": distances(foreign_test_described),
    }
    for name, root in (more or {}).items():
        groups[name] = distances(_describe([f.image for f in discover_fields(root)], name))
    reasons: dict[str, int] = {}
    for v in foreign_test_described:
        for reason in domain.check_values(v).reasons:
            key = reason.split(" lies ")[0].rsplit(" ", 1)[0] if " lies outside" in reason else "together"
            reasons[key] = reasons.get(key, 0) + 1
    report: dict[str, Any] = {
        "model_id": folder.model_id,
        "domain": domain.to_json(),
        "distances": groups,
        "in_domain_share": {
            name: round(float(np.mean([d <= domain.z_limit for d in values])), 4) if values else None
            for name, values in groups.items()
        },
        "reasons_on_foreign_test_fields": reasons,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "domain_report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _figure(groups, domain.z_limit, out / "domain.png")
    log.info(
        "domain of %s: limit %.2f; in-domain shares %s", folder.model_id, domain.z_limit, report["in_domain_share"]
    )
    return report
