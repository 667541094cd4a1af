"""The shape of a run's ``train_log.json`` (written by :mod:`training.fit.train`, extended by calibration), for the
code that reads it back: export (:mod:`training.fit.runs`) and the model card (:mod:`training.fit.shipping`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NotRequired, TypedDict


class RecipeRecord(TypedDict):
    """A :class:`training.fit.recipes.Recipe` as recorded."""

    name: str
    summary: str
    positives_per_field: int
    negatives_per_field: int
    hard_negative_shares: dict[str, float]
    rotate_flip: bool
    colour_jitter: bool
    calibrate: bool
    epochs: int
    batch_size: int
    learning_rate: float
    decay_per_epoch: float
    momentum: float
    l2: float
    labs: NotRequired[list[str]]
    normalisation: NotRequired[str | None]
    lab_augmentation: NotRequired[bool]
    ufam_positive_draws: NotRequired[int]
    ufam_negatives_per_field: NotRequired[int]
    mined_negatives_per_field: NotRequired[int]


class UfamRecord(TypedDict):
    """The second lab's part of a multi-lab run."""

    data: str
    split: str
    train_slides: list[str]
    validation_slides: list[str]
    train_patches: int
    validation_patches: int


class PatchCounts(TypedDict):
    train: int
    validation: int
    train_bacillus: int
    validation_bacillus: int


class WallSeconds(TypedDict):
    sampling: float
    training: float
    total: float


class Machine(TypedDict):
    cpus: int | None
    platform: str
    tensorflow: str
    keras: str


class Calibration(TypedDict):
    scale: float
    shift: float
    validation_pixel_nll_before: float
    validation_pixel_nll_after: float
    validation_pixel_ece_before: float
    validation_pixel_ece_after: float


class TrainLog(TypedDict):
    recipe: RecipeRecord
    seed: int
    data: str
    split: str
    train_fields: list[str]
    validation_fields: list[str]
    patches: PatchCounts
    epochs_run: int
    best_epoch: int
    validation_metrics: dict[str, float]  # loss, accuracy of the chosen epoch
    history: dict[str, list[float]]
    wall_seconds: WallSeconds
    machine: Machine
    calibrated_from: NotRequired[str]
    calibrated_on: NotRequired[str]
    calibration: NotRequired[Calibration]
    input_normalisation: NotRequired[str]  # the JSON the export writes into the model's metadata
    ufam: NotRequired[UfamRecord]
    initialised_from: NotRequired[dict[str, str]]  # path and sha256 of the weights a run started from
    mined_from: NotRequired[dict[str, str]]  # the model whose false positives were mined, and how many patches


def read_log(run: Path) -> TrainLog:
    """A run folder's ``train_log.json``."""
    log: TrainLog = json.loads((run / "train_log.json").read_text(encoding="utf-8"))
    return log


def write_log(run: Path, log: TrainLog) -> None:
    (run / "train_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
