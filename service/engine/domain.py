"""The domain check: does a field look like the fields the model was trained and validated on?

A model folder may describe its training domain (``domain.json``, written by ``python -m training domain``): for a
few measurements of a field, taken from the field itself before any network runs (:func:`describe_field`), their
median and spread over the model's training fields, and the limit (in robust standard deviations) beyond which a
field is out of the domain, chosen on validation fields of the model's own lab and of another lab. Each field then
gets ``domain: {in_domain, distance, reasons}`` (:meth:`DomainModel.check`): the distance is the Euclidean norm
of its measurements' robust z-scores (one measurement far off, or several moderately off, both count; no single
measurement such as the field's size decides alone), and each measurement more than :data:`REASON_Z` robust
standard deviations off is a reason a technician can read.

The file also records what the model's false bacilli per field were on its own validation fields and on another
lab's negative fields (train and validation slides only), with their Poisson upper bounds: the evidence the slide
decision (:mod:`service.engine.slide_decision`) rests on.

The measurements (``FEATURES``), from the field's RGB:

* the background (the 90th percentile of each channel over a grid of pixels, as the normalisation estimates it):
  its brightness and its colour as red/green and blue/green ratios;
* the stain, in optical density against that background: the share of stained pixels (summed OD above 0.3) and
  the red and blue shares of their mean optical density (fuchsin-red rods and blue counterstain differ in hue);
* sharpness: the 99th percentile of the absolute Laplacian of the green channel (at half resolution), over the
  background brightness;
* the field's size (log of its megapixels): the network's receptive field is tuned to the training fields' scale.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2, poisson

from service.engine.errors import ModelContractError

FORMAT = "tbseg-domain/1"
SAMPLE_STEP = 4  # the grid the background and stain statistics read (every 4th pixel each way)
STAINED_OD = 0.3
MIN_BACKGROUND = 16.0
REASON_Z = 3.0  # a measurement this many robust SD from the training fields' median is named as a reason


@dataclass(frozen=True)
class Feature:
    """One measurement of a field: its name, what a technician reads, and the smallest spread it is given (so that
    a measurement the training fields happen to share exactly does not make every other value infinitely far)."""

    name: str
    label: str
    min_scale: float


FEATURES = (
    Feature("background_brightness", "background brightness", 8.0),
    Feature("background_red_green", "background colour (red/green)", 0.03),
    Feature("background_blue_green", "background colour (blue/green)", 0.03),
    Feature("stained_share", "share of stained pixels", 0.05),
    Feature("stain_red_share", "stain hue (red share of its optical density)", 0.03),
    Feature("stain_blue_share", "stain hue (blue share of its optical density)", 0.03),
    Feature("sharpness", "sharpness", 0.002),
    Feature("log_megapixels", "field size (log megapixels)", 0.15),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)


def describe_field(rgb: npt.NDArray[np.uint8]) -> dict[str, float]:
    """The domain measurements of a ``[y, x, 3]`` uint8 field (module docstring); a few tens of milliseconds for
    a 5-megapixel field."""
    grid = rgb[::SAMPLE_STEP, ::SAMPLE_STEP].reshape(-1, 3).astype(np.float32)
    background = np.maximum(np.percentile(grid, 90, axis=0), MIN_BACKGROUND).astype(np.float32)
    od = -np.log(np.clip(np.maximum(grid, 1.0) / background, 1e-3, 1.0))
    total = od.sum(axis=1)
    stained = total > STAINED_OD
    if int(stained.sum()) >= 10:
        hue = (od[stained] / total[stained, None]).mean(axis=0)
    else:
        hue = np.full(3, 1 / 3, dtype=np.float32)
    height, width = rgb.shape[:2]
    green = rgb[: height - height % 2, : width - width % 2, 1].astype(np.float32)
    half = (green[0::2, 0::2] + green[1::2, 0::2] + green[0::2, 1::2] + green[1::2, 1::2]) / 4
    if half.shape[0] >= 3 and half.shape[1] >= 3:
        # the Laplacian at every other pixel of every other row (those the percentile reads), computed there only
        laplacian = np.abs(
            half[1:-1:2, :-2:2]
            + half[1:-1:2, 2::2]
            + half[:-2:2, 1:-1:2]
            + half[2::2, 1:-1:2]
            - 4 * half[1:-1:2, 1:-1:2]
        )
        sharpness = float(np.percentile(laplacian, 99)) / float(background[1])
    else:
        sharpness = 0.0
    return {
        "background_brightness": float(background[1]),
        "background_red_green": float(background[0] / background[1]),
        "background_blue_green": float(background[2] / background[1]),
        "stained_share": float(stained.mean()) if stained.size else 0.0,
        "stain_red_share": float(hue[0]),
        "stain_blue_share": float(hue[2]),
        "sharpness": sharpness,
        "log_megapixels": math.log(max(height * width, 1) / 1e6),
    }


@dataclass(frozen=True)
class Spread:
    """A measurement over the training fields: median, robust scale (1.4826 × MAD, at least the feature's
    ``min_scale``), and range."""

    median: float
    scale: float
    low: float
    high: float


@dataclass(frozen=True)
class FalseRate:
    """False bacilli per field measured on some fields, with the Poisson upper bound on the rate.

    Attributes:
        source: which fields (lab, split, how many).
        fields: how many fields.
        false_bacilli: false bacilli kept on them in all.
        upper_95: one-sided 95% upper bound on false bacilli per field (Poisson, exact).
    """

    source: str
    fields: int
    false_bacilli: int
    upper_95: float

    @property
    def per_field(self) -> float:
        return self.false_bacilli / self.fields if self.fields else math.nan


@dataclass(frozen=True)
class DomainCheck:
    """One field against the model's domain.

    Attributes:
        in_domain: the distance is within the limit.
        distance: the Euclidean norm of the measurements' robust z-scores (0 = the training fields' median
            everywhere).
        limit: the distance beyond which a field is out of the domain.
        reasons: one sentence per measurement beyond the limit.
        values: the field's measurements.
    """

    in_domain: bool
    distance: float
    limit: float
    reasons: tuple[str, ...]
    values: dict[str, float]


@dataclass(frozen=True)
class DomainModel:
    """A model folder's ``domain.json``: the spread of each measurement over its training fields, the limit, and
    the false-bacilli evidence.

    Attributes:
        model_id: the dense model it describes.
        spreads: per feature name.
        z_limit: a field whose distance (the norm of its robust z-scores) exceeds this is out of the domain.
        source: the fields the spreads were measured on.
        z_limit_rule: how the limit was chosen (validation fields only).
        in_domain_false: the model's false bacilli per field on its own validation fields.
        foreign_false: on another lab's negative fields (train and validation slides only).
        pixel_size_um: the training fields' pixel size when known.
    """

    model_id: str
    spreads: dict[str, Spread]
    z_limit: float
    source: str
    z_limit_rule: str
    in_domain_false: FalseRate | None = None
    foreign_false: FalseRate | None = None
    pixel_size_um: float | None = None

    @classmethod
    def fit(
        cls, model_id: str, descriptions: list[dict[str, float]], z_limit: float, source: str, z_limit_rule: str
    ) -> DomainModel:
        """Spreads from the descriptions of the training fields.

        Raises:
            ValueError: fewer than 3 fields.
        """
        if len(descriptions) < 3:
            raise ValueError(f"{len(descriptions)} training field(s): a domain needs at least 3")
        spreads = {}
        for feature in FEATURES:
            values = np.asarray([d[feature.name] for d in descriptions], dtype=np.float64)
            median = float(np.median(values))
            mad = float(np.median(np.abs(values - median))) * 1.4826
            spreads[feature.name] = Spread(
                median, max(mad, feature.min_scale), float(values.min()), float(values.max())
            )
        return cls(model_id, spreads, z_limit, source, z_limit_rule)

    def distances(self, values: dict[str, float]) -> dict[str, float]:
        """The robust z-score of each measurement."""
        return {
            name: abs(values[name] - spread.median) / spread.scale
            for name, spread in self.spreads.items()
            if name in values
        }

    def distance(self, values: dict[str, float]) -> float:
        """The Euclidean norm of the measurements' robust z-scores."""
        return math.sqrt(sum(z * z for z in self.distances(values).values()))

    def check_values(self, values: dict[str, float]) -> DomainCheck:
        z = self.distances(values)
        distance = self.distance(values)
        inside = distance <= self.z_limit
        labels = {f.name: f.label for f in FEATURES}
        reasons = tuple(
            f"{labels.get(name, name)} {values[name]:.3g} lies outside the model's training fields "
            f"({self.spreads[name].low:.3g} to {self.spreads[name].high:.3g}; {score:.1f} robust SD from their median)"
            for name, score in sorted(z.items(), key=lambda item: -item[1])
            if score > REASON_Z and not inside
        )
        if not inside and not reasons:
            reasons = (
                f"its measurements together lie {distance:.1f} robust SD from the model's training fields "
                f"(limit {self.z_limit:.1f}), none of them far alone",
            )
        return DomainCheck(inside, round(distance, 3), self.z_limit, reasons, values)

    def check(self, rgb: npt.NDArray[np.uint8]) -> DomainCheck:
        """The field ``rgb`` against this domain."""
        return self.check_values(describe_field(rgb))

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "model_id": self.model_id,
            "source": self.source,
            "z_limit": self.z_limit,
            "z_limit_rule": self.z_limit_rule,
            "features": {name: asdict(s) for name, s in self.spreads.items()},
            "in_domain_false_bacilli": asdict(self.in_domain_false) if self.in_domain_false else None,
            "foreign_false_bacilli": asdict(self.foreign_false) if self.foreign_false else None,
            "pixel_size_um": self.pixel_size_um,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> DomainModel:
        """Read a ``domain.json``.

        Raises:
            ModelContractError: an unreadable file, another format, or a feature this engine does not measure.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ModelContractError(f"{path}: format {raw.get('format')!r}, expected {FORMAT}")
            unknown = set(raw["features"]) - set(FEATURE_NAMES)
            if unknown:
                raise ModelContractError(f"{path}: features this engine does not measure: {', '.join(sorted(unknown))}")

            def rate(entry: dict[str, object] | None) -> FalseRate | None:
                return FalseRate(**entry) if entry else None  # type: ignore[arg-type]

            return cls(
                model_id=str(raw["model_id"]),
                spreads={name: Spread(**s) for name, s in raw["features"].items()},
                z_limit=float(raw["z_limit"]),
                source=str(raw["source"]),
                z_limit_rule=str(raw["z_limit_rule"]),
                in_domain_false=rate(raw.get("in_domain_false_bacilli")),
                foreign_false=rate(raw.get("foreign_false_bacilli")),
                pixel_size_um=raw.get("pixel_size_um"),
            )
        except ModelContractError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelContractError(f"{path}: not a readable domain description ({exc})") from exc


def poisson_upper(count: int, exposure: float, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on a Poisson rate from ``count`` events over ``exposure`` (fields): the
    exact (Garwood) bound ``chi2.ppf(confidence, 2·count + 2) / (2·exposure)``."""
    if exposure <= 0:
        return math.inf
    return float(chi2.ppf(confidence, 2 * count + 2)) / (2 * exposure)


def poisson_quantile(probability: float, mean: float) -> int:
    """The smallest k with P(X ≤ k) ≥ ``probability`` for X ~ Poisson(mean)."""
    return int(poisson.ppf(probability, mean)) if mean > 0 else 0
