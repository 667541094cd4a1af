"""The job store: jobs and their fields in SQLite, their inputs and outputs on disk, persisted before the 202.

On submission every field's bytes are written to ``data_dir/jobs/<job_id>/inputs/`` (fsync'd) and the job's rows
to SQLite in one transaction, before the client hears 202: after that, a crash or restart loses nothing. Each
field's result (JSON, and two PNG masks under ``outputs/``) is recorded as it finishes, so an interrupted job
resumes at the field it was on. Finished jobs, inputs included, are removed ``retention_s`` after they finish.

States (:class:`JobState`): ``queued`` → ``running`` → ``done`` (fields that could not be read are listed with
their error; the others have results) or ``failed`` (nothing could be done, e.g. the engine failed). Fields
(:class:`FieldState`): ``queued`` → ``done`` or ``failed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    request_digest TEXT NOT NULL,
    slide_id TEXT,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS job_fields (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    error TEXT,
    PRIMARY KEY (job_id, position)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
"""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class FieldState(StrEnum):
    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


JsonObject = dict[str, Any]


@dataclass(frozen=True)
class JobParams:
    """How a job's fields are segmented (stored with the job as JSON): the object threshold, the model (its id
    resolved at submission, so a later change of the default does not change the job) and whether its slide may
    hold fields of another model; the mode, and the lab profile whose operating point it reads at (resolved at
    submission too), with its pixel size; the pixel size the request gave (microns_per_pixel)."""

    object_threshold: float | None = None
    model_id: str | None = None
    mixed_models: bool = False
    mode: str = "exact"
    lab_id: str | None = None
    lab_version: int | None = None
    lab_pixel_size_um: float | None = None
    microns_per_pixel: float | None = None

    @classmethod
    def from_json(cls, stored: JsonObject) -> JobParams:
        """Read stored parameters (jobs stored before a key existed get its default)."""
        threshold = stored.get("object_threshold")
        return cls(
            object_threshold=None if threshold is None else float(threshold),
            model_id=stored.get("model_id"),
            mixed_models=bool(stored.get("mixed_models", False)),
            mode=str(stored.get("mode", "exact")),
            lab_id=stored.get("lab_id"),
            lab_version=stored.get("lab_version"),
            lab_pixel_size_um=stored.get("lab_pixel_size_um"),
            microns_per_pixel=stored.get("microns_per_pixel"),
        )


@dataclass(frozen=True)
class JobField:
    position: int
    name: str
    state: FieldState
    result: JsonObject | None
    error: str | None


@dataclass(frozen=True)
class Job:
    job_id: str
    idempotency_key: str | None
    slide_id: str | None
    params: JobParams
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    fields: tuple[JobField, ...]

    @property
    def progress(self) -> dict[str, int]:
        return {
            "fields_total": len(self.fields),
            "fields_done": sum(f.state is FieldState.DONE for f in self.fields),
            "fields_failed": sum(f.state is FieldState.FAILED for f in self.fields),
        }


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def request_digest(files: list[tuple[str, bytes]], params: JobParams, slide_id: str | None) -> str:
    newer = ("lab_id", "lab_version", "lab_pixel_size_um", "microns_per_pixel")
    named = {k: v for k, v in asdict(params).items() if v is not None or k not in newer}
    digest = hashlib.sha256(json.dumps([named, slide_id], sort_keys=True).encode())  # as before labs existed
    for name, data in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


class JobStore:
    """Jobs in SQLite (``jobs.sqlite3``) and their files under ``jobs/``, both in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def input_path(self, job_id: str, position: int) -> Path:
        return self.folder(job_id) / "inputs" / f"{position:05d}.bin"

    def output_path(self, job_id: str, position: int, kind: str) -> Path:
        return self.folder(job_id) / "outputs" / f"{position:05d}_{kind}.png"

    def submit(
        self,
        files: list[tuple[str, bytes]],
        params: JobParams,
        slide_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Persist a job (files first, then rows); returns it and whether it is new.

        Raises:
            IdempotencyConflict: ``idempotency_key`` names a job made from a different request.
        """
        digest = request_digest(files, params, slide_id)
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key)
            if existing is not None:
                if existing[1] != digest:
                    raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was used for a different request")
                job = self.get(existing[0])
                assert job is not None
                return job, False
        job_id = uuid.uuid4().hex
        (self.folder(job_id) / "inputs").mkdir(parents=True)
        (self.folder(job_id) / "outputs").mkdir()
        for position, (_, data) in enumerate(files):
            _fsync_write(self.input_path(job_id, position), data)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO jobs (job_id, idempotency_key, request_digest, slide_id, params, state, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job_id, idempotency_key, digest, slide_id, json.dumps(asdict(params)), JobState.QUEUED, now),
                )
                self._db.executemany(
                    "INSERT INTO job_fields (job_id, position, name, state) VALUES (?, ?, ?, ?)",
                    [(job_id, i, name, FieldState.QUEUED) for i, (name, _) in enumerate(files)],
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:  # the same key submitted concurrently: the first one wins
                self._db.execute("ROLLBACK")
                shutil.rmtree(self.folder(job_id), ignore_errors=True)
                if idempotency_key is None:
                    raise
                return self.submit(files, params, slide_id, idempotency_key)
            except BaseException:
                self._db.execute("ROLLBACK")
                shutil.rmtree(self.folder(job_id), ignore_errors=True)
                raise
        job = self.get(job_id)
        assert job is not None
        return job, True

    def _by_key(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, request_digest FROM jobs WHERE idempotency_key = ?", (key,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def get(self, job_id: str, results: bool = True) -> Job | None:
        """A job with its fields; ``results=False`` leaves the fields' results unread (``None``): a job's state and
        progress read often (clients poll it) need no results, and reading 100 fields' results costs about 0.2 s of
        a core (``docs/results.md`` section 15)."""
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, idempotency_key, slide_id, params, state, created_at, started_at, finished_at, error "
                "FROM jobs WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                return None
            fields = self._db.execute(
                f"SELECT position, name, state, {'result' if results else 'NULL'}, error FROM job_fields "
                "WHERE job_id = ? ORDER BY position",
                (job_id,),
            ).fetchall()
        return Job(
            job_id=row[0],
            idempotency_key=row[1],
            slide_id=row[2],
            params=JobParams.from_json(json.loads(row[3])),
            state=JobState(row[4]),
            created_at=row[5],
            started_at=row[6],
            finished_at=row[7],
            error=row[8],
            fields=tuple(JobField(p, n, FieldState(s), json.loads(r) if r else None, e) for p, n, s, r, e in fields),
        )

    def requeue_interrupted(self) -> int:
        """Queue again the jobs a stop left running; returns how many."""
        with self._lock:
            return int(
                self._db.execute(
                    "UPDATE jobs SET state = ? WHERE state = ?", (JobState.QUEUED, JobState.RUNNING)
                ).rowcount
            )

    def claim_next(self) -> Job | None:
        """Mark the oldest queued job running and return it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT job_id FROM jobs WHERE state = ? ORDER BY created_at LIMIT 1", (JobState.QUEUED,)
            ).fetchone()
            if row is None:
                self._db.execute("COMMIT")
                return None
            self._db.execute(
                "UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?) WHERE job_id = ?",
                (JobState.RUNNING, time.time(), row[0]),
            )
            self._db.execute("COMMIT")
        return self.get(row[0], results=False)

    def finish_field(self, job_id: str, position: int, result: JsonObject | None, error: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE job_fields SET state = ?, result = ?, error = ? WHERE job_id = ? AND position = ?",
                (
                    FieldState.DONE if error is None else FieldState.FAILED,
                    json.dumps(result) if result else None,
                    error,
                    job_id,
                    position,
                ),
            )

    def finish(self, job_id: str, error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE job_id = ?",
                (JobState.DONE if error is None else JobState.FAILED, time.time(), error, job_id),
            )

    def queued_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", (JobState.QUEUED, JobState.RUNNING)
            ).fetchone()
        return int(count)

    def remove_expired(self, retention_s: float, now: float | None = None) -> int:
        """Delete jobs finished more than ``retention_s`` ago, with their files; returns how many."""
        cutoff = (now or time.time()) - retention_s
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,)
            ).fetchall()
            for (job_id,) in rows:
                self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        for (job_id,) in rows:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return len(rows)
