"""Lab profiles: what one lab's own data showed about a model (``labs/<lab_id>/profile.json``).

A lab is one microscope, camera and stain routine. Its profile (written by ``python -m training lab-profile``) says
which model (and object filter) it validated, the microscope's pixel size when known, and what the lab's own data
showed: on its **confirmed-negative fields** (from slides the lab knows are negative) every candidate's filter score,
hence the false bacilli per field at each object threshold; on its annotated positives (when given) the share of
them found at each threshold. From those it sets the lab's **operating point** (the object threshold its requests
use: the lowest at which the negatives' false bacilli per field, at their exact one-sided 95% Poisson upper bound,
stay within the profile's budget) and the rate the slide decision rests on (:mod:`service.engine.slide_decision`).

A profile resting on too few negative fields to bound anything is refused when it is made: with no false bacillus
at all, ``n`` fields bound the rate at ``3 / n`` per field (the rule of three), so a budget ``b`` needs at least
``3 / b`` negative fields.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from service.engine.domain import poisson_upper
from service.engine.errors import ModelContractError

FORMAT = "tbseg-lab-profile/1"
PROFILE_JSON = "profile.json"
LAB_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
LAB_ID = re.compile(LAB_ID_PATTERN)
THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.0, 1.0001, 0.01))


def fields_needed(budget: float) -> int:
    """The fewest negative fields that can bound the false-bacilli rate at ``budget`` per field (rule of three)."""
    return math.ceil(-math.log(0.05) / budget)


@dataclass(frozen=True)
class NegativeField:
    """Where one confirmed-negative field's candidates lie, so that ``finetune`` can take them as hard negatives.

    Attributes:
        path: the field's file, as it was given when the profile was made (relative to the working directory then).
        sha256: its bytes' digest: a file of that name with other bytes is not this field.
        centres_yx: each candidate's centroid (row, column), in the order of the field's scores.
    """

    path: str
    sha256: str
    centres_yx: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class NegativeEvidence:
    """The lab's confirmed-negative fields through the model.

    Attributes:
        source: which fields (folders, slides).
        fields: how many.
        scores: the filter score of every candidate on them, per field (each a false bacillus when kept).
        files: each field's file and its candidates' centroids, in the order of ``scores`` (empty in a profile
            written before they were recorded).
    """

    source: str
    fields: int
    scores: tuple[tuple[float, ...], ...]
    files: tuple[NegativeField, ...] = ()

    def __post_init__(self) -> None:
        if len(self.scores) != self.fields or (self.files and len(self.files) != self.fields):
            raise ValueError(
                f"negatives: {self.fields} fields, but scores for {len(self.scores)} and files for {len(self.files)}"
            )
        for field, scores in zip(self.files, self.scores, strict=False):
            if len(field.centres_yx) != len(scores):
                raise ValueError(f"negatives: {field.path}: {len(scores)} scores but {len(field.centres_yx)} centres")

    def false_at(self, threshold: float) -> int:
        return sum(sum(s >= threshold for s in field) for field in self.scores)

    def upper_95(self, threshold: float) -> float:
        return poisson_upper(self.false_at(threshold), self.fields)


@dataclass(frozen=True)
class PositiveEvidence:
    """The lab's annotated bacilli (points or boxes) through the model.

    Attributes:
        source: which fields or patches.
        bacilli: how many annotated bacilli.
        scores: the filter score of the candidate found at each bacillus (None: no candidate there).
    """

    source: str
    bacilli: int
    scores: tuple[float | None, ...]

    def recall_at(self, threshold: float) -> float:
        return sum(s is not None and s >= threshold for s in self.scores) / self.bacilli if self.bacilli else math.nan


@dataclass(frozen=True)
class LabProfile:
    """A lab's profile (module docstring).

    Attributes:
        lab_id: its id (lower-case letters, digits, ``.``, ``_``, ``-``).
        version: bumped each time the profile is made again; slides record the version they were decided with.
        model_id, filter_id: the model and filter it validated.
        budget: false bacilli per negative field (95% bound) the operating point may keep.
        object_threshold: the operating point.
        negatives: the confirmed-negative fields.
        positives: the annotated positives, when given.
        pixel_size_um: the microscope's pixel size, when known.
        created_at: Unix time.
    """

    lab_id: str
    version: int
    model_id: str
    filter_id: str | None
    budget: float
    object_threshold: float
    negatives: NegativeEvidence
    positives: PositiveEvidence | None = None
    pixel_size_um: float | None = None
    created_at: float = 0.0

    @property
    def false_rate_upper_95(self) -> float:
        """False bacilli per field at the operating point, at their 95% upper bound."""
        return self.negatives.upper_95(self.object_threshold)

    @classmethod
    def make(
        cls,
        lab_id: str,
        model_id: str,
        filter_id: str | None,
        negatives: NegativeEvidence,
        positives: PositiveEvidence | None,
        budget: float,
        version: int = 1,
        pixel_size_um: float | None = None,
        created_at: float = 0.0,
    ) -> LabProfile:
        """The profile with its operating point: the lowest threshold of the grid whose 95% bound on false bacilli
        per negative field is within ``budget``.

        Raises:
            ValueError: an invalid id, too few negative fields for ``budget`` (naming the shortfall), or no
                threshold within it.
        """
        if not LAB_ID.match(lab_id):
            raise ValueError(f"lab id {lab_id!r}: use 1–64 lower-case letters, digits, '.', '_' or '-'")
        needed = fields_needed(budget)
        if negatives.fields < needed:
            raise ValueError(
                f"{negatives.fields} confirmed-negative field(s): bounding false bacilli at {budget:g} per field "
                f"needs at least {needed} (the rule of three: 3 / {budget:g}); {needed - negatives.fields} more"
            )
        chosen = next((t for t in THRESHOLD_GRID if negatives.upper_95(t) <= budget), None)
        if chosen is None:
            raise ValueError(f"no object threshold keeps false bacilli within {budget:g} per field on these fields")
        return cls(
            lab_id, version, model_id, filter_id, budget, chosen, negatives, positives, pixel_size_um, created_at
        )

    def table(self) -> list[dict[str, float]]:
        """False bacilli per negative field (and their bound) and recall on the positives at each threshold."""
        rows = []
        for t in THRESHOLD_GRID[::5]:
            row = {
                "threshold": t,
                "false_per_field": round(self.negatives.false_at(t) / self.negatives.fields, 4),
                "false_upper_95": round(self.negatives.upper_95(t), 4),
            }
            if self.positives is not None:
                row["recall"] = round(self.positives.recall_at(t), 4)
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            **{k: v for k, v in asdict(self).items() if k not in ("negatives", "positives")},
            "negatives": asdict(self.negatives),
            "positives": asdict(self.positives) if self.positives else None,
            "false_rate_upper_95": round(self.false_rate_upper_95, 4),
            "by_threshold": self.table(),
        }

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PROFILE_JSON
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> LabProfile:
        """Read a ``profile.json``.

        Raises:
            ModelContractError: an unreadable file or another format, naming the file.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ModelContractError(f"{path}: format {raw.get('format')!r}, expected {FORMAT}")
            negatives = raw["negatives"]
            positives = raw.get("positives")
            return cls(
                lab_id=str(raw["lab_id"]),
                version=int(raw["version"]),
                model_id=str(raw["model_id"]),
                filter_id=raw.get("filter_id"),
                budget=float(raw["budget"]),
                object_threshold=float(raw["object_threshold"]),
                negatives=NegativeEvidence(
                    str(negatives["source"]),
                    int(negatives["fields"]),
                    tuple(tuple(float(s) for s in field) for field in negatives["scores"]),
                    tuple(
                        NegativeField(
                            str(f["path"]), str(f["sha256"]), tuple((int(y), int(x)) for y, x in f["centres_yx"])
                        )
                        for f in negatives.get("files", ())
                    ),
                ),
                positives=(
                    PositiveEvidence(
                        str(positives["source"]),
                        int(positives["bacilli"]),
                        tuple(None if s is None else float(s) for s in positives["scores"]),
                    )
                    if positives
                    else None
                ),
                pixel_size_um=raw.get("pixel_size_um"),
                created_at=float(raw.get("created_at", 0.0)),
            )
        except ModelContractError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelContractError(f"{path}: not a readable lab profile ({exc})") from exc


def scan_labs(root: Path) -> dict[str, LabProfile]:
    """Every ``<root>/<lab_id>/profile.json`` by lab id; none when ``root`` does not exist.

    Raises:
        ModelContractError: an unreadable profile, or one whose id is not its folder's name (naming the file).
    """
    if not root.is_dir():
        return {}
    labs = {}
    for folder in sorted(p for p in root.iterdir() if (p / PROFILE_JSON).is_file()):
        profile = LabProfile.load(folder / PROFILE_JSON)
        if profile.lab_id != folder.name:
            raise ModelContractError(f"{folder / PROFILE_JSON}: lab_id {profile.lab_id!r} is not its folder's name")
        labs[profile.lab_id] = profile
    return labs
