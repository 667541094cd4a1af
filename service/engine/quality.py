"""The field quality check: can a count on this field mean anything?

A count is a statement about a readable field. An out-of-focus field, a field photographed with the lamp too bright
or too dim, a field with no stain, or a picture that is not a Ziehl-Neelsen smear at all would all count "no
bacilli", and a slide of them would be graded negative. So every field is measured before the network reads it
(:func:`measure_field`, on the field at the model's scale: a few tens of milliseconds for 5 megapixels) and judged by
four checks, each with a value, a verdict and a reason a technician reads (:meth:`QualityModel.check`):

* **focus**: how steep the field's sharpest edges are. The green channel at half resolution is smoothed at two
  scales (σ 1 and 4 px there, i.e. 2 and 8 px at the model's scale) in its six busiest blocks (the most contrast:
  where the smear's edges are); the ratio of the largest 99.9th percentiles of their gradients is about the ratio of
  the two total blurs for an edge, large when edges are sharp and near 1 when the field's own blur swamps both. It
  is taken across rows and across columns, and the smaller counts: a streak (a shaken stage) blurs one direction
  only. It does not depend on contrast or brightness, and the smoothing makes it blind to the camera's pixel noise
  (which a defocused field keeps). A field with almost nothing stained on it (under :data:`FOCUS_MIN_STAINED`: a
  clean negative field of a sparse smear can be) has no edges to judge: its focus is not judged (``measured:
  false``).
* **exposure**: the share of saturated white pixels, the share of near-black ones, the dynamic range (0.5th to
  99.5th percentile of brightness) and the background's brightness.
* **stain**: the share of stained pixels (optical density above 0.3 against the background) and the red (fuchsin)
  share of all stained pixels' density: a ZN field always shows its counterstain, and a field red all over was not
  decolourised.
* **smear**: whether the picture is a bright-field smear at all: the share of pixels at the background's brightness
  (a smear is mostly glass and thin film; a photograph of a desk or a tissue section is not), the background's
  colour (near grey, or the tints of real microscopes), the hue of what is stained (ZN's blue or green
  counterstain and red fuchsin; not the brown of DAB or the pink of eosin) and its colour at all (a grey picture
  has none), and the share of the field in sharp texture (a smear at the model's scale is smooth film and
  objects; grass, gravel or a tissue section is texture everywhere).

The limits live in the model folder (``quality.json``, written by ``python -m training quality``): each is chosen
on validation fields of every lab the project has and, for focus, on blurred copies of them, and the file says how.
A field is readable when every check passes; an image too small or too flat to measure gets a verdict with a
reason, never an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage as ndi

from service.engine.errors import ModelContractError

FORMAT = "tbseg-quality/1"
QUALITY_JSON = "quality.json"
GRID = 6  # exposure and stain read every 6th pixel each way
STAINED_OD = 0.3
BACKGROUND_OD = 0.1
SATURATED = 254
NEAR_BLACK = 20
FOCUS_SIGMAS = (1.0, 4.0)  # at half resolution: 2 and 8 px at the model's scale
EDGE_STEP = 16.0  # grey levels between neighbouring grid points (6 px apart) that make a sharp texture
FOCUS_BLOCK_PX = 128  # focus reads the busiest blocks of the half-resolution field
FOCUS_BLOCKS = 6
SMALLEST_SIDE = 16  # below this a field cannot be measured
FOCUS_MIN_STAINED = 0.005  # with fewer stained pixels a field has no edges to judge its focus by


@dataclass(frozen=True)
class Measure:
    """One measurement: its check, and the words a technician reads."""

    name: str
    check: str
    label: str
    digits: int = 3


MEASURES = (
    Measure("focus", "focus", "sharpness"),
    Measure("saturated_share", "exposure", "share of saturated white pixels"),
    Measure("dark_share", "exposure", "share of near-black pixels"),
    Measure("dynamic_range", "exposure", "dynamic range (grey levels)"),
    Measure("background_brightness", "exposure", "background brightness"),
    Measure("stained_share", "stain", "share of stained pixels"),
    Measure("fuchsin_share", "stain", "red (fuchsin) share of the stain"),
    Measure("background_share", "smear", "share of pixels at the background's brightness"),
    Measure("background_red_green", "smear", "background colour (red/green)"),
    Measure("background_blue_green", "smear", "background colour (blue/green)"),
    Measure("stain_blue_share", "smear", "stain hue (blue-light share of its density)"),
    Measure("stain_chroma", "smear", "colour of the stain (0: grey)"),
    Measure("edge_share", "smear", "share of the field in sharp texture"),
)
MEASURE_BY_NAME = {m.name: m for m in MEASURES}
CHECKS = ("smear", "exposure", "stain", "focus")  # the order reasons are given in: the most basic first
WHAT_FAILS = {
    "focus": "out of focus",
    "exposure": "badly exposed",
    "stain": "stain not as a ZN smear's",
    "smear": "does not look like a ZN sputum smear",
}


def _focus(rgb: npt.NDArray[np.uint8]) -> float:
    green = Image.fromarray(np.ascontiguousarray(rgb)).getchannel(1)
    half = np.asarray(green.reduce(2), dtype=np.float32)  # 2×2 box averages
    if min(half.shape) < 8:
        return 1.0
    peaks: list[list[list[float]]] = [[[], []], [[], []]]  # [axis][scale]: each block's 99.9th percentile
    for block in _busiest_blocks(half):
        for k, sigma in enumerate(FOCUS_SIGMAS):
            gradients = np.gradient(ndi.gaussian_filter(block, sigma, mode="nearest"))
            for axis, g in enumerate(gradients):
                peaks[axis][k].append(float(np.percentile(np.abs(g), 99.9)))
    ratios = [max(fine) / max(coarse) if max(coarse) > 1e-3 else 1.0 for fine, coarse in peaks]
    return min(ratios)  # the blurrier direction: a streak along one axis blurs the edges across it only


def _busiest_blocks(image: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    """The :data:`FOCUS_BLOCKS` blocks of :data:`FOCUS_BLOCK_PX` with the most contrast (where a field's edges are),
    or the whole image when it is smaller than one block."""
    h, w = image.shape
    side = FOCUS_BLOCK_PX
    if h < side or w < side:
        return [image]
    rows, cols = h // side, w // side
    blocks = image[: rows * side, : cols * side].reshape(rows, side, cols, side)
    spread = blocks[:, ::4, :, ::4].std(axis=(1, 3)).ravel()
    best = np.argsort(spread)[::-1][:FOCUS_BLOCKS]
    return [blocks[i // cols, :, i % cols, :] for i in best]


def measure_field(rgb: npt.NDArray[np.uint8]) -> dict[str, float]:
    """The quality measurements of a ``[y, x, 3]`` uint8 field at the model's scale (module docstring)."""
    grid = rgb[::GRID, ::GRID].reshape(-1, 3).astype(np.float32)
    if grid.size == 0:
        grid = np.zeros((1, 3), dtype=np.float32)
    brightness = grid.mean(axis=1)
    background = np.maximum(np.percentile(grid, 90, axis=0), 1.0).astype(np.float32)
    od = -np.log(np.clip(np.maximum(grid, 1.0) / background, 1e-3, 1.0))
    total = od.sum(axis=1)
    stained = total > STAINED_OD
    if int(stained.sum()) >= 10:
        hue = od[stained].sum(axis=0) / max(float(total[stained].sum()), 1e-6)
        fuchsin = float((od[stained, 1] > od[stained, 0]).mean())
        chroma = float(((od[stained].max(axis=1) - od[stained].min(axis=1)) / total[stained]).mean())
    else:
        hue, fuchsin, chroma = np.full(3, 1 / 3, dtype=np.float32), 0.0, 0.0
    green = rgb[::GRID, ::GRID, 1].astype(np.float32)
    steps = [np.abs(np.diff(green, axis=a)) for a in (0, 1) if green.shape[a] > 1]
    edge_share = float(np.mean([(s > EDGE_STEP).mean() for s in steps])) if steps else 0.0
    low, high = np.percentile(brightness, [0.5, 99.5])
    return {
        "focus": _focus(rgb) if min(rgb.shape[:2]) >= SMALLEST_SIDE else 1.0,
        "saturated_share": float((grid.min(axis=1) >= SATURATED).mean()),
        "dark_share": float((grid.max(axis=1) <= NEAR_BLACK).mean()),
        "dynamic_range": float(high - low),
        "background_brightness": float(background[1]),
        "stained_share": float(stained.mean()),
        "fuchsin_share": fuchsin,
        "background_share": float((total < BACKGROUND_OD).mean()),
        "background_red_green": float(background[0] / background[1]),
        "background_blue_green": float(background[2] / background[1]),
        "stain_blue_share": float(hue[2]),
        "stain_chroma": chroma,
        "edge_share": edge_share,
    }


@dataclass(frozen=True)
class Limit:
    """The range of one measurement that readable fields have (None: no bound on that side)."""

    low: float | None
    high: float | None

    def judge(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def words(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:.3g} to {self.high:.3g}"
        return f"≥ {self.low:.3g}" if self.low is not None else f"≤ {self.high:.3g}"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict: its values, whether it passed, and why not; ``measured`` is False for focus on a field
    with too little stained on it to have edges (its verdict is then the stain check's)."""

    ok: bool
    values: dict[str, float]
    reasons: tuple[str, ...] = ()
    measured: bool = True


@dataclass(frozen=True)
class QualityCheck:
    """A field's quality: readable when every check passed; ``reasons`` lists every failure in words."""

    readable: bool
    checks: dict[str, CheckResult]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class QualityModel:
    """A model folder's ``quality.json``: the limits of each measurement and how they were chosen.

    Attributes:
        model_id: the dense model it goes with.
        limits: per measurement name.
        source: the fields the limits were chosen on.
        rule: how they were chosen.
        evidence: what the choice rests on (for people: counts, ranges, the blur line).
    """

    model_id: str
    limits: dict[str, Limit]
    source: str
    rule: str
    evidence: dict[str, object] = field(default_factory=dict)

    def check_values(self, values: dict[str, float], too_small: bool = False) -> QualityCheck:
        checks: dict[str, CheckResult] = {}
        every: list[str] = []
        bare = values["stained_share"] < FOCUS_MIN_STAINED
        for check in CHECKS:
            mine = [m for m in MEASURES if m.check == check and m.name in self.limits]
            if check == "focus" and bare and not too_small:
                checks[check] = CheckResult(True, {m.name: round(values[m.name], 5) for m in mine}, (), False)
                continue
            reasons = []
            for m in mine:
                limit, value = self.limits[m.name], values[m.name]
                if not limit.judge(value):
                    reasons.append(
                        f"{WHAT_FAILS[check]}: {m.label} {value:.{m.digits}g}, readable fields are {limit.words()}"
                    )
            if check == "focus" and too_small:
                reasons.append(f"too small to read: a side under {SMALLEST_SIDE} px")
            checks[check] = CheckResult(not reasons, {m.name: round(values[m.name], 5) for m in mine}, tuple(reasons))
            every.extend(reasons)
        return QualityCheck(not every, checks, tuple(every))

    def check(self, rgb: npt.NDArray[np.uint8]) -> QualityCheck:
        """The field ``rgb`` (at the model's scale) against these limits."""
        return self.check_values(measure_field(rgb), too_small=min(rgb.shape[:2]) < SMALLEST_SIDE)

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "model_id": self.model_id,
            "source": self.source,
            "rule": self.rule,
            "limits": {name: asdict(limit) for name, limit in self.limits.items()},
            "evidence": self.evidence,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> QualityModel:
        """Read a ``quality.json``.

        Raises:
            ModelContractError: unreadable, another format, or a measurement this engine does not take.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT:
                raise ModelContractError(f"{path}: format {raw.get('format')!r}, expected {FORMAT}")
            unknown = set(raw["limits"]) - set(MEASURE_BY_NAME)
            if unknown:
                raise ModelContractError(
                    f"{path}: measurements this engine does not take: {', '.join(sorted(unknown))}"
                )
            limits = {}
            for name, entry in raw["limits"].items():
                low, high = entry.get("low"), entry.get("high")
                for bound in (low, high):
                    if bound is not None and not math.isfinite(float(bound)):
                        raise ModelContractError(f"{path}: limit of {name} is not a finite number")
                limits[name] = Limit(None if low is None else float(low), None if high is None else float(high))
            return cls(
                str(raw["model_id"]), limits, str(raw["source"]), str(raw["rule"]), dict(raw.get("evidence", {}))
            )
        except ModelContractError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelContractError(f"{path}: not a readable quality file ({exc})") from exc
