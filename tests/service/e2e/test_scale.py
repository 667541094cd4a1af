"""The field's scale over HTTP, on a real server whose model folder declares its pixel size (``scale.json``): a field
sent with ``microns_per_pixel`` is read at the model's scale and answered in its own pixels; the image's resolution
metadata is used when credible; nothing known is said; impossible pixel sizes are 422 problems."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.engine.scale import ModelScale
from tests.conftest import install_model
from tests.service.e2e.conftest import model_id_of, png_bytes, start_server, stop_server
from training.data.synthetic import synthetic_field

MODEL_UM = 0.1


@pytest.fixture(scope="module")
def scaled_server(random_dense_onnx: Path, random_object_filter: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scale")
    models = install_model(root / "models", random_dense_onnx, random_object_filter, name="scaled")
    ModelScale(model_id_of(random_dense_onnx), MODEL_UM, "set by the test", {}).write(models / "scaled")
    server = start_server(models, root / "server.log", tile_px="96", max_pixels="600000")
    yield server
    stop_server(server)


def _analyze(url: str, data: bytes, **params: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/analyze", params=params, files={"file": ("f.png", data, "image/png")}, timeout=120)


def test_a_field_is_read_at_the_models_scale_and_answered_in_its_own_pixels(scaled_server) -> None:
    field = png_bytes(synthetic_field(21, height=200, width=260, rods=6).image)
    unknown = _analyze(scaled_server.url, field).json()
    assert unknown["scale"]["source"] == "assumed" and unknown["scale"]["factor"] == 1.0
    assert "give microns_per_pixel" in unknown["scale"]["reasons"][0] and unknown["microns_per_pixel"] is None
    given = _analyze(scaled_server.url, field, microns_per_pixel=2 * MODEL_UM)
    body = given.json()
    assert given.status_code == 200 and given.headers["X-Scale"] == "2 (request)"
    assert body["scale"] == {
        "microns_per_pixel": 0.2,
        "source": "request",
        "factor": 2.0,
        "model_microns_per_pixel": MODEL_UM,
        "reasons": [],
        "relative_error": None,
    }
    assert (body["image"]["width"], body["image"]["height"]) == (260, 200)
    for b in body["bacilli"]:  # in the uploaded field's pixels, measured in µm with its pixel size
        box = b["bbox"]
        assert box["x"] + box["width"] <= 260 and box["y"] + box["height"] <= 200
        assert b["length_um"] == pytest.approx(b["length_px"] * 0.2, rel=1e-3)
    mask = httpx.post(
        f"{scaled_server.url}/v1/segment",
        params={"microns_per_pixel": 2 * MODEL_UM},
        files={"file": ("f.png", field, "image/png")},
        timeout=120,
    )
    assert Image.open(io.BytesIO(mask.content)).size == (260, 200)  # the mask of the uploaded pixels


def test_a_microscopes_resolution_metadata_is_used_and_a_screens_is_not(scaled_server) -> None:
    image = Image.fromarray(synthetic_field(22, height=200, width=260).image)
    for dpi, source in (((127_000, 127_000), "metadata"), ((72, 72), "assumed")):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", dpi=dpi)
        scale = _analyze(scaled_server.url, buffer.getvalue()).json()["scale"]
        assert scale["source"] == source
        geojson = _analyze(scaled_server.url, buffer.getvalue(), format="geojson").json()
        assert geojson["properties"]["microns_per_pixel"] == (0.2 if source == "metadata" else None)
    assert scale["factor"] == 1.0


def test_impossible_pixel_sizes_are_problems_and_nothing_is_queued(scaled_server) -> None:
    field = png_bytes(synthetic_field(23, height=200, width=260).image)
    for bad in ("nan", "0", "-1", "inf"):
        answer = _analyze(scaled_server.url, field, microns_per_pixel=bad)
        assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/problem+json")
    huge = _analyze(scaled_server.url, field, microns_per_pixel=4 * MODEL_UM)  # 1040×800 at the model's scale
    assert huge.status_code == 422 and huge.json()["type"].endswith("resampled-too-large")
    assert "over the limit of 600000 pixels" in huge.json()["detail"]
    job = httpx.post(
        f"{scaled_server.url}/v1/jobs",
        params={"microns_per_pixel": 4 * MODEL_UM},
        files={"files": ("big.png", field, "image/png")},
        timeout=60,
    )
    assert job.status_code == 422 and "big.png" in job.json()["detail"]  # refused at submission, named
    assert _analyze(scaled_server.url, field).status_code == 200  # and the service keeps serving
