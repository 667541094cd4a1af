"""From a probability map to bacilli: mask, connected components, measurements, outlines.

A bacillus candidate is an 8-connected component of ``P(bacillus) > threshold`` with at least
``min_object_px`` pixels. Its length is the extent of its pixels along their principal axis (exact for
straight rods, slightly short for curved ones), its width the extent across it.
Outlines follow pixel edges, so a polygon encloses exactly the component's pixels (holes left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Bacillus:
    """One detected object, in pixel coordinates of the field (origin top-left, x right, y down).

    Attributes:
        id: 1-based, in order of the object's first pixel (row by row).
        bbox: ``(x, y, width, height)``.
        centroid: ``(x, y)`` of the pixel centres.
        area_px: number of pixels.
        length_px, width_px: extents along and across the principal axis.
        mean_probability, max_probability: of P(bacillus) over the object's pixels.
        outline: closed polygon ``[(x, y), …]`` along the pixel edges (first point repeated last).
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


def _extents(ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp]) -> tuple[float, float]:
    """Extents of the pixels along and across their principal axis (each pixel spans 1 px)."""
    if ys.size == 1:
        return 1.0, 1.0
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    points -= points.mean(axis=0)
    _, vectors = np.linalg.eigh(points.T @ points)
    along, across = points @ vectors[:, 1], points @ vectors[:, 0]
    return float(np.ptp(along) + 1.0), float(np.ptp(across) + 1.0)


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


def find_bacilli(
    heatmap: npt.NDArray[np.float32], threshold: float = 0.5, min_object_px: int = 20
) -> tuple[npt.NDArray[np.bool_], list[Bacillus]]:
    """Threshold the probability map and describe each object large enough to be a bacillus.

    Returns:
        the mask of the kept objects, and the objects.
    """
    mask = heatmap > threshold
    labels, _ = ndi.label(mask, structure=EIGHT_CONNECTED)
    kept_mask = np.zeros_like(mask)
    found: list[Bacillus] = []
    for index, window in enumerate(ndi.find_objects(labels), start=1):
        if window is None:
            continue
        component = labels[window] == index
        area = int(component.sum())
        if area < min_object_px:
            continue
        kept_mask[window] |= component
        ys, xs = np.nonzero(component)
        y0, x0 = window[0].start, window[1].start
        probabilities = heatmap[window][component]
        length, width = _extents(ys, xs)
        found.append(
            Bacillus(
                id=len(found) + 1,
                bbox=(x0, y0, window[1].stop - x0, window[0].stop - y0),
                centroid=(float(xs.mean() + x0), float(ys.mean() + y0)),
                area_px=area,
                length_px=round(length, 2),
                width_px=round(width, 2),
                mean_probability=round(float(probabilities.mean()), 4),
                max_probability=round(float(probabilities.max()), 4),
                outline=trace_outline(component, (x0, y0)),
            )
        )
    return kept_mask, found
