"""The gallery's ranking and its thumbnails (pure functions; the routes are tested on a real server)."""

from __future__ import annotations

import numpy as np

from service.render import OUTLINE_COLOUR, thumbnail
from service.slides.gallery import ranked_candidates
from service.slides.model import ObjectSource, Slide, SlideField, SlideObject


def _object(number: int, source: ObjectSource, score: float | None) -> SlideObject:
    return SlideObject(number, source, 10.0, 10.0, (5, 5, 10, 10), None, score, 1)


def test_candidates_rank_by_score_across_fields_and_added_ones_are_left_out() -> None:
    def field(objects: tuple[SlideObject, ...]) -> SlideField:
        return SlideField("f.png", 1, 1, 50, 50, "m", "flt", reviewable=True, objects=objects)

    slide = Slide(
        "s",
        0.0,
        (
            field((_object(1, ObjectSource.KEPT, 0.7), _object(2, ObjectSource.REJECTED, 0.2))),
            field((_object(1, ObjectSource.REJECTED, 0.9), _object(2, ObjectSource.ADDED, None))),
            field((_object(1, ObjectSource.KEPT, None),)),
        ),
    )
    ranked = [(g.field_index, g.item.number) for g in ranked_candidates(slide)]
    assert ranked == [(1, 1), (0, 1), (0, 2), (2, 1)]  # scored first, best first; unscored last; added never


def test_a_thumbnail_has_context_is_reduced_and_stays_inside_the_field() -> None:
    rgb = np.full((400, 600, 3), 200, np.uint8)
    crop = thumbnail(rgb, (100, 100, 20, 60), size=64)
    assert max(crop.shape[:2]) == 64 and crop.dtype == np.uint8
    assert (crop.reshape(-1, 3) == OUTLINE_COLOUR).all(axis=1).any()  # the box's corners are drawn
    corner = thumbnail(rgb, (0, 0, 8, 8), size=256)  # at the field's edge: clipped, never enlarged
    assert corner.shape[:2] == (48, 48)
    edge = thumbnail(rgb, (590, 390, 10, 10), size=256)
    assert edge.shape[0] <= 48 and edge.shape[1] <= 48
