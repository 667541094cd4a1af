"""A lab's own annotated data, as fine-tuning uses it: fields with boxes, points or masks, or a UFAM-style set.

Two layouts, one interface (:class:`LabData`):

* :class:`FieldLab`: whole fields in any layout :func:`training.data.dataset.discover_fields` reads (ZNSM CSV, VOC
  XML, points CSV, masks); a field whose annotation lists no bacillus is a *negative field*;
* :class:`PatchLab`: the UFAM layout (``negatives/`` fields and ``positives/`` point-centred patches,
  :mod:`training.data.ufam`).

Each can be split by field (:meth:`LabData.part`), sampled into training patches, give calibration pixels and
object-filter candidates for a model, and score a model with its filter the way the evaluation does.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TypedDict

import numpy as np
import numpy.typing as npt

from service.engine.model import OnnxModel
from service.engine.modes import Mode
from service.engine.normalisation import InputNormalisation
from training.data.box_masks import MaskDerivation, label_map
from training.data.dataset import FieldFiles, discover_fields, read_annotation, read_rgb
from training.data.sampling import PATCH_SIZE, PatchSet, SamplerConfig, sample_field
from training.data.split import DatasetSplit
from training.data.ufam import UfamSet, read_ufam, sample_ufam
from training.evaluation.labs import Pair, evaluate_ufam, negative_slide
from training.fit.runs import field_pixels, ufam_pixels
from training.objects.samples import ObjectSamples, collect_samples, collect_ufam_samples


class LabScores(TypedDict):
    """A model (and its filter) on a part of a lab's data."""

    name: str
    mode: str  # the engine mode the fields were read in (fast: the service's default; exact on request)
    model_id: str
    filter_id: str | None
    positives: int
    found: int
    recall: float
    precision: float | None
    network_at_points: float | None  # share of point-centred patches where P(bacillus) > 0.5 at the point
    negative_fields: int
    false_bacilli_per_negative_field: float
    false_components_per_field: float | None  # kept objects off every box, per field (annotated fields only)
    negative_slide_grade: str


@dataclass(frozen=True)
class PatchCounts:
    """How many patches to draw: per annotated field (or per positive point) and per negative field."""

    positives_per_field: int = 150
    negatives_per_field: int = 150
    positive_draws: int = 3
    negatives_per_negative_field: int = 200


class LabData(Protocol):
    @property
    def root(self) -> Path: ...

    @property
    def field_ids(self) -> tuple[str, ...]: ...

    @property
    def kind(self) -> str: ...

    def part(self, ids: tuple[str, ...]) -> Self: ...

    def describe(self) -> str: ...

    def images(self) -> list[tuple[str, Path]]: ...

    def patches(self, normalisation: InputNormalisation | None, counts: PatchCounts, seed: int) -> PatchSet: ...

    def pixels(
        self, model: OnnxModel, background_share: float, seed: int, cache: Path
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64] | None]: ...

    def candidates(
        self, model: OnnxModel, cache: Path, mode: Mode = Mode.FAST
    ) -> tuple[ObjectSamples, npt.NDArray[np.str_]]: ...

    def score(self, pair: Pair, cache: Path, mode: Mode = Mode.FAST) -> LabScores: ...


@dataclass(frozen=True)
class FieldLab:
    """Whole annotated fields (boxes, points or masks); fields without a bacillus are negative fields."""

    root: Path
    fields: tuple[FieldFiles, ...]

    @property
    def field_ids(self) -> tuple[str, ...]:
        return tuple(f.field_id for f in self.fields)

    @property
    def kind(self) -> str:
        return f"fields ({self.fields[0].kind.value})" if self.fields else "fields"

    @property
    def negative_ids(self) -> frozenset[str]:
        return frozenset(f.field_id for f in self.fields if not read_annotation(f).boxes)

    def part(self, ids: tuple[str, ...]) -> FieldLab:
        wanted = set(ids)
        return FieldLab(self.root, tuple(f for f in self.fields if f.field_id in wanted))

    def images(self) -> list[tuple[str, Path]]:
        """Every image a comparison reads, with its field id."""
        return [(f.field_id, f.image) for f in self.fields]

    def describe(self) -> str:
        negatives = len(self.negative_ids)
        boxes = sum(len(read_annotation(f).boxes) for f in self.fields)
        return f"{len(self.fields)} fields ({negatives} negative), {boxes} annotated objects"

    def patches(self, normalisation: InputNormalisation | None, counts: PatchCounts, seed: int) -> PatchSet:
        config = SamplerConfig(
            patch_size=PATCH_SIZE,
            positives_per_field=counts.positives_per_field,
            negatives_per_field=counts.negatives_per_field,
        )
        parts = []
        for files in self.fields:
            image = read_rgb(files.image)
            labels = label_map(read_annotation(files), image, MaskDerivation())
            pixels = normalisation.apply(image) if normalisation is not None else image
            parts.append(sample_field(files.field_id, pixels, labels, seed, config))
        return PatchSet.concatenate(parts, PATCH_SIZE)

    def pixels(
        self, model: OnnxModel, background_share: float, seed: int, cache: Path
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64] | None]:
        return field_pixels(model, list(self.fields), background_share, seed, cache)

    def candidates(
        self, model: OnnxModel, cache: Path, mode: Mode = Mode.FAST
    ) -> tuple[ObjectSamples, npt.NDArray[np.str_]]:
        samples = collect_samples(model, list(self.fields), cache=cache, mode=mode)
        negative = np.isin(samples.fields, list(self.negative_ids))
        return samples, np.where(negative, samples.fields, "").astype(str)

    def score(self, pair: Pair, cache: Path, mode: Mode = Mode.FAST) -> LabScores:
        from training.evaluation.evaluate import evaluate

        with tempfile.TemporaryDirectory() as tmp:
            split = Path(tmp) / "split.json"
            rest = [f.field_id for f in discover_fields(self.root) if f.field_id not in set(self.field_ids)]
            DatasetSplit(self.root.name, tuple(rest), (), self.field_ids, "held out by finetune").save(split)
            report = evaluate(
                self.root,
                Path(tmp) / "eval",
                model=pair.model,
                object_filter=pair.object_filter,
                split_path=split,
                subset="test",
                baseline=False,
                patch_model=None,
                gallery=False,
                cache=cache,
                mode=mode,
                sweep=False,
            )
        methods = report["methods"]
        method = next((m for m in methods if m.get("filter_id")), methods[0])
        b = method["bacillus"]
        negatives = [f for f, scores in method["per_field"].items() if scores["boxes"] == 0]
        every = [s["bacillus"]["false_positives"] for s in method["per_field"].values()]
        per_field = (
            float(np.mean([method["per_field"][f]["bacillus"]["false_positives"] for f in negatives]))
            if negatives
            else math.nan
        )
        return {
            "name": pair.name,
            "mode": report["inference"].get("mode", "exact"),
            "model_id": report["model_id"],
            "filter_id": method.get("filter_id"),
            "positives": int(b["boxes"]),
            "found": int(b["found"]),
            "recall": float(b["recall"]),
            "precision": float(b["precision"]),
            "network_at_points": None,
            "negative_fields": len(negatives),
            "false_bacilli_per_negative_field": per_field,
            "false_components_per_field": round(float(np.mean(every)), 3) if every else None,
            "negative_slide_grade": negative_slide(per_field)["grade_expected"] if negatives else "n/a",
        }


@dataclass(frozen=True)
class PatchLab:
    """A UFAM-style lab: negative fields and point-centred positive patches, split by the field they came from."""

    data: UfamSet

    @property
    def root(self) -> Path:
        return self.data.root

    @property
    def field_ids(self) -> tuple[str, ...]:
        return self.data.field_ids

    @property
    def kind(self) -> str:
        return "negative fields + point-centred patches (UFAM layout)"

    def part(self, ids: tuple[str, ...]) -> PatchLab:
        return PatchLab(self.data.of_fields(ids))

    def images(self) -> list[tuple[str, Path]]:
        """Every image a comparison reads, with its id: the negative fields, then the positive patches."""
        return [(n.field_id, n.path) for n in self.data.negatives] + [(p.patch_id, p.path) for p in self.data.positives]

    def describe(self) -> str:
        positive_fields = len({p.field for p in self.data.positives})
        return (
            f"{len(self.data.positives)} bacilli marked as points in {positive_fields} fields, "
            f"{len(self.data.negatives)} negative fields (slides {' '.join(self.data.slides)})"
        )

    def patches(self, normalisation: InputNormalisation | None, counts: PatchCounts, seed: int) -> PatchSet:
        return sample_ufam(
            self.data,
            normalisation,
            seed,
            positive_draws=counts.positive_draws,
            negatives_per_field=counts.negatives_per_negative_field,
            patch_size=PATCH_SIZE,
        )

    def pixels(
        self, model: OnnxModel, background_share: float, seed: int, cache: Path
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64] | None]:
        z, y = ufam_pixels(model, self.data, background_share, seed, cache)
        return z, y, None  # patches do not tell a field's bacillus share: the caller weights the classes

    def candidates(
        self, model: OnnxModel, cache: Path, mode: Mode = Mode.FAST
    ) -> tuple[ObjectSamples, npt.NDArray[np.str_]]:
        return collect_ufam_samples(model, self.data, cache=cache, mode=mode)

    def score(self, pair: Pair, cache: Path, mode: Mode = Mode.FAST) -> LabScores:
        report = evaluate_ufam(pair, self.data, self.root.name, mode=mode)
        per_field = report["false_bacilli_per_field"]
        return {
            "name": pair.name,
            "mode": report["mode"],
            "model_id": report["model_id"],
            "filter_id": report["filter_id"],
            "positives": report["positives"],
            "found": report["found_at_centre"],
            "recall": report["recall_at_centre"],
            "precision": None,
            "network_at_points": report["centre_p_above_0_5"],
            "negative_fields": report["negative_fields"],
            "false_bacilli_per_negative_field": per_field,
            "false_components_per_field": None,
            "negative_slide_grade": report["negative_slide"]["grade_expected"],
        }


def read_lab(root: Path) -> LabData:
    """The lab data in ``root``: the UFAM layout when it has ``negatives/`` or ``positives/``, else fields.

    Raises:
        AnnotationError or ValueError: as the readers, naming the file.
    """
    if (root / "negatives").is_dir() or (root / "positives").is_dir():
        return PatchLab(read_ufam(root))
    return FieldLab(root, tuple(discover_fields(root)))


def split_by_field(ids: tuple[str, ...], held_out_share: float, seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A seeded split of field ids into (fine-tune, held-out), at least one in each.

    Raises:
        ValueError: fewer than two fields.
    """
    if len(ids) < 2:
        raise ValueError(f"{len(ids)} field(s): fine-tuning needs at least 2 (one to train on, one held out)")
    count = min(max(1, round(held_out_share * len(ids))), len(ids) - 1)
    held = set(np.random.default_rng([seed, 13]).choice(sorted(ids), count, replace=False).tolist())
    return tuple(i for i in ids if i not in held), tuple(i for i in ids if i in held)
