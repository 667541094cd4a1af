"""The slide store: slides in SQLite, so a restart loses none.

Per field it keeps the counts, what they came from, and its objects (kept bacilli and rejected candidates with
their outlines) with a technician's review of each (:class:`~service.slides.model.SlideObject`: accepted,
rejected, or added by hand, with who and when). Images are not copied here: a field that came through a job names
the job's input, which the job store keeps for its retention time. It reads and writes the domain's dataclasses
(:mod:`service.slides.model`), never a wire schema. One connection, serialised by a lock: writes are a few rows
per field, far below what SQLite does in a second.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.slides.model import (
    POINT_BOX_PX,
    Decision,
    ObjectSource,
    ReviewEvent,
    Signature,
    Slide,
    SlideField,
    SlideObject,
    check_slide_id,
)

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
    ("in_domain", "INTEGER"),  # the domain check: 1 in, 0 out, NULL not checked (a store from before it)
    ("domain_distance", "REAL"),
    ("domain_reasons", "TEXT"),  # JSON list
    ("lab_id", "TEXT"),  # the lab profile the field was read with
    ("lab_version", "INTEGER"),
    ("readable", "INTEGER"),  # the quality check: 1 readable, 0 not, NULL not checked
    ("quality_reasons", "TEXT"),  # JSON list
    ("sha256", "TEXT"),  # the image's bytes
    ("fingerprint", "TEXT"),  # its stain-density map (service.engine.fingerprint)
    ("scale_evidence", "TEXT"),  # JSON: the scale's source, the field's own estimate, an empty probe
)

OBJECT_COLUMNS = "number, origin, x, y, bbox, outline, score, estimated_count, decision, reviewer, reviewed_at"


def _object_of(row: Sequence[Any]) -> SlideObject:
    """A :class:`SlideObject` from a row of :data:`OBJECT_COLUMNS`."""
    number, source, x, y, bbox, outline, score, count, decision, reviewer, at = row
    return SlideObject(
        number=number,
        source=ObjectSource(source),
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


def _scale_evidence_json(f: SlideField) -> str | None:
    evidence: dict[str, Any] = {"source": f.scale_source} if f.scale_source else {}
    if f.scale_estimate is not None:
        evidence.update(factor=f.scale_estimate[0], objects=f.scale_estimate[1])
    if f.scale_empty_probe:
        evidence["empty_probe"] = True
    return json.dumps(evidence) if evidence else None


def _scale_evidence_of(text: str | None) -> dict[str, Any]:
    """:class:`SlideField`'s scale arguments from the stored JSON."""
    raw = json.loads(text) if text else {}
    estimate = (float(raw["factor"]), int(raw["objects"])) if "factor" in raw else None
    return {
        "scale_source": raw.get("source"),
        "scale_estimate": estimate,
        "scale_empty_probe": bool(raw.get("empty_probe", False)),
    }


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

    def ensure(self, slide_id: str | None = None) -> tuple[str, bool]:
        """The slide's id, creating the slide when it does not exist; returns ``(id, created)``."""
        slide_id = check_slide_id(slide_id) if slide_id else uuid.uuid4().hex
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO slides (slide_id, created_at) VALUES (?, ?)", (slide_id, time.time())
            )
        return slide_id, cursor.rowcount == 1

    def add_fields(self, slide_id: str, fields: Sequence[SlideField]) -> None:
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
                        "height, model_id, filter_id, added_at, mode, job_id, job_field, objects_kept, in_domain, "
                        "domain_distance, domain_reasons, lab_id, lab_version, readable, quality_reasons, sha256, "
                        "fingerprint, scale_evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                        "?, ?, ?, ?, ?)",
                        (
                            slide_id,
                            last + offset,
                            f.name,
                            f.kept_objects,
                            f.estimated_bacilli,
                            f.width,
                            f.height,
                            f.model_id,
                            f.filter_id,
                            now,
                            f.mode,
                            f.job_id,
                            f.job_field,
                            int(f.reviewable),
                            None if f.in_domain is None else int(f.in_domain),
                            f.domain_distance,
                            json.dumps(list(f.domain_reasons)) if f.domain_reasons else None,
                            f.lab_id,
                            f.lab_version,
                            None if f.readable is None else int(f.readable),
                            json.dumps(list(f.quality_reasons)) if f.quality_reasons else None,
                            f.sha256,
                            f.fingerprint,
                            _scale_evidence_json(f),
                        ),
                    )
                    for o in f.objects:
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
                o.source.value,
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

    def get(self, slide_id: str, objects: bool = True) -> Slide | None:
        """A slide with its fields; ``objects=False`` leaves the fields' objects unread (empty): enough to count the
        fields and see which models read them, at a fraction of the cost (a slide's objects are most of its rows)."""
        with self._lock:
            row = self._db.execute("SELECT created_at FROM slides WHERE slide_id = ?", (slide_id,)).fetchone()
            if row is None:
                return None
            rows = self._db.execute(
                "SELECT position, name, objects, estimated_bacilli, width, height, model_id, filter_id, added_at, "
                "mode, job_id, job_field, objects_kept, in_domain, domain_distance, domain_reasons, lab_id, "
                "lab_version, readable, quality_reasons, sha256, fingerprint, scale_evidence FROM slide_fields "
                "WHERE slide_id = ? "
                "ORDER BY position",
                (slide_id,),
            ).fetchall()
            object_rows = (
                self._db.execute(
                    f"SELECT position, {OBJECT_COLUMNS} FROM slide_objects WHERE slide_id = ? "
                    "ORDER BY position, number",
                    (slide_id,),
                ).fetchall()
                if objects
                else []
            )
            signature_rows = self._db.execute(
                "SELECT signed_at, signed_by, grade, report, total_afb, fields_examined FROM slide_signatures "
                "WHERE slide_id = ? ORDER BY signed_at",
                (slide_id,),
            ).fetchall()
        by_position: dict[int, list[SlideObject]] = {}
        for position, *columns in object_rows:
            by_position.setdefault(position, []).append(_object_of(columns))
        fields = tuple(
            SlideField(
                name=r[1],
                kept_objects=r[2],
                estimated_bacilli=r[3],
                width=r[4],
                height=r[5],
                model_id=r[6],
                filter_id=r[7],
                added_at=r[8],
                mode=r[9],
                job_id=r[10],
                job_field=r[11],
                reviewable=bool(r[12]),
                objects=tuple(by_position.get(r[0], ())),
                in_domain=None if r[13] is None else bool(r[13]),
                domain_distance=r[14],
                domain_reasons=tuple(json.loads(r[15])) if r[15] else (),
                lab_id=r[16],
                lab_version=r[17],
                readable=None if r[18] is None else bool(r[18]),
                quality_reasons=tuple(json.loads(r[19])) if r[19] else (),
                sha256=r[20],
                fingerprint=r[21],
                **_scale_evidence_of(r[22]),
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
                    source=ObjectSource.ADDED,
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
                (slide_id, position, number, ObjectSource.ADDED.value),
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
