"""Train / validation / test split by field, fixed in a JSON file kept in the repository.

A field is in exactly one split, so no pixel of a test field is ever seen in training, not even in a
validation patch. The split is stratified by the number of bacillus boxes per field, so that sparse and
crowded fields are in every split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.data.annotations import BoxLabel
from training.data.dataset import discover_fields, field_sort_key, read_annotation


def _numeric_first(ids: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(ids, key=field_sort_key))


@dataclass(frozen=True)
class DatasetSplit:
    """Field ids in each split, and how the split was made."""

    dataset: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    method: str = ""

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name in ("train", "validation", "test"):
            for field_id in getattr(self, name):
                if field_id in seen:
                    raise ValueError(f"field {field_id!r} is in both {seen[field_id]} and {name}")
                seen[field_id] = name

    @property
    def all_ids(self) -> frozenset[str]:
        return frozenset((*self.train, *self.validation, *self.test))

    def subset(self, name: str) -> tuple[str, ...]:
        """The ids of ``train``, ``validation`` or ``test``."""
        if name not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {name!r}: expected train, validation or test")
        ids: tuple[str, ...] = getattr(self, name)
        return ids

    def check_covers(self, field_ids: set[str] | frozenset[str]) -> None:
        """Raise ValueError unless the split names exactly ``field_ids``."""
        missing, extra = set(field_ids) - self.all_ids, self.all_ids - set(field_ids)
        if missing or extra:
            raise ValueError(
                f"split of {self.dataset!r} does not match the data set: "
                f"not in the split {sorted(missing)}, not in the data set {sorted(extra)}"
            )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def load(path: Path) -> DatasetSplit:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return DatasetSplit(
            dataset=raw["dataset"],
            train=tuple(raw["train"]),
            validation=tuple(raw["validation"]),
            test=tuple(raw["test"]),
            method=raw.get("method", ""),
        )


def _one_per_stratum(ordered: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """Cut ``ordered`` into ``k`` consecutive strata of near-equal size and draw one id from each."""
    if k <= 0:
        return []
    return [str(rng.choice(stratum)) for stratum in np.array_split(np.array(ordered), k) if stratum.size]


def make_split(
    bacilli_per_field: Mapping[str, int],
    dataset: str,
    test_fraction: float = 0.3,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetSplit:
    """Split fields into train / validation / test, stratified by their number of bacillus boxes.

    Args:
        bacilli_per_field: field id → number of ``single bacillus`` + ``bacilli cluster`` boxes.
        dataset: a name for the data set, recorded in the split.
        test_fraction: share of all fields held out for test (rounded to a whole field).
        validation_fraction: share of the remaining fields for validation (rounded up, at least one).
        seed: seed of the draw within each stratum.
    """
    ids = sorted(bacilli_per_field, key=lambda i: (bacilli_per_field[i], i))
    if len(ids) < 3:
        raise ValueError(f"need at least 3 fields to split, got {len(ids)}")
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_fraction * len(ids)))
    test = _one_per_stratum(ids, n_test, rng)
    rest = [i for i in ids if i not in test]
    n_validation = max(1, math.ceil(validation_fraction * len(rest)))
    validation = _one_per_stratum(rest, n_validation, rng)
    train = [i for i in rest if i not in validation]
    return DatasetSplit(
        dataset=dataset,
        train=_numeric_first(train),
        validation=_numeric_first(validation),
        test=_numeric_first(test),
        method=(
            f"stratified by bacillus boxes per field: test {test_fraction:g} of all fields, validation "
            f"{validation_fraction:g} of the rest (rounded up), one field drawn per stratum, seed {seed}"
        ),
    )


def split_dataset(
    data: Path,
    out: Path,
    test_fraction: float = 0.3,
    validation_fraction: float = 0.1,
    seed: int = 0,
    force: bool = False,
) -> tuple[DatasetSplit, dict[str, int]]:
    """Split a data set folder's fields (stratified by their bacillus boxes) and save the split to ``out``.

    Returns:
        the split and the bacillus boxes of each field.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is not given (shipped splits are fixed).
    """
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; the shipped split is fixed. Use --force to overwrite it.")
    counts = {
        files.field_id: len(read_annotation(files).boxes_with(BoxLabel.SINGLE_BACILLUS, BoxLabel.BACILLI_CLUSTER))
        for files in discover_fields(data)
    }
    split = make_split(
        counts, dataset=data.name, test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed
    )
    split.save(out)
    return split, counts
