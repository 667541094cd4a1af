"""The job store and runner without HTTP: persistence, idempotency, resume, failures, retention."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from service.jobs.runner import JobRunner
from service.jobs.store import IdempotencyConflict, Job, JobParams, JobStore


def _files(n: int) -> list[tuple[str, bytes]]:
    return [(f"f{i}.png", f"image {i}".encode()) for i in range(n)]


def test_submit_persists_before_returning_and_survives_reopening(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, new = store.submit(_files(3), JobParams(object_threshold=None), slide_id="S-1", idempotency_key="k1")
    assert new and job.state == "queued" and job.progress == {"fields_total": 3, "fields_done": 0, "fields_failed": 0}
    assert store.input_path(job.job_id, 2).read_bytes() == b"image 2"
    store.close()
    reopened = JobStore(tmp_path)
    again = reopened.get(job.job_id)
    assert (
        again is not None
        and again.slide_id == "S-1"
        and [f.name for f in again.fields] == ["f0.png", "f1.png", "f2.png"]
    )


def test_idempotency_key(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    first, _ = store.submit(_files(2), JobParams(), idempotency_key="same")
    second, new = store.submit(_files(2), JobParams(), idempotency_key="same")
    assert second.job_id == first.job_id and not new
    with pytest.raises(IdempotencyConflict):
        store.submit(_files(1), JobParams(), idempotency_key="same")
    third, new = store.submit(_files(2), JobParams())  # no key: a new job every time
    assert new and third.job_id != first.job_id


def test_claim_order_requeue_and_retention(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    a, _ = store.submit(_files(1), JobParams())
    time.sleep(0.01)
    b, _ = store.submit(_files(1), JobParams())
    claimed = store.claim_next()
    assert claimed is not None and claimed.job_id == a.job_id and claimed.state == "running"
    assert store.requeue_interrupted() == 1  # as at a start after a crash
    assert store.claim_next().job_id == a.job_id  # type: ignore[union-attr]
    store.finish_field(a.job_id, 0, {"count": 3}, None)
    store.finish(a.job_id)
    done = store.get(a.job_id)
    assert done is not None and done.state == "done" and done.fields[0].result == {"count": 3}
    polled = store.get(a.job_id, results=False)  # what a poll of the job's state reads: states, not results
    assert polled is not None and polled.progress == done.progress and polled.fields[0].result is None
    assert store.remove_expired(3600) == 0  # finished just now
    assert store.remove_expired(3600, now=time.time() + 3601) == 1
    assert store.get(a.job_id) is None and not store.folder(a.job_id).exists()
    assert store.get(b.job_id) is not None  # not finished: never removed


def test_runner_records_failures_stops_between_fields_and_resumes(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit([("bad.png", b"broken"), ("ok.png", b"fine"), ("ok2.png", b"fine")], JobParams())
    calls: list[int] = []
    finished: list[Job] = []
    in_hand, release = threading.Event(), threading.Event()

    def run_field(j: Job, position: int, data: bytes) -> dict[str, object]:
        calls.append(position)
        if data == b"broken":
            raise ValueError("cannot read it")
        if position == 1 and not release.is_set():
            in_hand.set()
            release.wait(10)
        return {"count": position}

    runner = JobRunner(store, run_field, finished.append, retention_s=3600)
    runner.start()
    runner.wake()
    assert in_hand.wait(10)
    assert not runner.stop(timeout_s=0.2)  # SIGTERM: the field in hand finishes first
    release.set()
    assert runner.stop(timeout_s=10)
    stopped = store.get(job.job_id)
    assert stopped is not None and stopped.state == "running"  # left for the next start
    assert [f.state for f in stopped.fields] == ["failed", "done", "queued"]
    assert stopped.fields[0].error == "cannot read it" and calls == [0, 1] and not finished

    calls.clear()
    resumed = JobRunner(store, run_field, finished.append, retention_s=3600)
    resumed.start()  # queues the interrupted job again
    deadline = time.monotonic() + 10
    while store.get(job.job_id).state != "done" and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    assert resumed.stop(timeout_s=10)
    assert calls == [2]  # only the field that was not done
    done = store.get(job.job_id)
    assert (
        done is not None
        and done.state == "done"
        and done.progress
        == {
            "fields_total": 3,
            "fields_done": 2,
            "fields_failed": 1,
        }
    )
    assert [j.job_id for j in finished] == [job.job_id]


def test_a_runner_with_two_fields_in_flight_holds_two_in_hand_records_each_and_stops_after_them(
    tmp_path: Path,
) -> None:
    store = JobStore(tmp_path)
    job, _ = store.submit([(f"f{i}.png", b"fine") for i in range(5)], JobParams())
    both_in_hand = threading.Barrier(2, timeout=10)  # broken (an engine failure) unless two fields are in hand at once
    lock, in_hand, most = threading.Lock(), [0], [0]
    stop_now, release = threading.Event(), threading.Event()

    def run_field(j: Job, position: int, data: bytes) -> dict[str, object]:
        with lock:
            in_hand[0] += 1
            most[0] = max(most[0], in_hand[0])
        try:
            if position < 2:
                both_in_hand.wait()
            if position in (2, 3):  # the second pair: the stop comes while both are in hand
                both_in_hand.wait()
                stop_now.set()
                release.wait(10)
            return {"count": position}
        finally:
            with lock:
                in_hand[0] -= 1

    runner = JobRunner(store, run_field, lambda j: None, retention_s=3600, fields_in_flight=2)
    runner.start()
    runner.wake()
    assert stop_now.wait(10)
    assert not runner.stop(timeout_s=0.2)  # the two fields in hand finish first
    release.set()
    assert runner.stop(timeout_s=10)
    stopped = store.get(job.job_id)
    assert stopped is not None and stopped.state == "running" and most[0] == 2
    assert [f.state for f in stopped.fields] == ["done", "done", "done", "done", "queued"]
    assert [f.result for f in stopped.fields[:4]] == [{"count": i} for i in range(4)]
