"""Bacillus candidates and the measurements that tell rods from debris.

A candidate is an 8-connected component of ``P(bacillus) > threshold`` with at least ``min_object_px`` pixels
(the paper's mask, cut into objects). Touching rods stay one candidate; how many bacilli it holds is estimated
from its area by the object filter (:mod:`service.engine.object_filter`).

Each candidate is measured (:data:`FEATURES`, in this order):

* shape: area, length and width along and across the principal axis, elongation (length / width), extent
  (area / bounding-box area), solidity (area / convex-hull area, low for bent or branching shapes), compactness
  (4π·area / perimeter², 1 for a disc, low for thin rods);
* network: mean, 10th percentile and max of P(bacillus), and the share of its pixels above 0.9;
* stain: mean R, G, B inside; chromaticity (R and B shares of R+G+B); R − G and R − B; the same means in a
  ring 1–4 px around it and the differences (contrast against the local background); darkness (mean of R, G, B).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from service.engine.defaults import MIN_OBJECT_PX, THRESHOLD

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
RING_PX = 4
SURE_P = 0.9  # a pixel above this counts towards a candidate's sure share (a filter feature)
FEATURES = (
    "area_px",
    "length_px",
    "width_px",
    "elongation",
    "extent",
    "solidity",
    "compactness",
    "p_mean",
    "p_10th_percentile",
    "p_max",
    "p_share_above_0_9",
    "r_mean",
    "g_mean",
    "b_mean",
    "r_share",
    "b_share",
    "r_minus_g",
    "r_minus_b",
    "ring_r_mean",
    "ring_g_mean",
    "ring_b_mean",
    "r_contrast",
    "g_contrast",
    "b_contrast",
    "darkness",
)


@dataclass(frozen=True)
class Candidate:
    """One component of the thresholded heatmap, in field pixel coordinates (origin top-left).

    Attributes:
        label: its value in :attr:`Candidates.labels` (1-based, row-major order of first pixel).
        window: ``(rows, cols)`` slices of its bounding box.
        component: ``[h, w]`` bool, its pixels inside the window.
        features: its measurements, in :data:`FEATURES` order.
    """

    label: int
    window: tuple[slice, slice]
    component: npt.NDArray[np.bool_]
    features: npt.NDArray[np.float32]

    def feature(self, name: str) -> float:
        return float(self.features[FEATURES.index(name)])

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)``."""
        rows, cols = self.window
        return cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start

    @property
    def first_pixel(self) -> tuple[int, int]:
        """``(y, x)`` of one of its pixels."""
        ys, xs = np.nonzero(self.component)
        return int(ys[0] + self.window[0].start), int(xs[0] + self.window[1].start)


@dataclass(frozen=True)
class Candidates:
    """Every candidate of a field, with the component labels they came from."""

    labels: npt.NDArray[np.int32]
    items: tuple[Candidate, ...]

    def feature_matrix(self) -> npt.NDArray[np.float32]:
        """``[n, len(FEATURES)]``."""
        if not self.items:
            return np.zeros((0, len(FEATURES)), dtype=np.float32)
        return np.stack([c.features for c in self.items])

    def mask_of(self, chosen: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.bool_]:
        """The pixels of the candidates (all, or those where ``chosen`` is True)."""
        keep = np.zeros(int(self.labels.max(initial=0)) + 1, dtype=bool)
        for i, c in enumerate(self.items):
            keep[c.label] = True if chosen is None else bool(chosen[i])
        return keep[self.labels]


def principal_extents(ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp]) -> tuple[float, float]:
    """Extents of pixels along and across their principal axis (each pixel spans 1 px)."""
    if ys.size == 1:
        return 1.0, 1.0
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    points -= points.mean(axis=0)
    _, vectors = np.linalg.eigh(points.T @ points)
    along, across = points @ vectors[:, 1], points @ vectors[:, 0]
    return float(np.ptp(along) + 1.0), float(np.ptp(across) + 1.0)


def _solidity(ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], area: int) -> float:
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    try:
        hull = ConvexHull(corners.astype(np.float64))
    except QhullError:
        return 1.0
    return float(min(1.0, area / hull.volume))  # a 2-D hull's "volume" is its area


def _perimeter(component: npt.NDArray[np.bool_]) -> int:
    padded = np.pad(component, 1)
    return int((padded[1:, :] != padded[:-1, :]).sum() + (padded[:, 1:] != padded[:, :-1]).sum())


def measure(
    component: npt.NDArray[np.bool_],
    heat: npt.NDArray[np.float32],
    rgb: npt.NDArray[np.uint8],
    ring: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float32]:
    """The :data:`FEATURES` of one component (``component``, ``heat``, ``rgb``, ``ring``: one window around it)."""
    ys, xs = np.nonzero(component)
    area = int(ys.size)
    length, width = principal_extents(ys, xs)
    box_area = (int(np.ptp(ys)) + 1) * (int(np.ptp(xs)) + 1)
    p = heat[component].astype(np.float64)
    inside = rgb[component].astype(np.float64).mean(axis=0)
    around = rgb[ring].astype(np.float64).mean(axis=0) if ring.any() else inside
    total = max(float(inside.sum()), 1.0)
    values = (
        area,
        length,
        width,
        length / width,
        area / box_area,
        _solidity(ys, xs, area),
        4 * np.pi * area / max(_perimeter(component), 1) ** 2,
        p.mean(),
        np.percentile(p, 10),
        p.max(),
        (p > SURE_P).mean(),
        *inside,
        inside[0] / total,
        inside[2] / total,
        inside[0] - inside[1],
        inside[0] - inside[2],
        *around,
        *(around - inside),
        inside.mean(),
    )
    return np.asarray(values, dtype=np.float32)


def find_candidates(
    heatmap: npt.NDArray[np.float32],
    rgb: npt.NDArray[np.uint8],
    threshold: float = THRESHOLD,
    min_object_px: int = MIN_OBJECT_PX,
) -> Candidates:
    """Cut ``heatmap > threshold`` into 8-connected components and measure those of ``min_object_px`` or more."""
    found, _ = ndi.label(heatmap > threshold, structure=EIGHT_CONNECTED)
    labels: npt.NDArray[np.int32] = np.asarray(found, dtype=np.int32)
    height, width = labels.shape
    items = []
    for index, window in enumerate(ndi.find_objects(labels), start=1):
        if window is None:
            continue
        rows, cols = window
        component = labels[window] == index
        if int(component.sum()) < min_object_px:
            continue
        # a window grown by the ring's width, for the local background
        y0, y1 = max(rows.start - RING_PX, 0), min(rows.stop + RING_PX, height)
        x0, x1 = max(cols.start - RING_PX, 0), min(cols.stop + RING_PX, width)
        grown = labels[y0:y1, x0:x1] == index
        ring = ndi.binary_dilation(grown, EIGHT_CONNECTED, iterations=RING_PX) & ~grown & (labels[y0:y1, x0:x1] == 0)
        features = measure(grown, heatmap[y0:y1, x0:x1], rgb[y0:y1, x0:x1], ring)
        items.append(Candidate(index, (rows, cols), component, features))
    return Candidates(labels, tuple(items))
