"""Training the object-level filter (scikit-learn) on the candidates of the training fields, exported as ONNX.

1. Candidates: the shipped dense model's heatmap of every train and validation field, cut at its threshold into
   components of at least ``min_object_px`` pixels and measured (:mod:`service.engine.candidates`).
2. Labels from the boxes, by the evaluation's rules (:mod:`training.metrics`): a true-positive candidate is a
   bacillus (1), a false positive is debris (0), an ignored one (inside an ``unclassified`` box) is left out.
3. A random forest (scikit-learn), class-balanced. Its threshold is chosen on out-of-fold scores, the folds
   grouped by field: the highest threshold that still keeps ``target_recall`` (0.95) of the bacillus candidates.
4. One bacillus's area: the median area of the bacillus candidates that lie in exactly one single-bacillus box
   and in no cluster box, for the cluster estimate (:mod:`service.engine.object_filter`).
5. Export with skl2onnx; the metadata records the library versions, features, threshold, dense model id,
   training fields and the cross-validated figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import skl2onnx
import sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from tqdm import tqdm

from service.engine.candidates import FEATURES, Candidates, find_candidates
from service.engine.model import OnnxModel
from service.engine.object_filter import FORMAT
from training.annotations import Box, BoxLabel
from training.dataset import FieldFiles
from training.evaluate import DEFAULT_CACHE, cached_heatmap, read_truth
from training.export import git_commit
from training.metrics import ObjectRules, Outcome, match_objects

log = logging.getLogger(__name__)

TARGET_RECALL = 0.95  # the recall target, applied to out-of-fold candidate scores


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
        return b.y < rows.stop and rows.start < b.y + b.height and b.x < cols.stop and cols.start < b.x + b.width

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


def new_classifier(seed: int = 0) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=300, min_samples_leaf=2, class_weight="balanced", random_state=seed, n_jobs=-1
    )


@dataclass(frozen=True)
class FilterFit:
    classifier: RandomForestClassifier
    threshold: float
    cross_validation: dict[str, float]
    single_bacillus_area_px: float


def choose_threshold(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.int8], target_recall: float) -> float:
    """The highest threshold (on a 0.01 grid) whose ``score >= t`` keeps at least ``target_recall`` of label 1."""
    positives = scores[labels == 1]
    best = 0.0
    for t in np.round(np.arange(0.0, 1.0, 0.01), 2):
        if (positives >= t).mean() >= target_recall:
            best = float(t)
    return best


def fit_filter(samples: ObjectSamples, target_recall: float = TARGET_RECALL, seed: int = 0) -> FilterFit:
    """Cross-validate by field, choose the threshold, fit on everything (module docstring, steps 3–4)."""
    if len(set(samples.labels.tolist())) < 2:
        raise ValueError("the object filter needs both bacillus and debris candidates to learn from")
    groups = samples.fields
    folds = min(5, len(set(groups.tolist())))
    out_of_fold = np.zeros(len(samples), dtype=np.float64)
    for train, held in GroupKFold(n_splits=folds).split(samples.features, samples.labels, groups):
        classifier = new_classifier(seed).fit(samples.features[train], samples.labels[train])
        proba = classifier.predict_proba(samples.features[held])
        out_of_fold[held] = proba[:, list(classifier.classes_).index(1)] if 1 in classifier.classes_ else 0.0
    threshold = choose_threshold(out_of_fold, samples.labels, target_recall)
    kept = out_of_fold >= threshold
    positives = samples.labels == 1
    figures = {
        "folds": folds,
        "grouped_by": "field",
        "candidates": len(samples),
        "bacillus_candidates": int(positives.sum()),
        "debris_candidates": int((~positives).sum()),
        "target_recall": target_recall,
        "roc_auc": round(float(roc_auc_score(samples.labels, out_of_fold)), 4),
        "recall_at_threshold": round(float(kept[positives].mean()), 4),
        "precision_at_threshold": round(float(positives[kept].mean()), 4) if kept.any() else float("nan"),
        "debris_rejected_at_threshold": round(float((~kept[~positives]).mean()), 4),
    }
    single_areas = samples.features[samples.single, FEATURES.index("area_px")]
    area = float(np.median(single_areas)) if single_areas.size else float("nan")
    final = new_classifier(seed).fit(samples.features, samples.labels)
    return FilterFit(final, threshold, figures, area)


def export_filter(
    fit: FilterFit,
    path: Path,
    *,
    dense_model_id: str,
    candidate_threshold: float,
    min_object_px: int,
    trained_on: str,
) -> dict[str, str]:
    """Write the classifier as ONNX (``features`` ``[n, F]`` float32 → ``probabilities`` ``[n, 2]``) with metadata."""
    proto = skl2onnx.convert_sklearn(
        fit.classifier,
        "object_filter",
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(fit.classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # names the classifier and the two figures that change its answers: threshold and one bacillus's area
    settings = f"{fit.threshold:.2f}|{fit.single_bacillus_area_px:.1f}".encode()
    digest = hashlib.sha256(proto.SerializeToString() + settings).hexdigest()[:12]
    meta = {
        "format": FORMAT,
        "filter_id": f"tbseg-objects-{digest}",
        "classifier": f"RandomForestClassifier({json.dumps(fit.classifier.get_params(), default=str)})",
        "library": json.dumps({"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__}),
        "features": ",".join(FEATURES),
        "threshold": f"{fit.threshold:.2f}",
        "dense_model_id": dense_model_id,
        "candidate_threshold": str(candidate_threshold),
        "min_object_px": str(min_object_px),
        "single_bacillus_area_px": f"{fit.single_bacillus_area_px:.1f}",
        "trained_on": trained_on,
        "cross_validation": json.dumps(fit.cross_validation),
        "created_from": git_commit(),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return meta
