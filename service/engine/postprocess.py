"""From a probability map to bacilli: candidates, the object filter's verdicts, measurements, outlines.

A candidate is an 8-connected component of ``P(bacillus) > threshold`` with at least ``min_object_px`` pixels
(:mod:`service.engine.candidates`). With an object filter (:mod:`service.engine.object_filter`) each candidate
gets a score, and those scoring at least the object threshold are kept as bacilli, the others rejected; without
one every candidate is kept (the paper's behaviour). Length is the extent of the pixels along their principal axis
(exact for straight rods, slightly short for curved ones), width the extent across it. Outlines follow pixel
edges, so a polygon encloses exactly the component's pixels (holes left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.engine.candidates import Candidate, find_candidates
from service.engine.defaults import MIN_OBJECT_PX, THRESHOLD
from service.engine.object_filter import ObjectFilter


@dataclass(frozen=True)
class DetectedObject:
    """One object found in a field: a kept bacillus or a candidate the object filter rejected, in pixel
    coordinates of the field (origin top-left, x right, y down).

    Attributes:
        id: 1-based, in order of the object's first pixel (row by row).
        bbox: ``(x, y, width, height)``.
        centroid: ``(x, y)`` of the pixel centres.
        area_px: number of pixels.
        length_px, width_px: extents along and across the principal axis.
        mean_probability, max_probability: of P(bacillus) over the object's pixels.
        outline: closed polygon ``[(x, y), …]`` along the pixel edges (first point repeated last).
        score: the object filter's P(bacillus) for the whole object; None without a filter.
        estimated_count: bacilli it holds (touching rods form one object), from its area; 1 without a filter.
    """

    id: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area_px: int
    length_px: float
    width_px: float
    mean_probability: float
    max_probability: float
    outline: tuple[tuple[int, int], ...]
    score: float | None = None
    estimated_count: int = 1

    def in_microns(self, microns_per_pixel: float) -> Microns:
        """Its size in µm for a pixel size (the one place pixels become microns)."""
        mpp = microns_per_pixel
        return Microns(
            area_um2=round(self.area_px * mpp**2, 4),
            length_um=round(self.length_px * mpp, 4),
            width_um=round(self.width_px * mpp, 4),
        )


@dataclass(frozen=True)
class Microns:
    """An object's size in micrometres (from its pixel measurements and the pixel size)."""

    area_um2: float
    length_um: float
    width_um: float


def trace_outline(component: npt.NDArray[np.bool_], origin: tuple[int, int] = (0, 0)) -> tuple[tuple[int, int], ...]:
    """The outer boundary of a pixel set along pixel edges, as a closed polygon of corner points.

    Boundary edges run clockwise on screen (y down) around the pixels; the longest closed loop is the outer
    boundary. Corners where the boundary goes straight on are dropped.

    Args:
        component: ``[y, x]`` bool crop holding one connected pixel set.
        origin: ``(x, y)`` of the crop's top-left pixel in the field.
    """
    padded = np.pad(component, 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    # For a pixel at (x, y) its corners are (x, y) (x+1, y) (x+1, y+1) (x, y+1); walk them clockwise.
    sides = (
        (padded[:-2, 1:-1], (0, 0), (1, 0)),  # nothing above: top edge, left → right
        (padded[1:-1, 2:], (1, 0), (1, 1)),  # nothing to the right: right edge, down
        (padded[2:, 1:-1], (1, 1), (0, 1)),  # nothing below: bottom edge, right → left
        (padded[1:-1, :-2], (0, 1), (0, 0)),  # nothing to the left: left edge, up
    )
    for neighbour, start, end in sides:
        ys, xs = np.nonzero(inside & ~neighbour)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            edges.setdefault((x + start[0], y + start[1]), []).append((x + end[0], y + end[1]))
    loops = []
    while edges:
        first = next(iter(edges))
        loop, point = [first], first
        while True:
            targets = edges[point]
            nxt = targets.pop()
            if not targets:
                del edges[point]
            if nxt == first:
                break
            loop.append(nxt)
            point = nxt
            if point not in edges:  # a pinch between diagonal pixels closed a sub-loop early
                break
        loops.append(loop)
    outer = max(loops, key=len)
    corners = [
        p
        for i, p in enumerate(outer)
        if (p[0] - outer[i - 1][0], p[1] - outer[i - 1][1])
        != (outer[(i + 1) % len(outer)][0] - p[0], outer[(i + 1) % len(outer)][1] - p[1])
    ]
    ox, oy = origin
    shifted = tuple((x + ox, y + oy) for x, y in corners)
    return (*shifted, shifted[0])


@dataclass(frozen=True)
class Objects:
    """The objects of one field.

    Attributes:
        kept_mask: ``[y, x]`` bool, the pixels of the kept bacilli.
        kept: the bacilli.
        rejected: candidates the object filter rejected (empty without a filter).
    """

    kept_mask: npt.NDArray[np.bool_]
    kept: tuple[DetectedObject, ...]
    rejected: tuple[DetectedObject, ...]

    @property
    def estimated_bacilli(self) -> int:
        return sum(b.estimated_count for b in self.kept)


def _describe(c: Candidate, number: int, score: float | None, estimated: int) -> DetectedObject:
    x0, y0, width, height = c.bbox
    ys, xs = np.nonzero(c.component)
    return DetectedObject(
        id=number,
        bbox=(x0, y0, width, height),
        centroid=(float(xs.mean() + x0), float(ys.mean() + y0)),
        area_px=int(ys.size),
        length_px=round(c.feature("length_px"), 2),
        width_px=round(c.feature("width_px"), 2),
        mean_probability=round(c.feature("p_mean"), 4),
        max_probability=round(c.feature("p_max"), 4),
        outline=trace_outline(c.component, (x0, y0)),
        score=None if score is None else round(score, 4),
        estimated_count=estimated,
    )


def find_bacilli(
    heatmap: npt.NDArray[np.float32],
    rgb: npt.NDArray[np.uint8] | None = None,
    threshold: float = THRESHOLD,
    min_object_px: int = MIN_OBJECT_PX,
    object_filter: ObjectFilter | None = None,
    object_threshold: float | None = None,
) -> Objects:
    """Candidates of the probability map, kept or rejected by the object filter when there is one.

    Args:
        heatmap: ``[y, x]`` P(bacillus).
        rgb: the field (``[y, x, 3]`` uint8); needed for the filter's stain features. Without it (and without a
            filter) stain features are measured on a grey field and ignored.
        threshold: P(bacillus) above which a pixel belongs to a candidate.
        min_object_px: smallest candidate.
        object_filter: the object classifier, or None to keep every candidate.
        object_threshold: score a candidate needs to be kept (default: the filter's own).
    """
    if rgb is None:
        if object_filter is not None:
            raise ValueError("the object filter needs the field's colours (rgb)")
        rgb = np.zeros((*heatmap.shape, 3), dtype=np.uint8)
    candidates = find_candidates(heatmap, rgb, threshold, min_object_px)
    if object_filter is None:
        kept = tuple(_describe(c, i, None, 1) for i, c in enumerate(candidates.items, start=1))
        return Objects(candidates.mask_of(), kept, ())
    cut = object_filter.cut(object_threshold)
    scores = object_filter.scores(candidates.feature_matrix())
    keep = scores >= cut
    described = [
        _describe(c, i, float(score), object_filter.estimated_count(c.feature("area_px")))
        for i, (c, score) in enumerate(zip(candidates.items, scores, strict=True), start=1)
    ]
    return Objects(
        candidates.mask_of(keep),
        tuple(b for b, k in zip(described, keep, strict=True) if k),
        tuple(b for b, k in zip(described, keep, strict=True) if not k),
    )
