"""The object filter and slides end to end: a real uvicorn process, the real ONNX filter, SQLite on disk."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import install_model
from tests.service.e2e.conftest import REPO_ROOT, LiveServer, png_bytes, start_server, stop_server
from training.data.synthetic import synthetic_field
from training.paths import SHIPPED_MODEL

FIELDS = [
    synthetic_field(40 + i, height=120, width=160, background=("pink", "blue", "green")[i % 3]).image for i in range(3)
]


@pytest.fixture(scope="module")
def filtered(
    random_dense_onnx: Path, random_object_filter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Path]]:
    folder = tmp_path_factory.mktemp("filtered")
    server = start_server(random_dense_onnx, folder / "server.log", tile_px="96", object_filter=random_object_filter)
    yield server, folder
    stop_server(server)


def _analyze(url: str, image: np.ndarray, query: str = "") -> dict:
    response = httpx.post(f"{url}/v1/analyze{query}", content=png_bytes(image), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    return response.json()


def test_analyze_keeps_and_rejects_by_score(filtered: tuple[LiveServer, Path]) -> None:
    url = filtered[0].url
    model = httpx.get(f"{url}/v1/model").json()
    threshold = model["object_threshold"]
    assert model["object_filter"]["filter_id"].startswith("tbseg-objects-") and threshold is not None
    assert model["object_filter"]["dense_model_id"] == model["model_id"]

    body = _analyze(url, FIELDS[0], "?include_rejected=true")
    assert body["filter_id"] == model["object_filter"]["filter_id"] and body["object_threshold"] == threshold
    assert body["candidates"] == body["count"] + len(body["rejected"]) > 0
    assert body["rejected"], "the filter should reject some of the random model's candidates"
    assert all(b["score"] >= threshold for b in body["bacilli"])
    assert all(b["score"] < threshold for b in body["rejected"])
    assert body["estimated_bacilli"] == sum(b["estimated_count"] for b in body["bacilli"]) >= body["count"]
    ids = [b["id"] for b in body["bacilli"] + body["rejected"]]
    assert sorted(ids) == list(range(1, body["candidates"] + 1))

    assert _analyze(url, FIELDS[0])["rejected"] is None  # only on request
    everything = _analyze(url, FIELDS[0], "?object_threshold=0")
    assert everything["count"] == body["candidates"] and everything["object_threshold"] == 0

    geo = httpx.post(
        f"{url}/v1/analyze?format=geojson&include_rejected=true",
        content=png_bytes(FIELDS[0]),
        headers={"content-type": "image/png"},
    ).json()
    classes = [f["properties"]["classification"]["name"] for f in geo["features"]]
    assert classes.count("Bacillus") == body["count"] and classes.count("Rejected candidate") == len(body["rejected"])
    assert geo["properties"]["filter_id"] == body["filter_id"]


def test_segment_objects_is_the_mask_of_kept_bacilli(filtered: tuple[LiveServer, Path]) -> None:
    url = filtered[0].url
    headers = {"content-type": "image/png"}
    objects_png = httpx.post(f"{url}/v1/segment?output=objects", content=png_bytes(FIELDS[1]), headers=headers)
    mask_png = httpx.post(f"{url}/v1/segment?output=mask", content=png_bytes(FIELDS[1]), headers=headers)
    objects = np.asarray(Image.open(io.BytesIO(objects_png.content)))
    mask = np.asarray(Image.open(io.BytesIO(mask_png.content)))
    assert objects.shape == mask.shape == FIELDS[1].shape[:2] and set(np.unique(objects)) <= {0, 255}
    assert not (objects & ~mask).any()  # kept bacilli are part of the paper's mask
    body = _analyze(url, FIELDS[1])
    assert (objects == 255).sum() == sum(b["area_px"] for b in body["bacilli"])
    assert objects_png.headers["x-bacilli-count"] == str(body["count"])
    everything = httpx.post(
        f"{url}/v1/segment?output=objects&object_threshold=0", content=png_bytes(FIELDS[1]), headers=headers
    )
    assert (np.asarray(Image.open(io.BytesIO(everything.content))) == 255).sum() > (objects == 255).sum()


def test_slides_in_one_request_then_field_by_field(filtered: tuple[LiveServer, Path]) -> None:
    url = filtered[0].url
    files = [("files", (f"f{i}.png", png_bytes(f), "image/png")) for i, f in enumerate(FIELDS)]
    created = httpx.post(f"{url}/v1/slides?slide_id=LIS-0001", files=files)
    assert created.status_code == 201, created.text
    slide = created.json()
    assert created.headers["location"] == "/v1/slides/LIS-0001"
    assert [f["name"] for f in slide["fields"]] == ["f0.png", "f1.png", "f2.png"]
    singles = [_analyze(url, f) for f in FIELDS]
    assert [f["afb"] for f in slide["fields"]] == [s["estimated_bacilli"] for s in singles]
    assert slide["total_afb"] == sum(s["estimated_bacilli"] for s in singles)
    assert slide["fields_examined"] == 3 and slide["grade"] in {"negative", "scanty", "1+", "2+", "3+"}
    assert slide["needs_review"] and any("fields examined" in r for r in slide["reasons"])  # 3 fields only

    again = httpx.post(f"{url}/v1/slides?slide_id=LIS-0001", files=files[:1])
    assert again.status_code == 409 and again.json()["status"] == 409

    added = httpx.post(
        f"{url}/v1/slides/LIS-0001/fields", content=png_bytes(FIELDS[0]), headers={"content-type": "image/png"}
    )
    assert added.status_code == 200, added.text
    assert added.json()["fields"][3]["name"] == "field-3"
    # the same field sent again is listed, and counted once
    assert added.json()["fields_examined"] == 3 and added.json()["fields"][3]["duplicate_of"] == 0

    # a bad field fails the whole request and stores nothing
    bad = httpx.post(
        f"{url}/v1/slides/LIS-0001/fields",
        files=[
            ("files", ("ok.png", png_bytes(FIELDS[1]), "image/png")),
            ("files", ("bad.png", b"\x89PNG\r\n\x1a\nbad", "image/png")),
        ],
    )
    assert bad.status_code in (415, 422) and bad.headers["content-type"] == "application/problem+json"
    assert len(httpx.get(f"{url}/v1/slides/LIS-0001").json()["fields"]) == 4

    # a new id given field by field is created on its first field
    first = httpx.post(f"{url}/v1/slides/walk-in/fields", files={"file": ("a.png", png_bytes(FIELDS[2]), "image/png")})
    assert first.status_code == 200 and first.json()["fields_examined"] == 1

    empty = httpx.post(f"{url}/v1/slides")
    assert empty.status_code == 201 and empty.json()["grade"] is None and empty.json()["fields"] == []
    assert httpx.get(f"{url}/v1/slides/{empty.json()['slide_id']}").status_code == 200

    assert httpx.get(f"{url}/v1/slides/no-such-slide").status_code == 404
    assert httpx.get(f"{url}/v1/slides/bad%20id").status_code == 422
    assert httpx.delete(f"{url}/v1/slides/walk-in").status_code == 204
    assert httpx.get(f"{url}/v1/slides/walk-in").status_code == 404


def test_slides_survive_a_restart(random_dense_onnx: Path, random_object_filter: Path, tmp_path: Path) -> None:
    settings = {"tile_px": "96", "data_dir": str(tmp_path / "data")}
    server = start_server(random_dense_onnx, tmp_path / "a.log", object_filter=random_object_filter, **settings)
    try:
        made = httpx.post(
            f"{server.url}/v1/slides?slide_id=kept", files=[("files", ("f.png", png_bytes(FIELDS[0]), "image/png"))]
        )
        assert made.status_code == 201
    finally:
        stop_server(server)
    server = start_server(random_dense_onnx, tmp_path / "b.log", object_filter=random_object_filter, **settings)
    try:
        assert httpx.get(f"{server.url}/v1/slides/kept").json() == made.json()
    finally:
        stop_server(server)


def test_a_filter_for_another_model_is_refused_at_start(random_object_filter: Path, tmp_path: Path) -> None:
    models = install_model(tmp_path / "models", SHIPPED_MODEL, random_object_filter, name="mislabelled")
    env = {
        **os.environ,
        "TBSEG_MODELS_DIR": str(models),
        "TBSEG_PROVIDERS": "CPUExecutionProvider",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "trained on the candidates of tbseg-random-" in done.stderr and "Traceback" not in done.stderr


def test_the_model_reports_a_candidate_cut_unlike_its_filters(
    random_dense_onnx: Path, random_object_filter: Path, tmp_path: Path
) -> None:
    server = start_server(random_dense_onnx, tmp_path / "a.log", object_filter=random_object_filter, threshold="0.45")
    try:
        model = httpx.get(f"{server.url}/v1/model").json()
    finally:
        stop_server(server)
    assert (model["threshold"], model["min_object_px"]) == (0.45, 20)
    assert model["overrides"] == [{"name": "threshold", "trained": 0.5, "used": 0.45}]
    assert "threshold=0.45 differs from the 0.5 its object filter" in (tmp_path / "a.log").read_text()
