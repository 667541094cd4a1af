"""The field's scale estimated from the field itself, when nothing else tells it (:mod:`service.engine.scale`).

The model folder's ``scale.json`` records, beside its pixel size, the median length of the objects the model keeps on
its own training fields (``object_length_px``, written by ``python -m training pixel-size --model``). On a field of
unknown pixel size the network is run as usual, at the model's scale; the median length of the objects it keeps,
against that reference, says how much larger or smaller the field's rods are than the model's
(:func:`factor_from_lengths`). The kept objects are the network's own rods: debris the filter rejects does not count,
which is what made a plain colour threshold on the whole field unusable (``docs/results.md`` section 13).

One field holds few rods and rods vary (the training fields' medians alone spread by ±30%), so an estimate is used
cautiously (:func:`estimate_and_read`):

* fewer than :data:`MIN_OBJECTS` kept objects: the rods may be too small for the model to see, so the field (a
  centred crop of it, when enlarged it would exceed :data:`PROBE_PIXELS`) is read enlarged :data:`PROBE_FACTOR`
  times; fewer than :data:`MIN_OBJECTS` there too and the model's scale is assumed (said);
* an estimated factor within :data:`READ_AS_IS` (the range the model reads without losing recall, measured on
  resized fields) leaves the field as it was read: the first pass is the answer, bit for bit;
* outside it, the field is read again, once, at the estimated factor. It is not refined from that reading: an
  enlarged field's objects grow less than in proportion (the filter's cut and the network's receptive field), so
  a re-estimate drifts upward (on MS-1's training fields, from ×2.4 read at 1 to ×3.1 read at 2.8 and ×4.3 read at
  4), while reading at the first estimate already reads where recall is flat (``docs/results.md`` section 13).

The result says ``source: estimated``, the factor, and how many objects it rests on with the estimate's relative
standard error; µm measurements are not given on an estimated pixel size.

**A slide's fields share one microscope**, so what its earlier fields showed serves the fields that follow
(:class:`SlideScaleEvidence`, filled as a slide's fields are read: a job's, a request's, those already stored):

* once :data:`SLIDE_FIELDS` fields have given their own estimate, on :data:`SLIDE_OBJECTS` kept objects together,
  their pooled factor (:func:`pool_estimates`: the median of the fields' factors, each weighted by its objects) is
  the scale of every further field (``source: slide``). A field is then read once: at the pooled factor, or as
  uploaded when that lies within :data:`READ_AS_IS` (its own estimate is still taken from that reading, and
  joins the pool); no probe, no second reading. One field's 5–20 rods spread ±30%; a slide's do not;
* with no pooled estimate yet, once :data:`EMPTY_PROBES` fields and no field at all have shown too few objects at
  ×1 and at ×2, further fields are not probed (a negative slide's fields would otherwise each pay the probe, about
  40% of a field's time) and are read at the model's scale, saying why.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

MIN_OBJECTS = 5
READ_AS_IS = (0.7, 1.45)
PROBE_FACTOR = 2.0
PROBE_PIXELS = 2_000_000  # the probe's pixels once enlarged: a 2592×1944 field pays about 40% more
LARGEST_FACTOR = 4.0
SMALLEST_FACTOR = 0.25
SLIDE_FIELDS = 3  # a slide's pooled estimate needs the own estimates of this many fields…
SLIDE_OBJECTS = 30  # …resting on this many kept objects together
EMPTY_PROBES = 3  # fields of a slide showing too few objects at ×1 and ×2 before the others are not probed

R = TypeVar("R")


@dataclass(frozen=True)
class LengthEstimate:
    """A factor estimated from the kept objects' lengths.

    Attributes:
        factor: field pixels × factor = the model's pixels.
        objects: how many kept objects it rests on.
        median_length_px: their median length at the scale they were read at.
        relative_error: the median's relative standard error (from the interquartile range).
    """

    factor: float
    objects: int
    median_length_px: float
    relative_error: float


def factor_from_lengths(lengths_px: Sequence[float], read_factor: float, reference_px: float) -> LengthEstimate | None:
    """The factor implied by objects of ``lengths_px`` (measured on the field read at ``read_factor``) against the
    model's ``reference_px``; None with fewer than :data:`MIN_OBJECTS` objects."""
    if len(lengths_px) < MIN_OBJECTS or reference_px <= 0:
        return None
    values = np.asarray(lengths_px, dtype=np.float64)
    median = float(np.median(values))
    if not math.isfinite(median) or median <= 0:
        return None
    q1, q3 = np.percentile(values, [25, 75])
    sd = float(q3 - q1) / 1.349
    relative = 1.2533 * sd / median / math.sqrt(len(values))
    factor = min(max(read_factor * reference_px / median, SMALLEST_FACTOR), LARGEST_FACTOR)
    return LengthEstimate(factor, len(values), median, relative)


def read_as_is(factor: float) -> bool:
    """Whether the model reads a field whose estimated factor is ``factor`` without resampling it."""
    return READ_AS_IS[0] <= factor <= READ_AS_IS[1]


@dataclass(frozen=True)
class SlideEstimate:
    """A slide's factor pooled from its fields' own estimates.

    Attributes:
        factor: field pixels × factor = the model's pixels.
        fields: how many fields' estimates it pools.
        objects: their kept objects together.
        relative_error: the pooled factor's relative standard error (the fields' spread, robust, over √fields).
    """

    factor: float
    fields: int
    objects: int
    relative_error: float


def _weighted_quantile(values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


def pool_estimates(estimates: Iterable[tuple[float, int]]) -> SlideEstimate | None:
    """The pooled factor of fields' own estimates ``(factor, objects)``: the median of their factors weighted by
    their objects (in log space); None with fewer than :data:`SLIDE_FIELDS` fields or :data:`SLIDE_OBJECTS`
    objects."""
    usable = [(f, n) for f, n in estimates if n >= MIN_OBJECTS and math.isfinite(f) and f > 0]
    objects = sum(n for _, n in usable)
    if len(usable) < SLIDE_FIELDS or objects < SLIDE_OBJECTS:
        return None
    logs = np.log(np.asarray([f for f, _ in usable], dtype=np.float64))
    weights = np.asarray([n for _, n in usable], dtype=np.float64)
    median = _weighted_quantile(logs, weights, 0.5)
    spread = (_weighted_quantile(logs, weights, 0.75) - _weighted_quantile(logs, weights, 0.25)) / 1.349
    relative = 1.2533 * spread / math.sqrt(len(usable))
    factor = min(max(math.exp(median), SMALLEST_FACTOR), LARGEST_FACTOR)
    return SlideEstimate(factor, len(usable), objects, round(relative, 4))


@dataclass(frozen=True)
class SlideEvidence:
    """What a slide's fields had shown of its scale when a field was read (a snapshot of
    :class:`SlideScaleEvidence`).

    Attributes:
        estimates: the fields' own estimates, ``(factor, objects)``.
        empty_probes: fields that showed too few objects at ×1 and at ×2.
    """

    estimates: tuple[tuple[float, int], ...] = ()
    empty_probes: int = 0

    @property
    def pooled(self) -> SlideEstimate | None:
        return pool_estimates(self.estimates)

    @property
    def skip_probe(self) -> bool:
        """No field has shown rods, and :data:`EMPTY_PROBES` fields were probed in vain."""
        return not self.estimates and self.empty_probes >= EMPTY_PROBES


class SlideScaleEvidence:
    """A slide's scale evidence, filled as its fields are read (thread-safe; module docstring).

    Args:
        estimates: own estimates ``(factor, objects)`` of fields already read (e.g. stored with the slide).
        empty_probes: fields already read that showed too few objects at ×1 and at ×2.
    """

    def __init__(self, estimates: Iterable[tuple[float, int]] = (), empty_probes: int = 0) -> None:
        self._lock = threading.Lock()
        self._estimates = list(estimates)
        self._empty = empty_probes

    def snapshot(self) -> SlideEvidence:
        with self._lock:
            return SlideEvidence(tuple(self._estimates), self._empty)

    def record(self, estimate: tuple[float, int] | None, empty_probe: bool) -> None:
        """Add what one field showed: its own estimate, or an empty probe."""
        with self._lock:
            if estimate is not None:
                self._estimates.append(estimate)
            if empty_probe:
                self._empty += 1


@dataclass(frozen=True)
class EstimatedReading(Generic[R]):
    """The reading a field is answered with, and the estimate it was read at.

    Attributes:
        result: the reading (at ``factor``).
        factor: the factor the field was read at (1: as uploaded).
        estimate: the last estimate (None: too few objects on the first reading).
        readings: how many times the field went through the network.
        pooled: the slide's pooled estimate, when it set the factor.
        empty_probe: the field showed too few objects as uploaded and at ×2.
        probe_skipped: too few objects as uploaded, and not probed (the slide's earlier probes found none).
    """

    result: R
    factor: float
    estimate: LengthEstimate | None
    readings: int
    pooled: SlideEstimate | None = None
    empty_probe: bool = False
    probe_skipped: bool = False


def estimate_and_read(
    read: Callable[[float], tuple[R, Sequence[float]]],
    reference_px: float,
    probe: Callable[[float], Sequence[float]] | None = None,
    slide: SlideEvidence | None = None,
) -> EstimatedReading[R]:
    """Read a field at factor 1, estimate its factor and read it again where the estimate says so; or, on a slide
    whose fields already agree, read it at the slide's factor (module docstring).

    Args:
        read: reads the field at a factor and returns the reading with its kept objects' lengths in the pixels it
            was read at (the model's scale); it may raise for a factor it cannot read (e.g. over the pixel limit).
        reference_px: the model's median kept-object length on its training fields.
        probe: reads a part of the field at a factor and returns its kept objects' lengths there (None: no probe).
        slide: what the slide's earlier fields showed (None: a field on its own).

    Returns:
        the reading; ``estimate`` is the field's own (from a reading as uploaded or the probe), ``pooled`` the
        slide's when it decided the factor.
    """
    pooled = slide.pooled if slide is not None else None
    if pooled is not None and not read_as_is(pooled.factor):
        result, _ = read(pooled.factor)
        return EstimatedReading(result, pooled.factor, None, 1, pooled)
    first, lengths = read(1.0)
    estimate = factor_from_lengths(lengths, 1.0, reference_px)
    if pooled is not None:
        return EstimatedReading(first, 1.0, estimate, 1, pooled)
    readings, empty_probe, skipped = 1, False, False
    if estimate is None and probe is not None:
        if slide is not None and slide.skip_probe:
            skipped = True
        else:
            estimate = factor_from_lengths(probe(PROBE_FACTOR), PROBE_FACTOR, reference_px)
            readings, empty_probe = 2, estimate is None
    if estimate is None or read_as_is(estimate.factor):
        return EstimatedReading(first, 1.0, estimate, readings, None, empty_probe, skipped)
    second, _ = read(estimate.factor)
    return EstimatedReading(second, estimate.factor, estimate, readings + 1)
