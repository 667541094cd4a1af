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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

MIN_OBJECTS = 5
READ_AS_IS = (0.7, 1.45)
PROBE_FACTOR = 2.0
PROBE_PIXELS = 2_000_000  # the probe's pixels once enlarged: a 2592×1944 field pays about 40% more
LARGEST_FACTOR = 4.0
SMALLEST_FACTOR = 0.25

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
class EstimatedReading(Generic[R]):
    """The reading a field is answered with, and the estimate it was read at.

    Attributes:
        result: the reading (at ``factor``).
        factor: the factor the field was read at (1: as uploaded).
        estimate: the last estimate (None: too few objects on the first reading).
        readings: how many times the field went through the network.
    """

    result: R
    factor: float
    estimate: LengthEstimate | None
    readings: int


def estimate_and_read(
    read: Callable[[float], tuple[R, Sequence[float]]],
    reference_px: float,
    probe: Callable[[float], Sequence[float]] | None = None,
) -> EstimatedReading[R]:
    """Read a field at factor 1, estimate its factor and read it again where the estimate says so (module
    docstring).

    Args:
        read: reads the field at a factor and returns the reading with its kept objects' lengths in the pixels it
            was read at (the model's scale); it may raise for a factor it cannot read (e.g. over the pixel limit).
        reference_px: the model's median kept-object length on its training fields.
        probe: reads a part of the field at a factor and returns its kept objects' lengths there (None: no probe).
    """
    first, lengths = read(1.0)
    estimate = factor_from_lengths(lengths, 1.0, reference_px)
    readings = 1
    if estimate is None and probe is not None:
        estimate = factor_from_lengths(probe(PROBE_FACTOR), PROBE_FACTOR, reference_px)
        readings = 2
    if estimate is None or read_as_is(estimate.factor):
        return EstimatedReading(first, 1.0, estimate, readings)
    second, _ = read(estimate.factor)
    return EstimatedReading(second, estimate.factor, estimate, readings + 1)
