"""Slides: named sets of fields with their bacillus counts and objects, kept in SQLite so a restart loses none.

Per field the store keeps its counts, what they came from, and its objects (kept bacilli and rejected candidates
with their outlines) with a technician's review of each (:class:`SlideObject`: accepted, rejected, or added by
hand, with who and when). Images are not copied here: a field that came through a job names the job's input, which
the job store keeps for its retention time. A slide's grades, automatic and reviewed, are recomputed from these
rows whenever it is read (:mod:`service.slide_report`). One connection, serialised by a lock: writes are a few
rows per field, far below what SQLite does in a second.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from service.field_result import BacillusOut, FieldSummary

SLIDE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # 1–64 characters; also the API's parameter pattern
SLIDE_ID = re.compile(SLIDE_ID_PATTERN)
SCHEMA = """
CREATE TABLE IF NOT EXISTS slides (
    slide_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS slide_fields (
    slide_id TEXT NOT NULL REFERENCES slides(slide_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    objects INTEGER NOT NULL,
    estimated_bacilli INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    filter_id TEXT,
    added_at REAL NOT NULL,
    mode TEXT NOT NULL DEFAULT 'exact',
    PRIMARY KEY (slide_id, position)
);
CREATE TABLE IF NOT EXISTS slide_objects (
    slide_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    number INTEGER NOT NULL,
    origin TEXT NOT NULL,
    x REAL NOT NULL,
    y REAL NOT NULL,
    bbox TEXT NOT NULL,
    outline TEXT,
    score REAL,
    estimated_count INTEGER NOT NULL,
    decision TEXT,
    reviewer TEXT,
    reviewed_at REAL,
    PRIMARY KEY (slide_id, position, number),
    FOREIGN KEY (slide_id, position) REFERENCES slide_fields(slide_id, position) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS slide_signatures (
    slide_id TEXT NOT NULL REFERENCES slides(slide_id) ON DELETE CASCADE,
    signed_at REAL NOT NULL,
    signed_by TEXT NOT NULL,
    grade TEXT,
    report TEXT,
    total_afb INTEGER NOT NULL,
    fields_examined INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS slide_review_events (
    slide_id TEXT NOT NULL REFERENCES slides(slide_id) ON DELETE CASCADE,
    at REAL NOT NULL,
    reviewer TEXT,
    action TEXT NOT NULL,
    position INTEGER,
    number INTEGER
);
"""
# Columns added after the first release, added to an older store when it is opened (name, declaration).
FIELD_COLUMNS_ADDED = (
    ("mode", "TEXT NOT NULL DEFAULT 'exact'"),  # a store from before modes: its fields were read in exact mode
    ("job_id", "TEXT"),  # the job whose input holds the field's image
    ("job_field", "INTEGER"),
    ("objects_kept", "INTEGER NOT NULL DEFAULT 0"),  # 1 when its objects are in slide_objects (reviewable)
)
POINT_BOX_PX = 20  # side of the box an added point stands for (as training reads point annotations)


class Origin(StrEnum):
    """Where an object of a slide's field comes from."""

    KEPT = "kept"  # kept as a bacillus by the model (and its object filter)
    REJECTED = "rejected"  # a candidate the object filter rejected
    ADDED = "added"  # marked by a reviewer where the model found nothing


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True)
class SlideObject:
    """One object of a slide's field and its review.

    Attributes:
        number: 1-based within the field: the model's kept objects, then its rejected candidates, then added ones.
        origin: kept, rejected or added.
        x, y: centre (pixels, origin top-left).
        bbox: (x, y, width, height).
        outline: closed polygon along the pixel edges; None for an added point.
        score: the object filter's P(bacillus); None without a filter or for an added point.
        estimated_count: bacilli the object stands for (touching rods); 1 for an added point.
        decision: the reviewer's, or None when not reviewed.
        reviewer: who decided (the API key's user, or the name the client gave); None when unknown.
        reviewed_at: Unix time of the decision.
    """

    number: int
    origin: Origin
    x: float
    y: float
    bbox: tuple[int, int, int, int]
    outline: tuple[tuple[int, int], ...] | None
    score: float | None
    estimated_count: int
    decision: Decision | None = None
    reviewer: str | None = None
    reviewed_at: float | None = None

    @classmethod
    def of(cls, number: int, origin: Origin, b: BacillusOut) -> SlideObject:
        return cls(
            number=number,
            origin=origin,
            x=b.centroid.x,
            y=b.centroid.y,
            bbox=(b.bbox.x, b.bbox.y, b.bbox.width, b.bbox.height),
            outline=tuple((int(p[0]), int(p[1])) for p in b.outline) if b.outline else None,
            score=b.score,
            estimated_count=b.estimated_count,
        )

    @property
    def counted(self) -> bool:
        """Whether it counts after review: accepted, or kept by the model and not rejected."""
        return self.decision is Decision.ACCEPT or (self.decision is None and self.origin is Origin.KEPT)


@dataclass(frozen=True)
class FieldCount:
    """One examined field of a slide."""

    name: str
    objects: int
    estimated_bacilli: int
    width: int
    height: int
    model_id: str
    filter_id: str | None
    added_at: float = 0.0
    mode: str = "exact"
    job_id: str | None = None
    job_field: int | None = None
    objects_kept: bool = False
    items: tuple[SlideObject, ...] = ()

    @classmethod
    def of(
        cls, name: str, summary: FieldSummary, added_at: float = 0.0, job: tuple[str, int] | None = None
    ) -> FieldCount:
        """The counts of a field's summary, under the name it was sent with; its objects are kept (for review)
        when the summary lists its rejected candidates too. ``job``: the (job id, field) holding its image."""
        kept = summary.rejected is not None
        items = (
            tuple(SlideObject.of(i, Origin.KEPT, b) for i, b in enumerate(summary.bacilli, start=1))
            + tuple(
                SlideObject.of(len(summary.bacilli) + i, Origin.REJECTED, b)
                for i, b in enumerate(summary.rejected or (), start=1)
            )
            if kept
            else ()
        )
        return cls(
            name=name,
            objects=summary.count,
            estimated_bacilli=summary.estimated_bacilli,
            width=summary.image.width,
            height=summary.image.height,
            model_id=summary.model_id,
            filter_id=summary.filter_id,
            added_at=added_at,
            mode=summary.mode,
            job_id=job[0] if job else None,
            job_field=job[1] if job else None,
            objects_kept=kept,
            items=items,
        )

    @property
    def afb(self) -> int:
        """Bacilli counted for grading: the estimated bacilli with an object filter, else the objects."""
        return self.estimated_bacilli if self.filter_id else self.objects

    def afb_of(self, item: SlideObject) -> int:
        """Bacilli an object counts for, as :attr:`afb` counts them: its estimate with a filter, else 1."""
        return item.estimated_count if self.filter_id and item.origin is not Origin.ADDED else 1

    @property
    def reviewed_afb(self) -> int:
        """Bacilli counted after review; equals :attr:`afb` before any decision (or without kept objects)."""
        if not self.objects_kept:
            return self.afb
        return sum(self.afb_of(o) for o in self.items if o.counted)

    @property
    def decisions(self) -> tuple[SlideObject, ...]:
        return tuple(o for o in self.items if o.decision is not None)


@dataclass(frozen=True)
class ReviewEvent:
    """One entry of a slide's review history: every decision, cleared decision, addition, removal and
    signature, with who and when (a decision cleared later stays in the history)."""

    at: float
    reviewer: str | None
    action: str  # accept, reject, clear, add, remove, sign
    field: int | None
    number: int | None


@dataclass(frozen=True)
class Signature:
    """A reviewer's signature of the slide's reviewed grade, as it stood when signed."""

    signed_at: float
    signed_by: str
    grade: str | None
    report: str | None
    total_afb: int
    fields_examined: int


@dataclass(frozen=True)
class Slide:
    slide_id: str
    created_at: float
    fields: tuple[FieldCount, ...]
    signatures: tuple[Signature, ...] = ()

    @property
    def signature(self) -> Signature | None:
        return self.signatures[-1] if self.signatures else None

    @property
    def model_ids(self) -> list[str]:
        """The models that read its fields, in the order they first appear."""
        return list(dict.fromkeys(f.model_id for f in self.fields))

    def other_models(self, model_id: str) -> list[str]:
        """The models other than ``model_id`` that read some of its fields."""
        return [m for m in self.model_ids if m != model_id]


OBJECT_COLUMNS = "number, origin, x, y, bbox, outline, score, estimated_count, decision, reviewer, reviewed_at"


def _object_of(row: Sequence[Any]) -> SlideObject:
    """A :class:`SlideObject` from a row of :data:`OBJECT_COLUMNS`."""
    number, origin, x, y, bbox, outline, score, count, decision, reviewer, at = row
    return SlideObject(
        number=number,
        origin=Origin(origin),
        x=x,
        y=y,
        bbox=tuple(json.loads(bbox)),
        outline=tuple(tuple(p) for p in json.loads(outline)) if outline else None,
        score=score,
        estimated_count=count,
        decision=Decision(decision) if decision else None,
        reviewer=reviewer,
        reviewed_at=at,
    )


class SlideStore:
    """Slides in one SQLite file (created with its folder when missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(slide_fields)")}
        for name, declaration in FIELD_COLUMNS_ADDED:
            if name not in columns:
                self._db.execute(f"ALTER TABLE slide_fields ADD COLUMN {name} {declaration}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def check_id(slide_id: str) -> str:
        if not SLIDE_ID.match(slide_id):
            raise ValueError(
                f"slide id {slide_id[:80]!r} is not valid: 1–64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        return slide_id

    def ensure(self, slide_id: str | None = None) -> tuple[str, bool]:
        """The slide's id, creating the slide when it does not exist; returns ``(id, created)``."""
        slide_id = self.check_id(slide_id) if slide_id else uuid.uuid4().hex
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO slides (slide_id, created_at) VALUES (?, ?)", (slide_id, time.time())
            )
        return slide_id, cursor.rowcount == 1

    def add_fields(self, slide_id: str, fields: list[FieldCount]) -> None:
        """Append fields to an existing slide, in order, in one transaction."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._db.execute(
                    "SELECT COALESCE(MAX(position), -1) FROM slide_fields WHERE slide_id = ?", (slide_id,)
                ).fetchone()
                for offset, f in enumerate(fields, start=1):
                    self._db.execute(
                        "INSERT INTO slide_fields (slide_id, position, name, objects, estimated_bacilli, width, "
                        "height, model_id, filter_id, added_at, mode, job_id, job_field, objects_kept) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            slide_id,
                            last + offset,
                            f.name,
                            f.objects,
                            f.estimated_bacilli,
                            f.width,
                            f.height,
                            f.model_id,
                            f.filter_id,
                            now,
                            f.mode,
                            f.job_id,
                            f.job_field,
                            int(f.objects_kept),
                        ),
                    )
                    for o in f.items:
                        self._insert_object(slide_id, last + offset, o)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _insert_object(self, slide_id: str, position: int, o: SlideObject) -> None:
        self._db.execute(
            "INSERT INTO slide_objects (slide_id, position, number, origin, x, y, bbox, outline, score, "
            "estimated_count, decision, reviewer, reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                slide_id,
                position,
                o.number,
                o.origin.value,
                o.x,
                o.y,
                json.dumps(o.bbox),
                json.dumps(o.outline) if o.outline is not None else None,
                o.score,
                o.estimated_count,
                o.decision.value if o.decision else None,
                o.reviewer,
                o.reviewed_at,
            ),
        )

    def get(self, slide_id: str) -> Slide | None:
        with self._lock:
            row = self._db.execute("SELECT created_at FROM slides WHERE slide_id = ?", (slide_id,)).fetchone()
            if row is None:
                return None
            rows = self._db.execute(
                "SELECT position, name, objects, estimated_bacilli, width, height, model_id, filter_id, added_at, "
                "mode, job_id, job_field, objects_kept FROM slide_fields WHERE slide_id = ? ORDER BY position",
                (slide_id,),
            ).fetchall()
            object_rows = self._db.execute(
                f"SELECT position, {OBJECT_COLUMNS} FROM slide_objects WHERE slide_id = ? ORDER BY position, number",
                (slide_id,),
            ).fetchall()
            signature_rows = self._db.execute(
                "SELECT signed_at, signed_by, grade, report, total_afb, fields_examined FROM slide_signatures "
                "WHERE slide_id = ? ORDER BY signed_at",
                (slide_id,),
            ).fetchall()
        items: dict[int, list[SlideObject]] = {}
        for position, *columns in object_rows:
            items.setdefault(position, []).append(_object_of(columns))
        fields = tuple(
            FieldCount(
                name=r[1],
                objects=r[2],
                estimated_bacilli=r[3],
                width=r[4],
                height=r[5],
                model_id=r[6],
                filter_id=r[7],
                added_at=r[8],
                mode=r[9],
                job_id=r[10],
                job_field=r[11],
                objects_kept=bool(r[12]),
                items=tuple(items.get(r[0], ())),
            )
            for r in rows
        )
        return Slide(slide_id, row[0], fields, tuple(Signature(*r) for r in signature_rows))

    def _log(
        self, slide_id: str, at: float, reviewer: str | None, action: str, position: int | None, number: int | None
    ) -> None:
        self._db.execute(
            "INSERT INTO slide_review_events (slide_id, at, reviewer, action, position, number) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (slide_id, at, reviewer, action, position, number),
        )

    def history(self, slide_id: str) -> list[ReviewEvent]:
        """The slide's review history, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at, reviewer, action, position, number FROM slide_review_events WHERE slide_id = ? "
                "ORDER BY at, rowid",
                (slide_id,),
            ).fetchall()
        return [ReviewEvent(*r) for r in rows]

    def review(
        self, slide_id: str, position: int, number: int, decision: Decision | None, reviewer: str | None
    ) -> SlideObject | None:
        """Record (or, with None, clear) a decision on an object; None when there is no such object."""
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "UPDATE slide_objects SET decision = ?, reviewer = ?, reviewed_at = ? "
                "WHERE slide_id = ? AND position = ? AND number = ?",
                (
                    decision.value if decision else None,
                    reviewer if decision else None,
                    now if decision else None,
                    slide_id,
                    position,
                    number,
                ),
            )
            if cursor.rowcount == 1:
                self._log(slide_id, now, reviewer, decision.value if decision else "clear", position, number)
        return self._object(slide_id, position, number) if cursor.rowcount == 1 else None

    def add_object(self, slide_id: str, position: int, x: float, y: float, reviewer: str | None) -> SlideObject:
        """Add a bacillus the model missed, at (x, y), accepted by ``reviewer``."""
        half = POINT_BOX_PX // 2
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._db.execute(
                    "SELECT COALESCE(MAX(number), 0) FROM slide_objects WHERE slide_id = ? AND position = ?",
                    (slide_id, position),
                ).fetchone()
                added = SlideObject(
                    number=last + 1,
                    origin=Origin.ADDED,
                    x=x,
                    y=y,
                    bbox=(round(x) - half, round(y) - half, POINT_BOX_PX, POINT_BOX_PX),
                    outline=None,
                    score=None,
                    estimated_count=1,
                    decision=Decision.ACCEPT,
                    reviewer=reviewer,
                    reviewed_at=time.time(),
                )
                self._insert_object(slide_id, position, added)
                self._log(slide_id, added.reviewed_at or 0.0, reviewer, "add", position, added.number)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def remove_added(self, slide_id: str, position: int, number: int, reviewer: str | None) -> bool:
        """Remove an object a reviewer added; False when there is no such added object."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM slide_objects WHERE slide_id = ? AND position = ? AND number = ? AND origin = ?",
                (slide_id, position, number, Origin.ADDED.value),
            )
            if cursor.rowcount == 1:
                self._log(slide_id, time.time(), reviewer, "remove", position, number)
        return cursor.rowcount == 1

    def sign(self, slide_id: str, signature: Signature) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO slide_signatures (slide_id, signed_at, signed_by, grade, report, total_afb, "
                "fields_examined) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (slide_id, *(getattr(signature, k) for k in Signature.__dataclass_fields__)),
            )
            self._log(slide_id, signature.signed_at, signature.signed_by, "sign", None, None)

    def _object(self, slide_id: str, position: int, number: int) -> SlideObject | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {OBJECT_COLUMNS} FROM slide_objects WHERE slide_id = ? AND position = ? AND number = ?",
                (slide_id, position, number),
            ).fetchone()
        return _object_of(row) if row is not None else None

    def delete(self, slide_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM slides WHERE slide_id = ?", (slide_id,)).rowcount == 1
