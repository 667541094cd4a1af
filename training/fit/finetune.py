"""Fine-tuning a model folder on a lab's own annotated fields (``python -m training finetune``).

Like Cellpose's human-in-the-loop training: a lab annotates a few fields (boxes, points or masks, and negative
fields; :mod:`training.fit.lab_data`), and in minutes on a CPU gets its own model folder, served beside the
default one. The steps, each timed:

1. **Split** the lab's fields into fine-tune and held-out ones (seeded, by field), unless ``--held-out`` names a
   folder of its own.
2. **Patches**: the lab's fine-tune fields (and, with ``--lab-profile``, background patches on every candidate the
   base made on the lab's confirmed-negative fields: free hard negatives, :mod:`training.fit.profile_negatives`),
   plus a *replay* sample of the base model's own training fields (as many patches as the lab's, by default), so
   that the model does not forget the microscope it learnt first. The held-out fields' patches choose the epoch
   (lowest loss).
3. **Train** from the base folder's ``patch_cnn.keras`` weights, with its field normalisation, a lower learning
   rate and a few epochs (:func:`training.fit.train.fit_patches`: same augmentation and optimiser as training).
4. Optionally **recalibrate the pixels** on the held-out fields (``--pixel-calibration``: Platt, folded into the
   last layer, as ``calibrate``). Off by default: measured on UFAM (``docs/results.md`` section 9), calibrating a
   pale lab to a realistic bacillus share pushes its faint rods under the pixel cut (recall at the experts' points
   79% → 11%); the object threshold below does the lab's calibration instead.
5. **Object filter** refitted on the candidates of the lab's fine-tune fields plus a few replay fields
   (:func:`training.objects.classifier.fit_filter`), then **its threshold recalibrated on the held-out fields**: the
   lowest that keeps at most ``negative_budget`` false bacilli per held-out negative field (a negative slide must
   grade negative), or the out-of-fold one when the held-out fields have no negative field. The held-out figures
   of the card are therefore in-sample for that one number; ``--test`` fields are not.
6. **Export** the folder: ``bacilli_dense.onnx``, ``object_filter.onnx``, ``patch_cnn.keras``, ``MODEL_CARD.md``,
   ``finetune.json`` and ``curves.png`` (the networks and the coarse pass before step 5, which learns from their
   candidates): servable as it is (copy it into ``TBSEG_MODELS_DIR``); last, fast mode's int8 copies (calibrated on
   a few replay fields; :mod:`training.model.fast_variants`).
7. **Compare** base and fine-tuned, each with its filter, on the held-out fields, on ``--test`` fields when given,
   and (unless ``--no-znsm-test``) on the ZNSM-iDB test split, to show what was kept. What they will cost is logged
   (and recorded) before they start.

Steps 5 and 7 read fields in fast mode, the service's default, which gives exact mode's candidates and kept bacilli
(``--exact`` for exact mode: about 12× slower on 2 cores; :mod:`training.evaluation.heatmap_cache`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from scipy.special import expit

from service.engine.defaults import MIN_OBJECT_PX, THRESHOLD
from service.engine.lab_profile import LabProfile
from service.engine.model import OnnxModel
from service.engine.model_folder import CARD_MD, DENSE_ONNX, OBJECT_FILTER_ONNX, PATCH_KERAS, ModelFolder, open_folder
from service.engine.modes import Mode
from service.engine.normalisation import InputNormalisation
from service.engine.scale import FieldScale, ModelScale, resolve_scale
from training.data.dataset import FieldFiles, discover_fields, image_size, read_rgb
from training.data.rescale import rescaled_copy
from training.data.sampling import PATCH_SIZE, PatchSet
from training.data.split import DatasetSplit
from training.evaluation.heatmap_cache import HeatmapReader
from training.evaluation.labs import Pair
from training.fit.lab_data import FieldLab, LabData, LabScores, PatchCounts, read_lab, split_by_field
from training.fit.profile_negatives import open_profile, profile_hard_negatives
from training.fit.recipes import get_recipe
from training.fit.train import fit_patches, plot_curves
from training.model.calibration import expected_calibration_error, fit_platt, fold_into_last_conv
from training.model.export import export_onnx
from training.model.fast_variants import write_coarse_network, write_fast_variants
from training.objects.classifier import (
    NEGATIVE_BUDGET,
    TARGET_RECALL,
    FilterFit,
    export_filter,
    fit_filter,
    negative_rate,
)
from training.objects.samples import ObjectSamples
from training.paths import DEFAULT_CACHE, ZNSM_MS2, ZNSM_MS2_SPLIT

log = logging.getLogger(__name__)
T = TypeVar("T")
FAST_CALIBRATION_FIELDS = 6  # replay train fields calibrating the int8 copies


@dataclass(frozen=True)
class FinetuneSettings:
    """How a lab's model is fine-tuned (every field is a ``finetune`` option).

    Attributes:
        epochs: passes over the patches; the epoch with the lowest held-out loss is kept.
        learning_rate: SGD's starting rate (the base recipe's is 0.01: lower, to adapt rather than relearn).
        counts: patches drawn per field (see :class:`~training.fit.lab_data.PatchCounts`).
        replay_share: replay patches from the base's training fields, as a share of the lab's patches.
        replay_filter_fields: base training fields whose candidates join the lab's for the object filter.
        held_out_share: share of the lab's fields held out when no held-out folder is given.
        pixel_calibration: Platt calibration of P(bacillus) on the held-out pixels (step 4): ``none`` (default),
            ``lab`` (to the held-out fields' own bacillus share; for point-centred patches, the base lab's) or
            ``balanced`` (both classes weigh the same).
        negative_budget: false bacilli per negative field the object threshold may keep on the held-out fields.
        microns_per_pixel: the lab's pixel size: its fields are resampled to the base's scale before anything else
            (:mod:`training.data.rescale`), as the service reads them.
        exhaustive: the lab's fields are annotated exhaustively (every bacillus boxed): with no negative field, every
            candidate off a box on a held-out field is a false bacillus, and the budget holds per held-out field.
        background_share: share of background pixels drawn for calibration.
        seed: seeds the split, the sampling and the training.
        exact: the object filter's candidates and the comparisons read fields in exact mode (default: fast mode,
            the service's default, which gives exact mode's candidates and kept bacilli;
            :mod:`training.evaluation.heatmap_cache`). Pixel calibration reads exact mode in any case.
    """

    epochs: int = 10
    learning_rate: float = 0.003
    counts: PatchCounts = field(default_factory=PatchCounts)
    replay_share: float = 1.0
    replay_filter_fields: int = 2
    held_out_share: float = 0.3
    pixel_calibration: str = "none"
    negative_budget: float = NEGATIVE_BUDGET
    exhaustive: bool = False
    microns_per_pixel: float | None = None
    background_share: float = 0.05
    seed: int = 0
    exact: bool = False


class Stopwatch:
    """Wall seconds per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, step: Callable[[], T]) -> T:
        started = time.perf_counter()
        log.info("finetune: %s", name)
        result = step()
        self.seconds[name] = round(time.perf_counter() - started, 1)
        return result


@dataclass(frozen=True)
class Replay:
    """The base model's own training data, read once: its fields by id and its split.

    Attributes:
        root: the data set's folder.
        fields: its fields by id (empty when the folder holds no images, e.g. a split without its data).
        split: its train / validation / test split.
    """

    root: Path
    fields: dict[str, FieldFiles]
    split: DatasetSplit

    @classmethod
    def read(cls, root: Path, split: Path) -> Replay:
        return cls(root, {f.field_id: f for f in discover_fields(root)}, DatasetSplit.load(split))

    def lab(self, ids: Sequence[str]) -> FieldLab:
        """Those of its fields as a lab of annotated fields."""
        return FieldLab(self.root, tuple(self.fields[i] for i in ids))

    def patches(
        self, normalisation: InputNormalisation | None, lab_patches: int, settings: FinetuneSettings
    ) -> PatchSet:
        """About ``replay_share × lab_patches`` patches from its training fields, half bacillus."""
        ids = self.split.train
        wanted = max(2, round(settings.replay_share * lab_patches))
        per_field = max(1, math.ceil(wanted / (2 * len(ids))))
        counts = PatchCounts(positives_per_field=per_field, negatives_per_field=per_field)
        return self.lab(ids).patches(normalisation, counts, settings.seed)


def bacillus_share(lab: FieldLab, model: OnnxModel, settings: FinetuneSettings, cache: Path) -> float:
    """The weighted share of bacillus pixels in annotated fields (their real prior)."""
    _, y, w = lab.pixels(model, settings.background_share, settings.seed, cache)
    weights = np.ones(y.shape) if w is None else w
    return float(weights[y].sum() / weights.sum())


def held_out_threshold(
    fit: FilterFit,
    samples: ObjectSamples,
    negative_field: npt.NDArray[np.str_],
    budget: float,
    fields: int | None = None,
    which: str = "negative fields",
) -> FilterFit:
    """``fit`` with its threshold recalibrated on held-out candidates: the lowest (on a 0.01 grid) keeping at most
    ``budget`` false bacilli per held-out negative field (``fields`` of them: by default those ``negative_field``
    names); unchanged without held-out negative fields."""
    negative_fields = fields if fields is not None else len(set(negative_field.tolist()) - {""})
    if negative_fields == 0 or not len(samples):
        return fit
    classes = list(fit.classifier.classes_)
    scores = fit.classifier.predict_proba(samples.features)[:, classes.index(1)]
    grid = [float(t) for t in np.round(np.arange(0.0, 1.01, 0.01), 2)]
    threshold = next((t for t in grid if negative_rate(scores, negative_field, negative_fields, t) <= budget), 1.0)
    positives = scores[samples.labels == 1]
    figures = {
        **fit.cross_validation,
        "out_of_fold_threshold": fit.threshold,
        "threshold_rule": f"lowest keeping at most {budget} false bacilli per field on the lab's "
        f"{negative_fields} held-out {which}",
        "held_out_candidate_recall": round(float((positives >= threshold).mean()), 4) if positives.size else "n/a",
        "held_out_false_bacilli_per_negative_field": round(
            negative_rate(scores, negative_field, negative_fields, threshold), 4
        ),
    }
    return replace(fit, threshold=threshold, cross_validation=figures)


def _num(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"


def table(rows: list[LabScores]) -> list[str]:
    def pct(value: float | None) -> str:
        return "n/a" if value is None or value != value else f"{100 * value:.1f}"

    lines = [
        "| model | filter | bacilli found | recall | precision | false components per field | false bacilli per "
        "negative field (fields) | 100-field negative slide |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        per_field = r["false_bacilli_per_negative_field"]
        lines.append(
            f"| {r['name']} (`{r['model_id']}`) | `{r['filter_id'] or 'none'}` | {r['found']} / {r['positives']} | "
            f"{pct(r['recall'])} | {pct(r['precision'])} | {_num(r.get('false_components_per_field'))} | "
            f"{'n/a' if per_field != per_field else f'{per_field:.2f}'} ({r['negative_fields']}) | "
            f"{r['negative_slide_grade']} |"
        )
    return lines


def write_card(out: Path, record: dict[str, Any]) -> None:
    """The fine-tuned folder's MODEL_CARD.md, from its record."""
    s, t = record["settings"], record["wall_seconds"]
    lines = [
        f"# Model card: `{record['model_id']}`",
        "",
        f"A lab's fine-tuned model: `{record['base_model_id']}` fine-tuned on {record['lab']['fine_tune']} of "
        f"`{record['lab']['root']}` ({record['lab']['kind']}), with a replay sample of the base model's training "
        "fields so that it keeps what it knew. Made by `python -m training finetune` "
        f"({record['lab']['held_out_how']}).",
        "",
        "## Data",
        "",
        f"- fine-tune: {record['lab']['fine_tune']}",
        f"- held out (epoch choice, calibration, these figures): {record['lab']['held_out']}",
        f"- replay: {record['replay']['patches']} patches of {record['replay']['data']} (training fields), "
        f"object candidates of {len(record['replay']['filter_fields'])} of them "
        f"({' '.join(record['replay']['filter_fields'])})",
        f"- patches: {record['patches']['lab_train']} of the lab"
        + (
            f" (of them {record['patches']['lab_profile_hard_negatives']} hard negatives on the candidates of lab "
            f"profile {record['lab_profile']['lab_id']} v{record['lab_profile']['version']})"
            if record.get("lab_profile")
            else ""
        )
        + f", {record['patches']['replay']} replay, {record['patches']['held_out']} held out",
        "",
        "## Training",
        "",
        f"{s['epochs']} epochs from the base's weights, SGD from learning rate {s['learning_rate']}; epoch "
        f"{record['best_epoch']} kept (held-out patch loss {record['held_out_patch_loss']:.4f}). "
        + (
            f"Calibrated on the held-out pixels: P = σ({record['calibration']['scale']:.3f}·z "
            f"{record['calibration']['shift']:+.3f}) ({record['calibration']['weights']}), ECE "
            f"{record['calibration']['ece_before']:.4f} → {record['calibration']['ece_after']:.4f}."
            if record.get("calibration")
            else "Not recalibrated."
        ),
        (
            f"Object filter `{record['filter']['filter_id']}`: threshold {record['filter']['threshold']} "
            f"({record['filter']['threshold_rule']}; out of fold, grouped by field, it would have been "
            f"{record['filter']['out_of_fold_threshold']}; {record['filter']['candidates']} candidates)."
            if record["filter"]
            else "No object filter: its candidates gave nothing to learn from (every candidate is kept)."
        ),
        "",
        f"Wall time on {record['machine']['cpus']} CPU cores: "
        + ", ".join(f"{k} {v} s" for k, v in t.items())
        + f"; fine-tuning itself (up to the exported folder) {record['finetune_seconds']} s.",
        "",
        "## Base vs fine-tuned",
        "",
        "Each with its own object filter. Recall: bacilli found (boxes hit, or for point-centred patches a kept "
        "object within 3 px of the point); precision where whole annotated fields allow it; false bacilli: objects "
        "kept on negative fields, and the grade a negative slide of 100 such fields would get.",
    ]
    for name, rows in record["comparison"].items():
        lines += ["", f"### {name}", "", *table(rows)]
    if "znsm-test" not in record["comparison"]:
        lines += ["", "The ZNSM-iDB test split was not measured (`--no-znsm-test`)."]
    lines += ["", "## Reproduce", "", "```sh", record["command"], "```", ""]
    (out / CARD_MD).write_text("\n".join(lines), encoding="utf-8")


def write_fast_networks(
    out: Path, replay: Replay, lab: LabData, held_out: LabData, fields: int = FAST_CALIBRATION_FIELDS
) -> None:
    """Give the new folder fast mode's networks (:mod:`training.model.fast_variants`), int8 calibrated on a few of
    the replay data's train fields and of the lab's own fine-tune fields (as the model reads them: at its scale),
    and compared on the replay data's validation fields and the lab's held-out fields."""
    lab_calibration = [read_rgb(path) for _, path in lab.images()[:fields]]
    lab_check = [read_rgb(path) for _, path in held_out.images()[:fields]]
    calibration = [read_rgb(replay.fields[i].image) for i in replay.split.train[:fields]] + lab_calibration
    check = [read_rgb(replay.fields[i].image) for i in replay.split.validation] + lab_check
    write_fast_variants(
        out,
        calibration,
        check or calibration,
        calibration_source=f"{len(calibration) - len(lab_calibration)} train fields of {replay.root.name} and "
        f"{len(lab_calibration)} of the lab's fine-tune fields",
        check_source=f"{len(check) - len(lab_check)} validation fields of {replay.root.name} and {len(lab_check)} "
        "of the lab's held-out fields"
        if check
        else "the same fields",
    )


@dataclass(frozen=True)
class Base:
    """The folder fine-tuned from: its files, its dense network on the CPU, and the normalisation it declares."""

    folder: ModelFolder
    model: OnnxModel

    @classmethod
    def open(cls, path: Path) -> Base:
        folder = open_folder(path)
        if not folder.patch_model.is_file():
            raise FileNotFoundError(f"{folder.patch_model}: the base folder has no patch CNN to fine-tune from")
        return cls(folder, OnnxModel(folder.dense, providers=("CPUExecutionProvider",)))

    @property
    def normalisation(self) -> InputNormalisation | None:
        return self.model.meta.normalisation

    def lab_scale(self, microns_per_pixel: float | None) -> FieldScale:
        """The scale the lab's fields are read at (the base's when the lab's pixel size is not given).

        Raises:
            ValueError: a pixel size for a base that declares none (nothing to resample to).
        """
        model = ModelScale.load(self.folder.scale) if self.folder.scale is not None else None
        if microns_per_pixel is not None and model is None:
            raise ValueError(
                f"{self.folder.path}: the base declares no pixel size (scale.json): write it with python -m training "
                "pixel-size --model, or leave --microns-per-pixel out"
            )
        return resolve_scale(model, request=microns_per_pixel)

    def write_scale(self, out: Path, model_id: str) -> None:
        """The base's scale, for the fine-tuned model (trained at it)."""
        if self.folder.scale is None:
            return
        model = ModelScale.load(self.folder.scale)
        how = f"the base's ({self.folder.model_id}: {model.how}); fine-tuned at that scale"
        ModelScale(model_id, model.pixel_size_um, how, model.evidence).write(out)

    @property
    def filter_threshold(self) -> float | None:
        """The base filter's score threshold (None without a filter)."""
        from service.engine.object_filter import ObjectFilter

        path = self.folder.object_filter
        return float(ObjectFilter(path).meta.threshold) if path is not None else None


@dataclass(frozen=True)
class LabSplit:
    """Step 1: the lab's fields, split into fine-tune and held-out ones."""

    lab: LabData
    train: LabData
    held_out: LabData
    how: str

    @classmethod
    def of(cls, data: Path, held_out: Path | None, settings: FinetuneSettings) -> LabSplit:
        lab = read_lab(data)
        if held_out is not None:
            return cls(lab, lab, read_lab(held_out), f"held-out fields from {held_out}")
        train_ids, held_ids = split_by_field(lab.field_ids, settings.held_out_share, settings.seed)
        how = f"{len(held_ids)} of its {len(lab.field_ids)} fields held out at random (seed {settings.seed})"
        return cls(lab, lab.part(train_ids), lab.part(held_ids), how)


@dataclass(frozen=True)
class Patches:
    """Step 2: the lab's fine-tune patches (with its profile's hard negatives, when given), the replay patches and
    the held-out patches."""

    lab_train: PatchSet
    replay: PatchSet
    held_out: PatchSet
    profile_negatives: int = 0

    @classmethod
    def draw(
        cls,
        split: LabSplit,
        base: Base,
        replay: Replay,
        settings: FinetuneSettings,
        profile: LabProfile | None = None,
        negatives_root: Path | None = None,
    ) -> Patches:
        lab_train = split.train.patches(base.normalisation, settings.counts, settings.seed)
        hard = 0
        if profile is not None:
            more = profile_hard_negatives(
                profile, base.folder.model_id, base.normalisation, settings.seed, negatives_root
            )
            lab_train, hard = PatchSet.concatenate([lab_train, more], PATCH_SIZE), len(more)
        replayed = replay.patches(base.normalisation, len(lab_train), settings)
        held = split.held_out.patches(base.normalisation, settings.counts, settings.seed)
        return cls(lab_train, replayed, held, hard)


def _train(base: Base, patches: Patches, settings: FinetuneSettings) -> tuple[Any, dict[str, list[float]], int]:
    """Step 3: the base's patch CNN trained on the lab's and the replay patches; the best held-out epoch."""
    recipe = replace(get_recipe("augmented"), name="finetuned", learning_rate=settings.learning_rate)
    model = keras.models.load_model(base.folder.patch_model)
    reference = base.normalisation.reference if base.normalisation is not None else (255.0, 255.0, 255.0)
    history, best = fit_patches(
        model,
        PatchSet.concatenate([patches.lab_train, patches.replay], PATCH_SIZE),
        patches.held_out,
        recipe,
        settings.seed,
        settings.epochs,
        reference,
    )
    return model, history, best


def _calibrate_pixels(
    model: Any,
    out: Path,
    base: Base,
    split: LabSplit,
    replay: Replay,
    training_data: str,
    settings: FinetuneSettings,
    cache: Path,
) -> tuple[Any, dict[str, Any]]:
    """Step 4 (optional): Platt calibration of P(bacillus) on the held-out pixels, folded into the last layer."""
    uncalibrated = out / ".uncalibrated.onnx"
    export_onnx(model, uncalibrated, recipe="finetuned", training_data=training_data, validation_metrics={})
    tuned = OnnxModel(uncalibrated, providers=("CPUExecutionProvider",))
    z, y, w = split.held_out.pixels(tuned, settings.background_share, settings.seed, cache)
    if settings.pixel_calibration == "balanced":
        w = np.where(y, 0.5 / max(int(y.sum()), 1), 0.5 / max(int((~y).sum()), 1))
        weights = "both classes weighted equally"
    elif w is None:  # point-centred patches: weight the classes to the base lab's bacillus share
        share = bacillus_share(replay.lab(replay.split.validation), base.model, settings, cache)
        w = np.where(y, share / max(int(y.sum()), 1), (1 - share) / max(int((~y).sum()), 1))
        weights = f"classes weighted to the base lab's bacillus pixel share {share:.5f}"
    else:
        weights = "the held-out fields' own bacillus share"
    fit = fit_platt(z, y, w)
    uncalibrated.unlink()
    return fold_into_last_conv(model, fit), {
        "scale": round(fit.scale, 6),
        "shift": round(fit.shift, 6),
        "weights": weights,
        "ece_before": round(expected_calibration_error(expit(z), y, w), 6),
        "ece_after": round(expected_calibration_error(expit(fit.scale * z + fit.shift), y, w), 6),
    }


def _export_networks(
    model: Any, out: Path, base: Base, training_data: str, metrics: dict[str, object]
) -> tuple[dict[str, str], OnnxModel]:
    """Step 6, first part: the patch CNN and its dense network into the folder (the object filter learns from the
    dense network's candidates); returns the dense network's metadata and the network, loaded."""
    model.save(out / PATCH_KERAS)
    extra = {"base_model": base.folder.model_id}
    if base.normalisation is not None:
        extra["input_normalisation"] = base.normalisation.to_json()
    meta = export_onnx(
        model,
        out / DENSE_ONNX,
        recipe="finetuned",
        training_data=training_data,
        validation_metrics=metrics,
        extra=extra,
    )
    return meta, OnnxModel(out / DENSE_ONNX, providers=("CPUExecutionProvider",))


def _no_negative_rule(fit: FilterFit, base_threshold: float | None) -> FilterFit:
    """No negative field anywhere, none declared exhaustive: the out-of-fold rule keeps 95% of the boxes' candidates
    whatever the debris costs (measured on 4 phone-camera fields: 107 false components per field), so the threshold
    is raised to the base filter's, the one rule that was checked on negative fields."""
    if base_threshold is None or base_threshold <= fit.threshold:
        rule = "no negative field: the out-of-fold rule (the base has no higher filter threshold)"
        return replace(fit, cross_validation={**fit.cross_validation, "threshold_rule": rule})
    rule = (
        f"no negative field and no --exhaustive: the base filter's threshold {base_threshold:g} (the out-of-fold "
        f"{fit.threshold:g} keeps whatever debris the lab's fields hold); annotate negative fields to calibrate it"
    )
    figures = {**fit.cross_validation, "out_of_fold_threshold": fit.threshold, "threshold_rule": rule}
    return replace(fit, threshold=base_threshold, cross_validation=figures)


def _object_filter(
    out: Path,
    tuned: OnnxModel,
    split: LabSplit,
    replay: Replay,
    data: Path,
    settings: FinetuneSettings,
    cache: Path,
    base_threshold: float | None = None,
    mode: Mode = Mode.FAST,
) -> dict[str, Any] | None:
    """Step 5: the object filter refitted on the lab's and a few replay fields' candidates, its threshold
    recalibrated on the held-out fields; None when there is nothing to learn a filter from."""
    samples, negative = split.train.candidates(tuned, cache, mode)
    chosen = sorted(
        np.random.default_rng([settings.seed, 7]).choice(replay.split.train, settings.replay_filter_fields, False)
    )
    if chosen:
        more, more_negative = replay.lab(chosen).candidates(tuned, cache, mode)
        samples = ObjectSamples.concatenate([samples, more])
        negative = np.concatenate([negative, more_negative])
    try:
        fit = fit_filter(samples, TARGET_RECALL, settings.seed, negative)
    except ValueError as exc:  # e.g. no debris candidate at all: nothing to learn a filter from
        log.warning("no object filter: %s; the folder keeps every candidate", exc)
        return None
    held, held_negative = split.held_out.candidates(tuned, cache, mode)
    if (negative != "").any() or (held_negative != "").any():
        fit = held_out_threshold(fit, held, held_negative, settings.negative_budget)
    elif settings.exhaustive:  # every candidate off a box on a held-out field is debris
        off_box = np.where(held.labels == 0, held.fields, "").astype(str)
        fields = len(split.held_out.field_ids)
        fit = held_out_threshold(
            fit, held, off_box, settings.negative_budget, fields, "fields (annotated exhaustively)"
        )
    else:
        fit = _no_negative_rule(fit, base_threshold)
    written = export_filter(
        fit,
        out / OBJECT_FILTER_ONNX,
        dense_model_id=tuned.meta.model_id,
        candidate_threshold=THRESHOLD,
        min_object_px=MIN_OBJECT_PX,
        trained_on=f"{data.name}: {split.train.describe()}; {replay.root.name}: fields {' '.join(chosen)}",
    )
    return {
        "filter_id": written["filter_id"],
        "threshold": written["threshold"],
        "threshold_rule": fit.cross_validation["threshold_rule"],
        "out_of_fold_threshold": fit.cross_validation.get("out_of_fold_threshold", fit.threshold),
        "held_out_false_components_per_field": fit.cross_validation.get("held_out_false_bacilli_per_negative_field"),
        "candidates": len(samples),
        "replay_fields": [str(i) for i in chosen],
    }


def _megapixels(images: Sequence[tuple[str, Path]]) -> float:
    return sum(w * h for w, h in (image_size(path) for _, path in images)) / 1e6


def _estimate(labs: Sequence[LabData], pairs: tuple[Pair, Pair], mode: Mode, cache: Path) -> dict[str, Any]:
    """What the comparisons will cost, said before they start: the megapixels both models read, at the rate they
    read the first image of the largest set (timed now, and cached, so the comparison does not read it again)."""
    sizes = [(lab, _megapixels(lab.images())) for lab in labs]
    megapixels = sum(mp for _, mp in sizes)
    field_id, path = max(sizes, key=lambda s: s[1])[0].images()[0]
    probe = read_rgb(path)
    seconds, modes = 0.0, {}
    for pair in pairs:
        reader = HeatmapReader(OnnxModel(pair.model, providers=("CPUExecutionProvider",)), mode)
        started = time.perf_counter()
        reader.cached(field_id, probe, cache)
        seconds += time.perf_counter() - started
        modes[pair.name] = reader.mode.value
    per_megapixel = seconds / (probe.shape[0] * probe.shape[1] / 1e6)
    estimate = {
        "images": sum(len(lab.images()) for lab in labs),
        "megapixels": round(megapixels, 2),
        "modes": modes,
        "probe": str(path),
        "seconds_per_megapixel_both_models": round(per_megapixel, 3),
        "estimated_inference_seconds": round(megapixels * per_megapixel, 1),
    }
    log.info(
        "finetune: the comparisons read %d images (%.1f megapixels) with both models (%s): about %.0f min of "
        "inference (%.2f s per megapixel on %s), and their scoring; --no-znsm-test skips the ZNSM test split, "
        "--exact reads in exact mode",
        estimate["images"],
        megapixels,
        ", ".join(f"{name} in {m} mode" for name, m in modes.items()),
        estimate["estimated_inference_seconds"] / 60,
        per_megapixel,
        path.name,
    )
    return estimate


def _compare(
    clock: Stopwatch,
    pairs: tuple[Pair, Pair],
    split: LabSplit,
    test: Path | None,
    replay: Replay,
    znsm_test: bool,
    cache: Path,
    mode: Mode,
) -> tuple[dict[str, list[LabScores]], dict[str, Any]]:
    """Step 7: base and fine-tuned, each with its filter, on the held-out fields, the lab's test fields and the
    base lab's test split, read in ``mode``; and what they were estimated to cost before they started."""
    labs: dict[str, LabData] = {"lab held-out": split.held_out}
    if test is not None:
        labs["lab test"] = read_lab(test)
    if znsm_test and (replay.root / "images").is_dir():
        labs["znsm-test"] = replay.lab(replay.split.test)
    estimate = clock.run("comparison estimate", lambda: _estimate(list(labs.values()), pairs, mode, cache))
    steps = {"lab held-out": "held-out comparison", "lab test": "test comparison", "znsm-test": "ZNSM test comparison"}
    comparison: dict[str, list[LabScores]] = {}
    for name, lab in labs.items():
        comparison[name] = clock.run(steps[name], functools.partial(_scores, lab, pairs, cache, mode))
    return comparison, estimate


def _scores(lab: LabData, pairs: tuple[Pair, Pair], cache: Path, mode: Mode) -> list[LabScores]:
    return [lab.score(p, cache, mode) for p in pairs]


def _record(
    settings: FinetuneSettings, data: Path, split: LabSplit, replay: Replay, patches: Patches, filter_fields: list[str]
) -> dict[str, Any]:
    """What ``finetune.json`` says of the settings, the lab's fields, the replay and the patches."""
    return {
        "settings": {**asdict(settings), "counts": asdict(settings.counts)},
        "lab": {
            "root": str(data),
            "kind": split.lab.kind,
            "fine_tune": split.train.describe(),
            "held_out": split.held_out.describe(),
            "held_out_how": split.how,
            "fine_tune_fields": list(split.train.field_ids),
            "held_out_fields": list(split.held_out.field_ids),
        },
        "replay": {"data": str(replay.root), "patches": len(patches.replay), "filter_fields": filter_fields},
        "patches": {
            "lab_train": len(patches.lab_train),
            "lab_profile_hard_negatives": patches.profile_negatives,
            "replay": len(patches.replay),
            "held_out": len(patches.held_out),
        },
    }


def finetune(
    base_dir: Path,
    data: Path,
    out: Path,
    *,
    held_out: Path | None = None,
    test: Path | None = None,
    settings: FinetuneSettings = FinetuneSettings(),
    replay_data: Path = ZNSM_MS2,
    replay_split: Path = ZNSM_MS2_SPLIT,
    znsm_test: bool = True,
    cache: Path = DEFAULT_CACHE,
    command: str = "",
    lab_profile: Path | None = None,
    lab_negatives_root: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune the model of ``base_dir`` on the lab data in ``data`` into the model folder ``out``, in the seven
    steps of the module docstring (each a function here; the base lab's replay data read once); returns the record
    written to ``out/finetune.json``. With ``lab_profile`` (a lab folder or its ``profile.json``, made with the base
    model) the candidates the base made on the lab's confirmed-negative fields join the lab's patches as hard
    negatives (:mod:`training.fit.profile_negatives`; fields that moved are looked for under
    ``lab_negatives_root``).

    Raises:
        ModelContractError: ``base_dir`` is not a model folder.
        FileNotFoundError: the base folder has no ``patch_cnn.keras`` to start from.
        AnnotationError, ValueError: unreadable lab data (naming the file), or too few fields to split.
    """
    keras.utils.set_random_seed(settings.seed)
    clock = Stopwatch()
    started = time.perf_counter()
    base = Base.open(base_dir)
    replay = Replay.read(replay_data, replay_split)
    scale = base.lab_scale(settings.microns_per_pixel)
    data = rescaled_copy(data, scale.factor, cache)
    held_out = rescaled_copy(held_out, scale.factor, cache) if held_out is not None else None
    test = rescaled_copy(test, scale.factor, cache) if test is not None else None
    split = LabSplit.of(data, held_out, settings)  # 1
    profile = open_profile(lab_profile) if lab_profile is not None else None
    patches = clock.run(
        "patches", lambda: Patches.draw(split, base, replay, settings, profile, lab_negatives_root)
    )  # 2
    model, history, best = clock.run("training", lambda: _train(base, patches, settings))  # 3
    out.mkdir(parents=True, exist_ok=True)
    training_data = (
        f"{base.folder.model_id} fine-tuned on {data.name} ({split.train.describe()}), replay {replay_data.name}"
    )
    metrics: dict[str, object] = {
        "held_out_patch_loss": round(history["val_loss"][best], 5),
        "held_out_patch_accuracy": round(history["val_accuracy"][best], 5),
        "best_epoch": best + 1,
    }
    calibration: dict[str, Any] | None = None
    if settings.pixel_calibration != "none":  # 4
        model, calibration = clock.run(
            "calibration", lambda: _calibrate_pixels(model, out, base, split, replay, training_data, settings, cache)
        )
        metrics["calibration"] = calibration
    meta, tuned = _export_networks(model, out, base, training_data, metrics)  # 6: the object filter needs them
    clock.run("coarse network", lambda: write_coarse_network(out))  # 6: fast mode reads the lab's fields from here
    mode = Mode.EXACT if settings.exact else Mode.FAST
    filter_record = clock.run(
        "object filter",
        lambda: _object_filter(out, tuned, split, replay, data, settings, cache, base.filter_threshold, mode),
    )  # 5
    replay_filter_fields = filter_record.pop("replay_fields") if filter_record else []
    finetune_seconds = round(time.perf_counter() - started, 1)
    plot_curves(history, best, f"fine-tuned from {base.folder.model_id}: best epoch {best + 1}", out / "curves.png")
    pairs = (
        Pair("base", base.folder.dense, base.folder.object_filter),
        Pair("fine-tuned", out / DENSE_ONNX, out / OBJECT_FILTER_ONNX if filter_record else None),
    )
    comparison, estimate = _compare(clock, pairs, split, test, replay, znsm_test, cache, mode)  # 7
    record = {
        "model_id": meta["model_id"],
        "base_model_id": base.folder.model_id,
        "base_folder": str(base.folder.path),
        "command": command,
        **_record(settings, data, split, replay, patches, replay_filter_fields),
        "scale": {"lab_microns_per_pixel": scale.microns_per_pixel, "factor": scale.factor, "source": scale.source},
        "lab_profile": (
            {"lab_id": profile.lab_id, "version": profile.version, "path": str(lab_profile)} if profile else None
        ),
        "best_epoch": best + 1,
        "held_out_patch_loss": history["val_loss"][best],
        "history": history,
        "calibration": calibration,
        "filter": filter_record,
        "comparison": comparison,
        "comparison_estimate": estimate,
        "wall_seconds": clock.seconds,
        "finetune_seconds": finetune_seconds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__},
    }
    base.write_scale(out, meta["model_id"])
    (out / "finetune.json").write_text(json.dumps(record, indent=1, default=float) + "\n", encoding="utf-8")
    write_card(out, record)
    clock.run("fast networks", lambda: write_fast_networks(out, replay, split.train, split.held_out))  # 6, last part
    log.info(
        "fine-tuned %s → %s in %.0f s (comparisons %.0f s more); folder %s",
        base.folder.model_id,
        meta["model_id"],
        finetune_seconds,
        sum(v for k, v in clock.seconds.items() if "comparison" in k),
        out,
    )
    return record
