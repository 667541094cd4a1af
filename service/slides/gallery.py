"""A slide's ranked gallery: every candidate of every field, kept and rejected, best score first.

What a technician confirms or rejects in a minute instead of reading 100 fields (TBDx, Zurac et al.: a person
re-reads what the machine cannot sign). The object filter's score orders them: on a negative slide the few false
bacilli and the best-scoring debris come first, and one confirmed bacillus makes the slide positive. Objects a
reviewer added are not candidates and are left out; an object without a score (a model without a filter) ranks
after the scored ones, in field order.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.slides.model import ObjectSource, Slide, SlideField, SlideObject


@dataclass(frozen=True)
class GalleryItem:
    """One candidate of the slide, with where it lies."""

    field_index: int
    field: SlideField
    item: SlideObject


def ranked_candidates(slide: Slide) -> list[GalleryItem]:
    """The slide's candidates (kept and rejected, never added ones), best filter score first; ties and unscored
    objects in field and object order."""
    items = [
        GalleryItem(i, f, o)
        for i, f in enumerate(slide.fields)
        for o in f.objects
        if o.source is not ObjectSource.ADDED
    ]
    return sorted(
        items,
        key=lambda g: (g.item.score is None, -(g.item.score or 0.0), g.field_index, g.item.number),
    )
