"""Labelled candidates for the object filter: the dense model's candidates of annotated fields, labelled by the
evaluation's rules.

1. Candidates: the dense model's heatmap of every field (cached, :mod:`training.evaluation.heatmap_cache`), cut at
   its threshold into components of at least ``min_object_px`` pixels and measured
   (:mod:`service.engine.candidates`, the service's own code).
   Candidates are measured on the field as the model sees it (normalised when the model declares it,
   :meth:`service.engine.segmenter.Segmenter.prepare`), as the service measures them: colour relative to the field's
   background, so a pale lab's rods are not "debris".
2. Labels from the boxes, by the evaluation's rules (:mod:`training.evaluation.metrics`): a true-positive
   candidate is a bacillus (1), a false positive is debris (0), an ignored one (inside an ``unclassified`` box) is
   left out; bacillus candidates in exactly one single-bacillus box (and no cluster box) are marked, for the area
   of one bacillus.
3. Another lab's slides (UFAM DDS1, :func:`collect_ufam_samples`): every candidate of a negative field is debris;
   in a positive patch the candidate with a pixel within :data:`CENTRE_PX` px of the expert's point is a bacillus
   and the others are left out (nobody said what they are). Their group for cross-validation is the slide.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.candidates import FEATURES, Candidates, find_candidates
from service.engine.defaults import MIN_OBJECT_PX, THRESHOLD
from service.engine.model import OnnxModel
from service.engine.modes import Mode
from training.data.annotations import Box, BoxLabel
from training.data.dataset import FieldFiles, read_rgb
from training.data.ufam import CENTRE_PX, UfamSet, patch_centre, read_positives
from training.evaluation.heatmap_cache import HeatmapReader
from training.evaluation.metrics import ObjectRules, Outcome, match_objects
from training.evaluation.truth import image_digest, read_truth
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

    @staticmethod
    def concatenate(parts: list[ObjectSamples]) -> ObjectSamples:
        return ObjectSamples(
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.fields.astype(str) for p in parts]),
            np.concatenate([p.single for p in parts]),
        )


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
    threshold: float = THRESHOLD,
    rules: ObjectRules | None = None,
    cache: Path = DEFAULT_CACHE,
    mode: Mode = Mode.FAST,
) -> ObjectSamples:
    """Candidates of ``fields`` with their labels (module docstring, steps 1–2); heatmaps read in ``mode`` where
    it gives exact mode's candidates (:class:`~training.evaluation.heatmap_cache.HeatmapReader`)."""
    rules = rules or ObjectRules()
    reader = HeatmapReader(model, mode, cut=threshold)
    features, labels, names, single = [], [], [], []
    for files in tqdm(fields, desc="object candidates", unit="field", file=sys.stderr):
        truth = read_truth(files)
        heatmap, _ = reader.cached(files.field_id, truth.image, cache, truth.digest)
        field = reader.segmenter.prepare(truth.image)
        candidates = find_candidates(heatmap, field, threshold, rules.min_object_px)
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


def _samples(rows: list[tuple[npt.NDArray[np.float32], int, str]]) -> ObjectSamples:
    return ObjectSamples(
        np.stack([r[0] for r in rows]) if rows else np.zeros((0, len(FEATURES)), np.float32),
        np.asarray([r[1] for r in rows], dtype=np.int8),
        np.asarray([r[2] for r in rows]),
        np.zeros(len(rows), dtype=bool),
    )


def collect_ufam_samples(
    model: OnnxModel,
    part: UfamSet,
    *,
    threshold: float = THRESHOLD,
    min_object_px: int = MIN_OBJECT_PX,
    cache: Path = DEFAULT_CACHE,
    mode: Mode = Mode.FAST,
) -> tuple[ObjectSamples, npt.NDArray[np.str_]]:
    """Candidates of a part of the UFAM set, labelled (module docstring, step 3), grouped by slide.

    Returns:
        the samples (their ``fields`` are slide ids: the cross-validation's groups), and beside each the negative
        field it came from ("" for a positive patch's candidate), for the false bacilli per negative field.
    """
    reader = HeatmapReader(model, mode, cut=threshold)
    segmenter = reader.segmenter
    rows: list[tuple[npt.NDArray[np.float32], int, str]] = []
    negative_of: list[str] = []
    images, backgrounds = read_positives(part, model.meta.normalisation)
    for p in tqdm(part.positives, desc="object candidates (UFAM positives)", unit="patch", file=sys.stderr):
        rgb = images[p.patch_id]
        field = segmenter.prepare(rgb, backgrounds.get(p.field))
        heatmap = reader.heatmap(rgb, backgrounds.get(p.field))
        cy, cx = patch_centre(rgb)
        for c in find_candidates(heatmap, field, threshold, min_object_px).items:
            rows_, cols_ = c.window
            ys, xs = np.nonzero(c.component)
            near = (np.abs(ys + rows_.start - cy) <= CENTRE_PX) & (np.abs(xs + cols_.start - cx) <= CENTRE_PX)
            if near.any():
                rows.append((c.features, 1, p.slide))
                negative_of.append("")
    for f in tqdm(part.negatives, desc="object candidates (UFAM negative fields)", unit="field", file=sys.stderr):
        rgb = read_rgb(f.path)
        heatmap, _ = reader.cached(f.field_id, rgb, cache, image_digest(rgb))
        for c in find_candidates(heatmap, segmenter.prepare(rgb), threshold, min_object_px).items:
            rows.append((c.features, 0, f.slide))
            negative_of.append(f.field_id)
    return _samples(rows), np.asarray(negative_of, dtype=str)
