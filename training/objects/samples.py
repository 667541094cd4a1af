"""Labelled candidates for the object filter: the dense model's candidates of annotated fields, labelled by the
evaluation's rules.

1. Candidates: the dense model's heatmap of every field (cached, :mod:`training.evaluation.heatmap_cache`), cut at
   its threshold into components of at least ``min_object_px`` pixels and measured
   (:mod:`service.engine.candidates`, the service's own code).
2. Labels from the boxes, by the evaluation's rules (:mod:`training.evaluation.metrics`): a true-positive
   candidate is a bacillus (1), a false positive is debris (0), an ignored one (inside an ``unclassified`` box) is
   left out; bacillus candidates in exactly one single-bacillus box (and no cluster box) are marked, for the area
   of one bacillus.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.candidates import FEATURES, Candidates, find_candidates
from service.engine.model import OnnxModel
from training.data.annotations import Box, BoxLabel
from training.data.dataset import FieldFiles
from training.evaluation.heatmap_cache import cached_heatmap
from training.evaluation.metrics import ObjectRules, Outcome, match_objects
from training.evaluation.truth import read_truth
from training.paths import DEFAULT_CACHE


@dataclass
class ObjectSamples:
    """Measured, labelled candidates of some fields."""

    features: npt.NDArray[np.float32]  # [n, len(FEATURES)]
    labels: npt.NDArray[np.int8]  # 1 bacillus, 0 debris
    fields: npt.NDArray[np.str_]
    single: npt.NDArray[np.bool_]  # a bacillus candidate in exactly one single box and no cluster box

    def __len__(self) -> int:
        return len(self.labels)


def candidate_outcomes(candidates: Candidates, boxes: tuple[Box, ...], rules: ObjectRules) -> list[Outcome]:
    """The evaluation's verdict on each candidate (same components: same mask, same connectivity)."""
    match = match_objects(candidates.labels > 0, boxes, rules)
    outcomes = []
    for c in candidates.items:
        y, x = c.first_pixel
        outcomes.append(Outcome(int(match.outcomes[match.components[y, x]])))
    return outcomes


def _in_one_single_box(c_window: tuple[slice, slice], boxes: tuple[Box, ...]) -> bool:
    rows, cols = c_window

    def overlaps(b: Box) -> bool:
        return bool(b.y < rows.stop and rows.start < b.y + b.height and b.x < cols.stop and cols.start < b.x + b.width)

    singles = [b for b in boxes if b.label is BoxLabel.SINGLE_BACILLUS and overlaps(b)]
    clusters = [b for b in boxes if b.label is BoxLabel.BACILLI_CLUSTER and overlaps(b)]
    return len(singles) == 1 and not clusters


def collect_samples(
    model: OnnxModel,
    fields: list[FieldFiles],
    *,
    threshold: float = 0.5,
    rules: ObjectRules | None = None,
    cache: Path = DEFAULT_CACHE,
) -> ObjectSamples:
    """Candidates of ``fields`` with their labels (module docstring, steps 1–2)."""
    rules = rules or ObjectRules()
    features, labels, names, single = [], [], [], []
    for files in tqdm(fields, desc="object candidates", unit="field", file=sys.stderr):
        truth = read_truth(files)
        heatmap, _ = cached_heatmap(model, files.field_id, truth.image, cache, digest=truth.digest)
        candidates = find_candidates(heatmap, truth.image, threshold, rules.min_object_px)
        for c, outcome in zip(candidates.items, candidate_outcomes(candidates, truth.boxes, rules), strict=True):
            if outcome not in (Outcome.TRUE_POSITIVE, Outcome.FALSE_POSITIVE):
                continue
            features.append(c.features)
            labels.append(int(outcome == Outcome.TRUE_POSITIVE))
            names.append(files.field_id)
            single.append(outcome == Outcome.TRUE_POSITIVE and _in_one_single_box(c.window, truth.boxes))
    return ObjectSamples(
        np.stack(features) if features else np.zeros((0, len(FEATURES)), np.float32),
        np.asarray(labels, dtype=np.int8),
        np.asarray(names),
        np.asarray(single, dtype=bool),
    )
