"""Training the patch CNN on the fixed split: patches → Keras model, JSON log and curves.

``train_recipe`` samples the train and validation fields of the split with the recipe's sampler, trains
with SGD and exponential decay, keeps the weights of the epoch with the lowest validation loss, and writes
``model.keras``, ``train_log.json`` and ``curves.png`` into the run folder.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tqdm import tqdm

from service.engine.model import OnnxModel
from service.engine.normalisation import METHODS, InputNormalisation
from training.data.box_masks import MaskDerivation, PixelClass, label_map
from training.data.dataset import FieldFiles, discover_fields, read_annotation, read_rgb
from training.data.hard_negatives import negative_pools
from training.data.sampling import PATCH_SIZE, PatchSet, SamplerConfig, extract_patches, field_rng, sample_field
from training.data.split import DatasetSplit
from training.data.ufam import UfamSet, photographed, read_ufam, sample_ufam
from training.evaluation.heatmap_cache import cached_heatmap
from training.fit.lab_augment import SOURCE_PATCH_PX, augment_labs, centre_crop
from training.fit.recipes import Recipe
from training.fit.train_log import TrainLog, UfamRecord, write_log
from training.model.patch_cnn import INPUT_SCALE, build_patch_cnn
from training.paths import DEFAULT_CACHE, UFAM_DDS1, UFAM_DDS1_SPLIT

log = logging.getLogger(__name__)


def patch_size(recipe: Recipe) -> int:
    """The side of the stored patches: larger than the receptive field when the lab augmentation zooms and rotates."""
    return SOURCE_PATCH_PX if recipe.lab_augmentation else PATCH_SIZE


def reference_normalisation(
    recipe: Recipe, fields: dict[str, FieldFiles], train_ids: tuple[str, ...]
) -> InputNormalisation | None:
    """The recipe's field normalisation, its reference background the median background of the train fields of
    the reference lab (ZNSM-iDB), and for ``background-od`` their median stain density."""
    if recipe.normalisation is None:
        return None
    probe = InputNormalisation(METHODS[recipe.normalisation], (255.0, 255.0, 255.0))
    backgrounds, densities = [], []
    for fid in train_ids:
        image = read_rgb(fields[fid].image)
        background = probe.background(image)
        backgrounds.append(background)
        densities.append(probe.stain_density(image, background) or 0.0)
    median = np.median(np.stack(backgrounds), axis=0)
    return InputNormalisation(
        probe.method,
        (float(median[0]), float(median[1]), float(median[2])),
        reference_density=float(np.median(densities)) if probe.method == "background-od" else 0.0,
    )


def sample_split(
    fields: dict[str, FieldFiles],
    ids: tuple[str, ...],
    recipe: Recipe,
    seed: int,
    desc: str,
    normalisation: InputNormalisation | None = None,
) -> PatchSet:
    """Patches of the fields ``ids`` drawn with the recipe's sampler (labels from the field as photographed,
    pixels from the normalised field when the recipe normalises)."""
    config = SamplerConfig(
        patch_size=patch_size(recipe),
        positives_per_field=recipe.positives_per_field,
        negatives_per_field=recipe.negatives_per_field,
    )
    parts = []
    for fid in tqdm(ids, desc=desc, unit="field", file=sys.stderr):
        annotation = read_annotation(fields[fid])
        image = read_rgb(fields[fid].image)
        labels = label_map(annotation, image, MaskDerivation())
        pools = None
        if recipe.hard_negative_shares:
            masks = negative_pools(image, labels, annotation)
            pools = {name: (masks[name], share) for name, share in recipe.hard_negative_shares.items()}
        pixels = normalisation.apply(image) if normalisation is not None else image
        parts.append(sample_field(fid, pixels, labels, seed, config, pools))
    return PatchSet.concatenate(parts, config.patch_size)


MINED_P = 0.5


def mined_patches(
    model: OnnxModel,
    field_id: str,
    image: npt.NDArray[np.uint8],
    allowed: npt.NDArray[np.bool_],
    count: int,
    seed: int,
    size: int,
    pixels: npt.NDArray[np.uint8],
    cache: Path = DEFAULT_CACHE,
) -> PatchSet:
    """``count`` negative patches centred among ``model``'s detections (P > 0.5) where ``allowed`` (background),
    cut from ``pixels`` (the field as the recipe feeds it). Heatmaps come from the cache when there."""
    heatmap, _ = cached_heatmap(model, field_id, image, cache)
    pool = np.flatnonzero(((heatmap > MINED_P) & allowed).ravel())
    if pool.size == 0 or count == 0:
        return PatchSet.concatenate([], size)
    rng = field_rng(seed + 1, field_id)
    index = rng.choice(pool, count, replace=pool.size < count)
    centres = np.stack(np.unravel_index(index, heatmap.shape), axis=1).astype(np.int32)
    return PatchSet(
        extract_patches(pixels, centres, size), np.zeros(count, np.uint8), np.full(count, field_id), centres
    )


def mine_negatives(
    model: OnnxModel,
    fields: dict[str, FieldFiles],
    ids: tuple[str, ...],
    ufam: UfamSet | None,
    recipe: Recipe,
    seed: int,
    normalisation: InputNormalisation | None,
) -> PatchSet:
    """Negatives among ``model``'s false positives: on the ZNSM fields ``ids`` (outside the bacillus and ignored
    pixels) and on the negative fields of ``ufam`` (anywhere off the interpolated rows)."""
    size, count = patch_size(recipe), recipe.mined_negatives_per_field
    parts = []
    for fid in tqdm(ids, desc="mined negatives (ZNSM)", unit="field", file=sys.stderr):
        image = read_rgb(fields[fid].image)
        labels = label_map(read_annotation(fields[fid]), image, MaskDerivation())
        pixels = normalisation.apply(image) if normalisation is not None else image
        parts.append(mined_patches(model, fid, image, labels == PixelClass.BACKGROUND, count, seed, size, pixels))
    for f in tqdm(ufam.negatives if ufam else (), desc="mined negatives (UFAM)", unit="field", file=sys.stderr):
        image = read_rgb(f.path)
        allowed = photographed(image.shape)
        pixels = normalisation.apply(image) if normalisation is not None else image
        parts.append(mined_patches(model, f.field_id, image, allowed, count, seed, size, pixels))
    return PatchSet.concatenate(parts, size)


def sample_ufam_split(
    ufam: UfamSet, slides: tuple[str, ...], recipe: Recipe, seed: int, normalisation: InputNormalisation | None
) -> PatchSet:
    return sample_ufam(
        ufam.of_slides(slides),
        normalisation,
        seed,
        positive_draws=recipe.ufam_positive_draws,
        negatives_per_field=recipe.ufam_negatives_per_field,
        patch_size=patch_size(recipe),
    )


def augment(
    patches: npt.NDArray[np.uint8], rng: np.random.Generator, rotate_flip: bool, colour_jitter: bool
) -> npt.NDArray[np.float32]:
    """Scale patches to [0, 1] and, as asked, rotate/flip them and jitter their colour.

    Colour jitter: per-channel gain 0.8-1.2 (white balance, stain hue), gamma 0.8-1.25, contrast 0.8-1.2
    about the patch mean, brightness ±0.08. Rotations and flips keep the centre pixel in place.
    """
    x = patches.astype(np.float32) * np.float32(INPUT_SCALE)
    n = x.shape[0]
    if rotate_flip:
        turns = np.asarray(rng.integers(0, 4, size=n), dtype=np.int64)
        flips = np.asarray(rng.random(size=n) < 0.5, dtype=bool)
        for i in range(n):
            x[i] = np.rot90(x[i][:, ::-1] if flips[i] else x[i], turns[i])
    if colour_jitter:
        shape = (n, 1, 1)
        x = x ** rng.uniform(0.8, 1.25, (*shape, 1)).astype(np.float32)
        x = x * rng.uniform(0.8, 1.2, (*shape, 3)).astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x = (x - mean) * rng.uniform(0.8, 1.2, (*shape, 1)).astype(np.float32) + mean
        x = np.clip(x + rng.uniform(-0.08, 0.08, (*shape, 1)).astype(np.float32), 0.0, 1.0)
    return x


class PatchBatches(keras.utils.PyDataset):
    """Shuffled, optionally augmented batches; epoch e uses generators seeded by (seed, e), so runs repeat."""

    def __init__(
        self,
        patches: PatchSet,
        batch_size: int,
        seed: int,
        recipe: Recipe | None,
        reference_rgb: tuple[float, float, float] = (255.0, 255.0, 255.0),
    ) -> None:
        super().__init__()
        self.patches, self.batch_size, self.seed, self.recipe = patches, batch_size, seed, recipe
        self.reference_rgb = reference_rgb
        self.epoch = 0
        self._order = self._shuffle()

    def _shuffle(self) -> npt.NDArray[np.intp]:
        if self.recipe is None:  # validation: fixed order
            return np.arange(len(self.patches))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.patches))

    def __len__(self) -> int:
        return math.ceil(len(self.patches) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        batch = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.recipe is None:
            x = centre_crop(self.patches.patches[batch]).astype(np.float32) * np.float32(INPUT_SCALE)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if self.recipe.lab_augmentation:
                x = augment_labs(self.patches.patches[batch], rng, self.reference_rgb)
            else:
                x = augment(self.patches.patches[batch], rng, self.recipe.rotate_flip, self.recipe.colour_jitter)
        return x, self.patches.labels[batch]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._shuffle()


class KeepBest(keras.callbacks.Callback):
    """Remembers the weights of the epoch with the lowest validation loss and restores them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.best_loss, self.best_epoch, self.best_weights = math.inf, -1, None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        loss = (logs or {}).get("val_loss", math.inf)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_weights = loss, epoch, self.model.get_weights()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def plot_curves(history: dict[str, list[float]], best_epoch: int, title: str, path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, with the chosen epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in (
        (axes[0], "loss", "loss (cross-entropy + L2)"),
        (axes[1], "accuracy", "patch accuracy"),
    ):
        ax.plot(epochs, history[key], label="train")
        ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.axvline(best_epoch + 1, color="grey", linestyle="--", label=f"chosen epoch {best_epoch + 1}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fit_patches(
    model: keras.Model,
    train: PatchSet,
    validation: PatchSet,
    recipe: Recipe,
    seed: int,
    epochs: int,
    reference_rgb: tuple[float, float, float] = (255.0, 255.0, 255.0),
) -> tuple[dict[str, list[float]], int]:
    """Train ``model`` in place on ``train`` with the recipe's augmentation, SGD and decay; keep the weights of the
    epoch with the lowest loss on ``validation``. Returns the history and the 0-based epoch kept."""
    batches = PatchBatches(train, recipe.batch_size, seed, recipe, reference_rgb)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        recipe.learning_rate, decay_steps=len(batches), decay_rate=recipe.decay_per_epoch, staircase=True
    )
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=recipe.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    keep = KeepBest()
    fit = model.fit(
        batches,
        validation_data=PatchBatches(validation, 512, seed, None),
        epochs=epochs,
        callbacks=[keep],
        verbose=1 if sys.stderr.isatty() else 2,
    )
    return {k: [float(v) for v in vs] for k, vs in fit.history.items()}, keep.best_epoch


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_recipe(
    data: Path,
    split_path: Path,
    recipe: Recipe,
    out: Path,
    seed: int = 0,
    epochs: int | None = None,
    *,
    ufam_data: Path = UFAM_DDS1,
    ufam_split_path: Path = UFAM_DDS1_SPLIT,
    init: Path | None = None,
    mine: Path | None = None,
) -> TrainLog:
    """Train ``recipe`` on the split's train fields, choose the epoch on its validation fields, write the run.

    Multi-lab recipes add the UFAM slides of ``ufam_split_path``'s train (and validation) part; ``init`` starts
    from the weights of a saved patch model (same architecture) instead of random ones; ``mine`` (a dense ONNX
    model) adds the recipe's ``mined_negatives_per_field`` among that model's false positives on the training
    fields (:func:`mine_negatives`).

    Returns:
        the JSON log that was written.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    split.check_covers(set(fields))
    normalisation = reference_normalisation(recipe, fields, split.train)
    train = sample_split(fields, split.train, recipe, seed, "patches (train)", normalisation)
    validation = sample_split(fields, split.validation, recipe, seed, "patches (validation)", normalisation)
    ufam_record: UfamRecord | None = None
    if "ufam-dds1" in recipe.labs:
        ufam, ufam_split = read_ufam(ufam_data), DatasetSplit.load(ufam_split_path)
        ufam_split.check_covers(set(ufam.slides))
        ufam_train = sample_ufam_split(ufam, ufam_split.train, recipe, seed, normalisation)
        ufam_validation = sample_ufam_split(ufam, ufam_split.validation, recipe, seed, normalisation)
        train = PatchSet.concatenate([train, ufam_train], patch_size(recipe))
        validation = PatchSet.concatenate([validation, ufam_validation], patch_size(recipe))
        ufam_record = {
            "data": str(ufam_data),
            "split": str(ufam_split_path),
            "train_slides": list(ufam_split.train),
            "validation_slides": list(ufam_split.validation),
            "train_patches": len(ufam_train),
            "validation_patches": len(ufam_validation),
        }
    mined = 0
    if recipe.mined_negatives_per_field:
        if mine is None:
            raise ValueError(f"recipe {recipe.name} mines negatives: name the model to mine with (--mine MODEL.onnx)")
        miner = OnnxModel(mine, providers=("CPUExecutionProvider",))
        mined_ufam = None
        if "ufam-dds1" in recipe.labs:
            mined_ufam = read_ufam(ufam_data).of_slides(DatasetSplit.load(ufam_split_path).train)
        extra = mine_negatives(miner, fields, split.train, mined_ufam, recipe, seed, normalisation)
        mined = len(extra)
        train = PatchSet.concatenate([train, extra], patch_size(recipe))
    sampled = time.perf_counter()

    model = build_patch_cnn(l2=recipe.l2, seed=seed)
    if init is not None:
        model.set_weights(keras.models.load_model(init).get_weights())
    reference = normalisation.reference if normalisation is not None else (255.0, 255.0, 255.0)
    history, best = fit_patches(model, train, validation, recipe, seed, epochs or recipe.epochs, reference)
    trained = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    record: TrainLog = {
        "recipe": {
            "name": recipe.name,
            "summary": recipe.summary,
            "positives_per_field": recipe.positives_per_field,
            "negatives_per_field": recipe.negatives_per_field,
            "hard_negative_shares": dict(recipe.hard_negative_shares),
            "rotate_flip": recipe.rotate_flip,
            "colour_jitter": recipe.colour_jitter,
            "calibrate": recipe.calibrate,
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "learning_rate": recipe.learning_rate,
            "decay_per_epoch": recipe.decay_per_epoch,
            "momentum": recipe.momentum,
            "l2": recipe.l2,
            "labs": list(recipe.labs),
            "normalisation": recipe.normalisation,
            "lab_augmentation": recipe.lab_augmentation,
            "ufam_positive_draws": recipe.ufam_positive_draws,
            "ufam_negatives_per_field": recipe.ufam_negatives_per_field,
            "mined_negatives_per_field": recipe.mined_negatives_per_field,
        },
        "seed": seed,
        "data": str(data),
        "split": str(split_path),
        "train_fields": list(split.train),
        "validation_fields": list(split.validation),
        "patches": {
            "train": len(train),
            "validation": len(validation),
            "train_bacillus": int(train.labels.sum()),
            "validation_bacillus": int(validation.labels.sum()),
        },
        "epochs_run": len(history["loss"]),
        "best_epoch": best + 1,
        "validation_metrics": {"loss": history["val_loss"][best], "accuracy": history["val_accuracy"][best]},
        "history": history,
        "wall_seconds": {
            "sampling": round(sampled - started, 1),
            "training": round(trained - sampled, 1),
            "total": round(trained - started, 1),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }
    if normalisation is not None:
        record["input_normalisation"] = normalisation.to_json()
    if ufam_record is not None:
        record["ufam"] = ufam_record
    if init is not None:
        record["initialised_from"] = {"path": str(init), "sha256": _sha256(init)}
    if recipe.mined_negatives_per_field and mine is not None:
        record["mined_from"] = {"path": str(mine), "model_id": miner.meta.model_id, "patches": str(mined)}
    write_log(out, record)
    plot_curves(history, best, f"recipe {recipe.name}: best epoch {best + 1}", out / "curves.png")
    log.info(
        "recipe %s: best epoch %d, validation loss %.4f accuracy %.4f; %.0f s; written to %s",
        recipe.name,
        best + 1,
        history["val_loss"][best],
        history["val_accuracy"][best],
        trained - started,
        out,
    )
    return record
