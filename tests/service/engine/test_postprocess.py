"""Objects from probability maps: measurements and outlines on hand-made shapes."""

from __future__ import annotations

import numpy as np

from service.engine.postprocess import find_bacilli, trace_outline


def _polygon_area(points: tuple[tuple[int, int], ...]) -> float:
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return 0.5 * abs(float(np.dot(xs[:-1], ys[1:]) - np.dot(xs[1:], ys[:-1])))


def test_a_rod_is_measured() -> None:
    heat = np.zeros((60, 80), dtype=np.float32)
    heat[20:24, 10:50] = 0.9  # 40 × 4 rod
    heat[21, 30] = 0.99
    heat[50, 70] = 0.8  # a 1-pixel speck: too small
    objects = find_bacilli(heat, threshold=0.5, min_object_px=20)
    mask, found = objects.kept_mask, objects.kept
    assert len(found) == 1 and mask.sum() == 160 and not mask[50, 70] and objects.rejected == ()
    rod = found[0]
    assert rod.bbox == (10, 20, 40, 4) and rod.area_px == 160
    assert rod.centroid == (29.5, 21.5)
    assert rod.length_px == 40 and rod.width_px == 4
    assert rod.max_probability == 0.99 and 0.9 < rod.mean_probability < 0.91
    assert rod.outline == ((10, 20), (50, 20), (50, 24), (10, 24), (10, 20))
    assert rod.score is None and rod.estimated_count == 1 and objects.estimated_bacilli == 1


def test_diagonal_rod_length_and_outline_area() -> None:
    heat = np.zeros((50, 50), dtype=np.float32)
    for i in range(30):
        heat[10 + i, 10 + i : 13 + i] = 1.0
    (rod,) = find_bacilli(heat).kept
    assert abs(rod.length_px - 30 * np.sqrt(2)) < 3
    assert _polygon_area(rod.outline) == rod.area_px


def test_outline_of_an_l_shape_and_of_pixels_touching_at_a_corner() -> None:
    shape = np.zeros((4, 4), dtype=bool)
    shape[0:3, 0] = True
    shape[2, 1:3] = True
    outline = trace_outline(shape, origin=(5, 7))
    assert outline[0] == outline[-1]
    assert _polygon_area(outline) == 5
    assert {(5, 7), (6, 7), (8, 10), (5, 10)} <= set(outline)
    diagonal = np.eye(3, dtype=bool)
    assert _polygon_area(trace_outline(diagonal)) >= 1


def test_nothing_found() -> None:
    objects = find_bacilli(np.zeros((10, 10), dtype=np.float32))
    assert objects.kept == () and not objects.kept_mask.any()
