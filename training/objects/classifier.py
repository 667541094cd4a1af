"""The object filter: a random forest (scikit-learn) over the measured candidates, its threshold chosen out of fold,
exported as ONNX for the service (``python -m training objects``).

1. Candidates and labels: :mod:`training.objects.samples`.
2. A random forest, class-balanced. Its threshold is chosen on out-of-fold scores only (never on a test split), the
   folds grouped by field (ZNSM) and by slide (UFAM): the highest threshold that still keeps ``target_recall``
   (0.95) of the bacillus candidates; when negative fields are among the samples and that threshold keeps more
   than ``negative_budget`` (0.05) false bacilli per negative field out of fold, the lowest higher threshold that
   meets the budget, as long as it keeps ``min_recall`` (0.90) of the bacillus candidates (else the highest
   threshold that does): a negative slide must not be graded positive.
3. One bacillus's area: the median area of the bacillus candidates that lie in exactly one single-bacillus box
   and in no cluster box, for the cluster estimate (:mod:`service.engine.object_filter`).
4. Export with skl2onnx; the metadata records the library versions, features, threshold, dense model id,
   training fields and the cross-validated figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

from service.engine.candidates import FEATURES
from service.engine.defaults import THRESHOLD
from service.engine.model import OnnxModel
from service.engine.modes import Mode
from service.engine.object_filter import FORMAT
from training.data.dataset import discover_fields
from training.data.split import DatasetSplit
from training.data.ufam import read_ufam
from training.evaluation.metrics import ObjectRules
from training.model.export import git_commit
from training.objects.samples import ObjectSamples, collect_samples, collect_ufam_samples
from training.paths import DEFAULT_CACHE

log = logging.getLogger(__name__)

TARGET_RECALL = 0.95  # the recall target, applied to out-of-fold candidate scores
NEGATIVE_BUDGET = 0.05  # false bacilli per negative field: 5 in a 100-field slide, scanty at worst
MIN_RECALL = 0.90


def new_classifier(seed: int = 0) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=300, min_samples_leaf=2, class_weight="balanced", random_state=seed, n_jobs=-1
    )


@dataclass(frozen=True)
class FilterFit:
    classifier: RandomForestClassifier
    threshold: float
    cross_validation: dict[str, float | int | str]
    single_bacillus_area_px: float


def choose_threshold(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.int8], target_recall: float) -> float:
    """The highest threshold (on a 0.01 grid) whose ``score >= t`` keeps at least ``target_recall`` of label 1."""
    positives = scores[labels == 1]
    best = 0.0
    for t in np.round(np.arange(0.0, 1.0, 0.01), 2):
        if (positives >= t).mean() >= target_recall:
            best = float(t)
    return best


def _grid() -> list[float]:
    return [float(t) for t in np.round(np.arange(0.0, 1.0, 0.01), 2)]


def negative_rate(
    scores: npt.NDArray[np.float64], negative_field: npt.NDArray[np.str_], fields: int, threshold: float
) -> float:
    """Candidates of negative fields kept at ``threshold``, per negative field."""
    return float(((negative_field != "") & (scores >= threshold)).sum() / fields) if fields else 0.0


def choose_lab_threshold(
    scores: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int8],
    negative_field: npt.NDArray[np.str_],
    negative_fields: int,
    target_recall: float,
    negative_budget: float = NEGATIVE_BUDGET,
    min_recall: float = MIN_RECALL,
) -> tuple[float, str]:
    """The threshold by the module docstring's rule (step 2), and which part of the rule decided it."""
    threshold = choose_threshold(scores, labels, target_recall)
    if negative_fields == 0 or negative_rate(scores, negative_field, negative_fields, threshold) <= negative_budget:
        return threshold, f"highest keeping {target_recall:.0%} of bacillus candidates"
    positives = scores[labels == 1]
    for t in _grid():
        if t > threshold and negative_rate(scores, negative_field, negative_fields, t) <= negative_budget:
            if (positives >= t).mean() >= min_recall:
                return t, f"lowest meeting {negative_budget} false bacilli per negative field"
            break
    return choose_threshold(scores, labels, min_recall), (
        f"the negative-field budget {negative_budget} costs more than {1 - min_recall:.0%} recall: highest keeping "
        f"{min_recall:.0%} of bacillus candidates"
    )


def fit_filter(
    samples: ObjectSamples,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
    negative_field: npt.NDArray[np.str_] | None = None,
) -> FilterFit:
    """Cross-validate grouped by ``samples.fields``, choose the threshold, fit on everything (module docstring).

    ``negative_field`` names, beside each sample, the negative field it came from ("" for others).
    """
    if len(set(samples.labels.tolist())) < 2:
        raise ValueError("the object filter needs both bacillus and debris candidates to learn from")
    groups = samples.fields
    folds = min(5, len(set(groups.tolist())))
    out_of_fold = np.zeros(len(samples), dtype=np.float64)
    for train, held in GroupKFold(n_splits=folds).split(samples.features, samples.labels, groups):
        classifier = new_classifier(seed).fit(samples.features[train], samples.labels[train])
        proba = classifier.predict_proba(samples.features[held])
        out_of_fold[held] = proba[:, list(classifier.classes_).index(1)] if 1 in classifier.classes_ else 0.0
    negatives = negative_field if negative_field is not None else np.full(len(samples), "")
    negative_fields = len(set(negatives.tolist()) - {""})
    threshold, rule = choose_lab_threshold(out_of_fold, samples.labels, negatives, negative_fields, target_recall)
    kept = out_of_fold >= threshold
    positives = samples.labels == 1
    figures: dict[str, float | int | str] = {
        "folds": folds,
        "grouped_by": "field (ZNSM), slide (UFAM)" if negative_fields else "field",
        "threshold_rule": rule,
        "negative_fields": negative_fields,
        "false_bacilli_per_negative_field_at_threshold": round(
            negative_rate(out_of_fold, negatives, negative_fields, threshold), 4
        ),
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


def train_object_filter(
    data: Path,
    split_path: Path,
    model_path: Path,
    out: Path,
    *,
    subsets: tuple[str, ...] = ("train", "validation"),
    ufam: Path | None = None,
    ufam_split: Path | None = None,
    threshold: float = THRESHOLD,
    min_object_px: int = ObjectRules.min_object_px,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
    cache: Path = DEFAULT_CACHE,
    mode: Mode = Mode.FAST,
) -> dict[str, str]:
    """Train the object filter on ``model_path``'s candidates in the split's ``subsets`` of ``data`` (and of the
    UFAM set's slides in the same subsets of ``ufam_split`` when ``ufam`` is given), write it to ``out``; returns
    its metadata. Candidates are read in ``mode`` where it gives exact mode's (:mod:`training.objects.samples`)."""
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    split.check_covers(set(fields))
    ids = [fid for subset in subsets for fid in split.subset(subset)]
    model = OnnxModel(model_path, providers=("CPUExecutionProvider",))
    rules = ObjectRules(min_object_px=min_object_px)
    samples = collect_samples(model, [fields[f] for f in ids], threshold=threshold, rules=rules, cache=cache, mode=mode)
    negative_field = np.full(len(samples), "")
    trained_on = f"{data.name}: fields {' '.join(ids)} ({' + '.join(subsets)}); split {split_path.name}"
    if ufam is not None:
        if ufam_split is None:
            raise ValueError("a UFAM folder needs its split by slide (ufam_split)")
        ufam_set, by_slide = read_ufam(ufam), DatasetSplit.load(ufam_split)
        by_slide.check_covers(set(ufam_set.slides))
        slides = [s for subset in subsets for s in by_slide.subset(subset)]
        lab, lab_negative = collect_ufam_samples(
            model,
            ufam_set.of_slides(slides),
            threshold=threshold,
            min_object_px=min_object_px,
            cache=cache,
            mode=mode,
        )
        samples = ObjectSamples.concatenate([samples, lab])
        negative_field = np.concatenate([negative_field, lab_negative])
        trained_on += f"; {ufam.name}: slides {' '.join(slides)} ({' + '.join(subsets)}); split {ufam_split.name}"
    fit = fit_filter(samples, target_recall, seed, negative_field)
    meta = export_filter(
        fit,
        out,
        dense_model_id=model.meta.model_id,
        candidate_threshold=threshold,
        min_object_px=min_object_px,
        trained_on=trained_on,
    )
    log.info(
        "object filter %s: threshold %s, cross-validation %s",
        meta["filter_id"],
        meta["threshold"],
        meta["cross_validation"],
    )
    log.info("one bacillus ≈ %s px; written to %s", meta["single_bacillus_area_px"], out)
    return meta
