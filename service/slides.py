"""Slides: named sets of fields with their bacillus counts, kept in SQLite so a restart loses none of them.

Only counts and what they came from are stored (never the images): a slide's grade is recomputed from them
(:mod:`service.grading`) whenever it is read. One connection, serialised by a lock: writes are a few rows per
field, far below what SQLite does in a second.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from service.field_result import FieldSummary

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
"""


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

    @classmethod
    def of(cls, name: str, summary: FieldSummary, added_at: float = 0.0) -> FieldCount:
        """The counts of a field's summary, under the name it was sent with."""
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
        )

    @property
    def afb(self) -> int:
        """Bacilli counted for grading: the estimated bacilli with an object filter, else the objects."""
        return self.estimated_bacilli if self.filter_id else self.objects


@dataclass(frozen=True)
class Slide:
    slide_id: str
    created_at: float
    fields: tuple[FieldCount, ...]

    @property
    def model_ids(self) -> list[str]:
        """The models that read its fields, in the order they first appear."""
        return list(dict.fromkeys(f.model_id for f in self.fields))

    def other_models(self, model_id: str) -> list[str]:
        """The models other than ``model_id`` that read some of its fields."""
        return [m for m in self.model_ids if m != model_id]


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
        if "mode" not in columns:  # a store from before modes: its fields were read in exact mode
            self._db.execute("ALTER TABLE slide_fields ADD COLUMN mode TEXT NOT NULL DEFAULT 'exact'")

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
                        "height, model_id, filter_id, added_at, mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, slide_id: str) -> Slide | None:
        with self._lock:
            row = self._db.execute("SELECT created_at FROM slides WHERE slide_id = ?", (slide_id,)).fetchone()
            if row is None:
                return None
            rows = self._db.execute(
                "SELECT name, objects, estimated_bacilli, width, height, model_id, filter_id, added_at, mode "
                "FROM slide_fields WHERE slide_id = ? ORDER BY position",
                (slide_id,),
            ).fetchall()
        return Slide(slide_id, row[0], tuple(FieldCount(*r) for r in rows))

    def delete(self, slide_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM slides WHERE slide_id = ?", (slide_id,)).rowcount == 1
