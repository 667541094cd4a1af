"""Every error answer is a problem of its own type: status, ``type``, title and headers, one builder for all."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import problems
from service.api.app import create_app
from service.api.problems import Busy, Conflict, InvalidRequest, NotFound, Problem, Unavailable
from service.engine.errors import EngineError
from service.engine.image_io import ImageTooLarge, UndecodableImage, UnsupportedImageType
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[3]

RAISED: dict[str, Exception] = {
    "not-found": NotFound("no job 42"),
    "conflict": Conflict("slide 'S' exists already"),
    "idempotency": Conflict("key reused", slug="idempotency-conflict"),
    "busy": Busy("the queue is full", retry_after_s=7),
    "unavailable": Unavailable(),
    "invalid": InvalidRequest("no image", slug="missing-image"),
    "too-large": ImageTooLarge("9 bytes; the limit is 8"),
    "unsupported": UnsupportedImageType("not an image we read"),
    "undecodable": UndecodableImage("truncated"),
    "engine": EngineError("the session failed"),
    "bug": RuntimeError("a bug"),
}
# name: status, type, title, headers that must be present
EXPECTED: dict[str, tuple[int, str, str, dict[str, str]]] = {
    "not-found": (404, "/problems/not-found", "Not Found", {}),
    "conflict": (409, "/problems/conflict", "Conflict", {}),
    "idempotency": (409, "/problems/idempotency-conflict", "Conflict", {}),
    "busy": (503, "/problems/busy", "Service Busy", {"retry-after": "7"}),
    "unavailable": (503, "/problems/unavailable", "Service Unavailable", {"retry-after": "5"}),
    "invalid": (422, "/problems/missing-image", "Invalid request", {}),
    "too-large": (413, "/problems/image-too-large", "Image too large", {}),
    "unsupported": (415, "/problems/unsupported-media-type", "Unsupported image type", {}),
    "undecodable": (422, "/problems/undecodable-image", "Image cannot be decoded", {}),
    "engine": (500, "/problems/engine-error", "Inference failed", {}),
    "bug": (500, "/problems/internal-error", "Internal error", {}),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    problems.install(app)

    @app.get("/raise/{name}")
    def _raise(name: str) -> None:
        raise RAISED[name]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_problem_has_its_status_type_title_and_headers(client: TestClient, name: str) -> None:
    status, type_uri, title, headers = EXPECTED[name]
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["type"], body["title"]) == (status, type_uri, title)
    assert body["instance"] == f"/raise/{name}" and body["detail"]
    for key, value in headers.items():
        assert response.headers[key] == value
    if status != 503:
        assert "retry-after" not in response.headers


def test_starlette_routing_errors_are_titled_by_their_status(client: TestClient) -> None:
    missing = client.get("/nothing-here")
    assert missing.status_code == 404 and missing.json()["title"] == "Not Found"
    assert missing.json()["type"] == "/problems/not-found"
    wrong = client.post("/raise/busy")
    assert wrong.status_code == 405 and wrong.json()["title"] == "Method Not Allowed"


def test_every_problem_class_has_its_own_type_and_title() -> None:
    kinds = [InvalidRequest, NotFound, Conflict, Busy, Unavailable]
    assert len({k.slug for k in kinds}) == len({k.title for k in kinds}) == len(kinds)
    assert all(issubclass(k, Problem) for k in kinds)


def test_every_v1_route_answers_unavailable_with_retry_after_while_loading() -> None:
    """The app before its start-up finished (the lifespan has not run): the probes say loading, /v1 says 503."""
    app = create_app(Settings())
    client = TestClient(app)  # not entered: the model is never loaded
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "5"
    for method, path in (
        ("GET", "/v1/model"),
        ("GET", "/v1/slides/S-1"),
        ("GET", f"/v1/jobs/{'0' * 32}"),
        ("POST", "/v1/analyze"),
        ("POST", "/v1/jobs"),
    ):
        response = client.request(method, path)
        assert response.status_code == 503, (path, response.text)
        assert response.json()["title"] == "Service Unavailable" and response.headers["retry-after"] == "5"
