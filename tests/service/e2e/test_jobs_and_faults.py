"""Long jobs, restarts, SIGTERM, API keys and CORS: real uvicorn processes, real SQLite and files on disk."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.e2e.conftest import LiveServer, start_server, stop_server
from training.data.synthetic import synthetic_field

SMALL = [synthetic_field(70 + i, height=100, width=130, background=("pink", "green")[i % 2]).image for i in range(3)]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _files(images: list[np.ndarray]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"f{i}.png", _png(image), "image/png")) for i, image in enumerate(images)]


def _wait(url: str, job_id: str, until: str = "done", timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}").json()
        if job["state"] in (until, "done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not {until} in {timeout_s} s: {job}")


def _kill(server: LiveServer, sig: int) -> None:
    os.kill(server.process.pid, sig)
    server.process.wait(timeout=120)


def test_a_job_from_submit_to_results(random_server: LiveServer) -> None:
    url = random_server.url
    key = {"Idempotency-Key": "lis-batch-0001"}
    accepted = httpx.post(f"{url}/v1/jobs?slide_id=job-slide", files=_files(SMALL), headers=key)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["created"] and job["fields_total"] == 3 and accepted.headers["location"] == f"/v1/jobs/{job['job_id']}"

    retried = httpx.post(f"{url}/v1/jobs?slide_id=job-slide", files=_files(SMALL), headers=key)
    assert retried.status_code == 202 and retried.json()["job_id"] == job["job_id"] and not retried.json()["created"]
    other = httpx.post(f"{url}/v1/jobs", files=_files(SMALL[:1]), headers=key)
    assert other.status_code == 409 and other.json()["type"] == "/problems/idempotency-conflict"

    done = _wait(url, job["job_id"])
    assert done["state"] == "done" and done["fields_done"] == 3 and done["expires_at"] > done["finished_at"]
    result = httpx.get(f"{url}{done['result_url']}").json()
    assert [r["name"] for r in result["results"]] == ["f0.png", "f1.png", "f2.png"]
    single = httpx.post(f"{url}/v1/analyze", content=_png(SMALL[1]), headers={"content-type": "image/png"}).json()
    assert result["results"][1]["count"] == single["count"]
    mask = np.asarray(Image.open(io.BytesIO(httpx.get(f"{url}{result['results'][1]['mask_url']}").content)))
    assert mask.shape == SMALL[1].shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert result["slide"]["slide_id"] == "job-slide" and result["slide"]["fields_examined"] == 3
    assert httpx.get(f"{url}/v1/jobs/{'0' * 32}").status_code == 404
    assert httpx.get(f"{url}/v1/jobs/not-a-job").status_code == 422


def test_a_job_with_an_unreadable_field_is_refused_whole(random_server: LiveServer) -> None:
    files = [*_files(SMALL[:1]), ("files", ("bad.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRtruncated", "image/png"))]
    refused = httpx.post(f"{random_server.url}/v1/jobs", files=files)
    assert 400 <= refused.status_code < 500 and "bad.png" in refused.json()["detail"]
    assert httpx.post(f"{random_server.url}/v1/jobs").status_code == 422  # no image at all


def test_a_crash_loses_no_accepted_job(random_dense_onnx: Path, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    big = [synthetic_field(90 + i, height=320, width=400).image for i in range(5)]
    server = start_server(random_dense_onnx, tmp_path / "a.log", tile_px="96", data_dir=data)
    accepted = httpx.post(f"{server.url}/v1/jobs", files=_files(big), timeout=60).json()
    assert _wait(server.url, accepted["job_id"], until="running")["state"] == "running"
    _kill(server, signal.SIGKILL)  # a crash: nothing gets to clean up
    server = start_server(random_dense_onnx, tmp_path / "b.log", tile_px="96", data_dir=data)
    try:
        done = _wait(server.url, accepted["job_id"], timeout_s=300)
        assert done["state"] == "done" and done["fields_done"] == 5 and done["fields_failed"] == 0
        assert "interrupted job(s) queued again" in server.log()
    finally:
        stop_server(server)


def test_sigterm_finishes_in_flight_work_and_refuses_new(random_dense_onnx: Path, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    server = start_server(random_dense_onnx, tmp_path / "a.log", tile_px="96", data_dir=data)
    large = _png(synthetic_field(5, height=700, width=900).image)
    answers: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.url}/v1/analyze", content=large, headers={"content-type": "image/png"}, timeout=300)
        )
    )
    request.start()
    time.sleep(1.0)  # the request is in inference now
    job = httpx.post(f"{server.url}/v1/jobs", files=_files(SMALL * 4)).json()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.TransportError):  # no longer accepting connections
        httpx.get(f"{server.url}/healthz", timeout=5)
    request.join(timeout=300)
    assert answers and answers[0].status_code == 200 and answers[0].json()["image"]["width"] == 900
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says how it ended
    assert server.process.wait(timeout=300) in (0, -signal.SIGTERM)
    assert "shutting down" in server.log() and "Finished server process" in server.log()
    server = start_server(random_dense_onnx, tmp_path / "b.log", tile_px="96", data_dir=data)
    try:  # the job is finished or resumed, never lost
        done = _wait(server.url, job["job_id"], timeout_s=300)
        assert done["state"] == "done" and done["fields_done"] == 12
    finally:
        stop_server(server)


def test_api_key_and_cors(random_dense_onnx: Path, tmp_path: Path) -> None:
    server = start_server(random_dense_onnx, tmp_path / "a.log", tile_px="96", api_key="s3cret-key")
    try:
        url = server.url
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
        for path in ("/v1/model", "/metrics", "/openapi.json", "/v1/slides/x"):
            refused = httpx.get(f"{url}{path}")
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["type"] == "/problems/unauthorized" and refused.json()["title"] == "Unauthorized"
        wrong = httpx.get(f"{url}/v1/model", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "the API key is not valid"
        right = {"Authorization": "Bearer s3cret-key"}
        assert httpx.get(f"{url}/v1/model", headers=right).status_code == 200
        posted = httpx.post(f"{url}/v1/segment", content=_png(SMALL[0]), headers={**right, "content-type": "image/png"})
        assert posted.status_code == 200
        # CORS is off by default: no browser origin is allowed, a preflight gets no CORS headers
        preflight = httpx.options(
            f"{url}/v1/model", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in preflight.headers
        cross = httpx.get(f"{url}/v1/model", headers={**right, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in cross.headers
    finally:
        stop_server(server)


def test_cors_when_asked_for(random_dense_onnx: Path, tmp_path: Path) -> None:
    server = start_server(random_dense_onnx, tmp_path / "a.log", tile_px="96", cors_origins="https://lab.example")
    try:
        allowed = httpx.get(f"{server.url}/v1/model", headers={"Origin": "https://lab.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://lab.example"
        other = httpx.get(f"{server.url}/v1/model", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        stop_server(server)
