"""Problems a client meets on a real server, and the job runner sharing the inference gate with requests.

One inference worker, no queue beyond it and one job at a time: while a job's field is being inferred, the
worker is taken, so a request is refused at once with 503 Busy (the job goes through the same gate), and so is a
second job; every 404 is titled "Not Found" and every 409 "Conflict".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.e2e.conftest import LiveServer, png_bytes, start_server, stop_server
from training.data.synthetic import synthetic_field

SMALL = synthetic_field(81, height=90, width=110).image
SLOW = [synthetic_field(82 + i, height=500, width=640).image for i in range(3)]


def _problem(response: httpx.Response, status: int, title: str) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] == title and body["detail"]
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
    return body


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("tbseg_inference_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no tbseg_inference_in_flight in /metrics")


@pytest.fixture(scope="module")
def one_worker(random_dense_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        random_dense_onnx,
        tmp_path_factory.mktemp("one-worker") / "server.log",
        tile_px="96",
        inference_workers="1",
        queue_size="0",
        max_queued_jobs="1",
        retry_after_s="3",
    )
    yield server
    stop_server(server)


def test_every_404_is_titled_not_found(one_worker: LiveServer) -> None:
    url, nobody = one_worker.url, "0" * 32
    for method, path in (
        ("GET", f"/v1/jobs/{nobody}"),
        ("GET", f"/v1/jobs/{nobody}/result"),
        ("GET", f"/v1/jobs/{nobody}/fields/0/mask"),
        ("GET", "/v1/slides/no-such-slide"),
        ("DELETE", "/v1/slides/no-such-slide"),
        ("GET", "/v1/nothing-here"),
    ):
        body = _problem(httpx.request(method, f"{url}{path}"), 404, "Not Found")
        assert body["type"] == "/problems/not-found" and body["instance"] == path.split("?")[0]


def test_a_running_job_holds_the_worker_so_requests_and_jobs_get_busy(one_worker: LiveServer) -> None:
    url = one_worker.url
    files = [("files", (f"slow{i}.png", png_bytes(image), "image/png")) for i, image in enumerate(SLOW)]
    job = httpx.post(f"{url}/v1/jobs?slide_id=gate-slide", files=files, timeout=60).json()
    refused: httpx.Response | None = None
    deadline = time.monotonic() + 120
    while refused is None and time.monotonic() < deadline:
        if _in_flight(url) < 1:  # between two fields, or not started yet
            time.sleep(0.05)
            continue
        answer = httpx.post(
            f"{url}/v1/analyze", content=png_bytes(SMALL), headers={"content-type": "image/png"}, timeout=300
        )
        if answer.status_code == 503:
            refused = answer
    assert refused is not None, "no request was refused while the job's field held the only worker"
    body = _problem(refused, 503, "Service Busy")
    assert body["type"] == "/problems/busy" and refused.headers["retry-after"] == "3"

    second = httpx.post(f"{url}/v1/jobs", content=png_bytes(SMALL), headers={"content-type": "image/png"})
    _problem(second, 503, "Service Busy")  # one job at a time here
    not_done = httpx.get(f"{url}/v1/jobs/{job['job_id']}/result")
    assert _problem(not_done, 409, "Conflict")["type"] == "/problems/not-done"
    _problem(httpx.get(f"{url}/v1/jobs/{job['job_id']}/fields/2/objects"), 409, "Conflict")

    deadline = time.monotonic() + 300
    while httpx.get(f"{url}/v1/jobs/{job['job_id']}").json()["state"] != "done":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)
    result = httpx.get(f"{url}/v1/jobs/{job['job_id']}/result").json()
    assert result["slide"]["fields_examined"] == 3
    # the job's fields carry the same per-field summary as /v1/analyze
    single = httpx.post(
        f"{url}/v1/analyze", content=png_bytes(SLOW[0]), headers={"content-type": "image/png"}, timeout=300
    ).json()
    first = result["results"][0]
    for key in ("model_id", "filter_id", "mode", "threshold", "min_object_px", "object_threshold", "image", "count"):
        assert first[key] == single[key], key
    # ...plus each object's outline and the rejected candidates, which the slide keeps for review
    assert [{**b, "outline": None} for b in first["bacilli"]] == single["bacilli"]
    assert all(b["outline"][0] == b["outline"][-1] for b in first["bacilli"]) and first["rejected"] is not None


def test_conflicts_are_titled_conflict(one_worker: LiveServer) -> None:
    url = one_worker.url
    made = httpx.post(
        f"{url}/v1/slides?slide_id=taken", content=png_bytes(SMALL), headers={"content-type": "image/png"}, timeout=300
    )
    assert made.status_code == 201, made.text
    again = httpx.post(
        f"{url}/v1/slides?slide_id=taken", content=png_bytes(SMALL), headers={"content-type": "image/png"}
    )
    assert _problem(again, 409, "Conflict")["type"] == "/problems/conflict"
    key = {"Idempotency-Key": "problems-0001"}
    first = httpx.post(f"{url}/v1/jobs", content=png_bytes(SMALL), headers={"content-type": "image/png", **key})
    assert first.status_code == 202, first.text
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/jobs/{first.json()['job_id']}").json()["state"] != "done":  # one job at a time
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    other = httpx.post(f"{url}/v1/jobs", content=png_bytes(SMALL[:50]), headers={"content-type": "image/png", **key})
    assert _problem(other, 409, "Conflict")["type"] == "/problems/idempotency-conflict"
