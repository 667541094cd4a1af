"""The slide store's objects and reviews (real SQLite files), the counting rules of the reviewed figures, and the
review exports read back by the training data layer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.field_result import BacillusOut, BoundingBox, FieldEstimateOut, ImageInfo, Point, ScaleOut
from service.field_result import FieldSummary as Summary
from service.slides.exports import points_csv, voc_xml
from service.slides.intake import slide_field
from service.slides.model import Decision, ObjectSource
from service.slides.report import slide_report
from service.slides.store import SlideStore

OLD_SCHEMA = """
CREATE TABLE slides (slide_id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE slide_fields (
    slide_id TEXT NOT NULL REFERENCES slides(slide_id) ON DELETE CASCADE, position INTEGER NOT NULL,
    name TEXT NOT NULL, objects INTEGER NOT NULL, estimated_bacilli INTEGER NOT NULL, width INTEGER NOT NULL,
    height INTEGER NOT NULL, model_id TEXT NOT NULL, filter_id TEXT, added_at REAL NOT NULL,
    PRIMARY KEY (slide_id, position)
);
INSERT INTO slides VALUES ('old', 1.0);
INSERT INTO slide_fields VALUES ('old', 0, 'f.png', 2, 3, 100, 80, 'm', 'flt', 1.0);
"""


def _object(i: int, x: int, count: int = 1, score: float | None = 0.9) -> BacillusOut:
    return BacillusOut(
        id=i,
        bbox=BoundingBox(x=x, y=10, width=6, height=12),
        centroid=Point(x=x + 3, y=16),
        area_px=50,
        length_px=12,
        width_px=5,
        mean_probability=0.8,
        max_probability=0.95,
        score=score,
        estimated_count=count,
        outline=[(x, 10), (x + 6, 10), (x + 6, 22), (x, 22), (x, 10)],
    )


def _summary(filter_id: str | None = "flt", rejected: bool = True) -> Summary:
    return Summary(
        model_id="m",
        filter_id=filter_id,
        mode="fast",
        precision="fp32",
        heatmap_exact=False,
        threshold=0.5,
        min_object_px=20,
        object_threshold=0.5,
        image=ImageInfo(width=100, height=80, format="PNG", mode="RGB"),
        microns_per_pixel=None,
        tiles=1,
        bacillus_pixel_fraction=0.01,
        candidates=3,
        count=2,
        estimated_bacilli=3,
        bacilli=[_object(1, 5), _object(2, 40, count=2)],
        rejected=[_object(3, 70, score=0.2)] if rejected else None,
    )


def test_an_old_store_opens_and_its_fields_count_as_before_but_cannot_be_reviewed(tmp_path: Path) -> None:
    path = tmp_path / "slides.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    store = SlideStore(path)
    slide = store.get("old")
    assert slide is not None
    (field,) = slide.fields
    assert (field.mode, field.reviewable, field.afb, field.reviewed_afb) == ("exact", False, 3, 3)
    report = slide_report(slide)
    assert not report.fields[0].reviewable and report.review.total_afb == 3
    assert any("no kept objects" in r for r in report.review.reasons)
    store.close()


def test_reviewed_figures_follow_the_decisions(tmp_path: Path) -> None:
    store = SlideStore(tmp_path / "slides.sqlite3")
    store.ensure("s")
    store.add_fields("s", [slide_field("a.png", _summary(), job=("0" * 32, 0))])
    field = store.get("s").fields[0]  # type: ignore[union-attr]
    assert [o.source for o in field.objects] == [ObjectSource.KEPT, ObjectSource.KEPT, ObjectSource.REJECTED]
    assert field.objects[0].outline == ((5, 10), (11, 10), (11, 22), (5, 22), (5, 10))
    assert field.reviewed_afb == field.afb == 3
    header = store.get("s", objects=False)  # what a request adding fields reads: models and count, no objects
    assert header is not None and header.model_ids == store.get("s").model_ids  # type: ignore[union-attr]
    assert len(header.fields) == 1 and header.fields[0].objects == ()

    store.review("s", 0, 2, Decision.REJECT, "ann")  # the clump of 2: with a filter it counted 2
    store.review("s", 0, 3, Decision.ACCEPT, "ann")  # the rejected candidate
    added = store.add_object("s", 0, 50.4, 60.0, None)
    assert (added.number, added.bbox, added.decision) == (4, (40, 50, 20, 20), Decision.ACCEPT)
    assert store.review("s", 0, 99, Decision.ACCEPT, "ann") is None
    field = store.get("s").fields[0]  # type: ignore[union-attr]
    assert field.reviewed_afb == 3 - 2 + 1 + 1
    report = slide_report(store.get("s"))  # type: ignore[arg-type]
    assert (report.total_afb, report.review.total_afb) == (3, 3)
    assert (report.review.objects_rejected, report.review.objects_accepted, report.review.objects_added) == (1, 1, 1)
    assert report.review.reviewed_by == ["ann"]

    store.review("s", 0, 2, None, "ann")
    assert store.get("s").fields[0].reviewed_afb == 3 + 1 + 1  # type: ignore[union-attr]
    assert store.remove_added("s", 0, 4, "ann") and not store.remove_added("s", 0, 1, "ann")
    assert [e.action for e in store.history("s")] == ["reject", "accept", "add", "clear", "remove"]
    store.close()


def test_without_a_filter_every_object_counts_once(tmp_path: Path) -> None:
    store = SlideStore(tmp_path / "slides.sqlite3")
    store.ensure("s")
    store.add_fields("s", [slide_field("a.png", _summary(filter_id=None))])
    field = store.get("s").fields[0]  # type: ignore[union-attr]
    assert field.afb == 2 and field.reviewed_afb == 2  # objects, not estimated bacilli
    store.close()


def test_a_fields_scale_evidence_is_kept_for_the_slides_later_fields(tmp_path: Path) -> None:
    store = SlideStore(tmp_path / "slides.sqlite3")
    store.ensure("s")
    estimated = ScaleOut(
        microns_per_pixel=0.2,
        source="estimated",
        factor=2.0,
        model_microns_per_pixel=0.1,
        reasons=[],
        field_estimate=FieldEstimateOut(factor=2.05, objects=7),
    )
    empty = estimated.model_copy(update={"source": "assumed", "field_estimate": None, "empty_probe": True})
    other_model = _summary().model_copy(update={"model_id": "other", "scale": estimated})
    fields = [_summary().model_copy(update={"scale": scale}) for scale in (estimated, empty, None)]
    store.add_fields("s", [slide_field(f"{i}.png", f) for i, f in enumerate([*fields, other_model])])
    slide = store.get("s", objects=False)
    assert slide is not None
    assert [f.scale_source for f in slide.fields] == ["estimated", "assumed", None, "estimated"]
    assert slide.scale_evidence("m") == ([(2.05, 7)], 1) and slide.scale_evidence("other") == ([(2.05, 7)], 0)
    assert [f.scale_source for f in slide_report(slide).fields] == ["estimated", "assumed", None, "estimated"]
    store.close()


def test_a_summary_without_rejected_candidates_keeps_no_objects() -> None:
    count = slide_field("a.png", _summary(rejected=False))
    assert not count.reviewable and count.objects == ()


@pytest.mark.parametrize("kind", ["points", "voc"])
def test_the_annotations_read_back_through_the_training_data_layer(tmp_path: Path, kind: str) -> None:
    from PIL import Image

    from training.data.annotations import BoxLabel
    from training.data.dataset import load_dataset

    store = SlideStore(tmp_path / "slides.sqlite3")
    store.ensure("s")
    store.add_fields("s", [slide_field("a.png", _summary())])
    store.review("s", 0, 1, Decision.REJECT, None)
    store.add_object("s", 0, 99.0, 79.0, None)  # at the image's corner: its box is clipped
    field = store.get("s").fields[0]  # type: ignore[union-attr]
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "annotations").mkdir()
    Image.new("RGB", (100, 80)).save(tmp_path / "data" / "images" / "a.png")
    if kind == "points":
        (tmp_path / "data" / "annotations" / "a.csv").write_text(points_csv(field))
    else:
        (tmp_path / "data" / "annotations" / "a.xml").write_text(voc_xml(field, "a.png"))
    (read,) = load_dataset(tmp_path / "data")
    labels = sorted(b.label for b in read.boxes)
    assert labels == sorted([BoxLabel.BACILLI_CLUSTER, BoxLabel.SINGLE_BACILLUS])  # the clump, the added point
    assert all(b.x + b.width <= 100 and b.y + b.height <= 80 for b in read.boxes)
    store.close()


def test_the_counts_csv_keeps_a_formula_looking_name_as_text(tmp_path: Path) -> None:
    from service.slides.exports import counts_csv

    store = SlideStore(tmp_path / "slides.sqlite3")
    store.ensure("s")
    store.add_fields("s", [slide_field("=HYPERLINK(1).png", _summary())])
    text = counts_csv(slide_report(store.get("s")))  # type: ignore[arg-type]
    assert "\n0,'=HYPERLINK(1).png,100,80," in text
    store.close()
