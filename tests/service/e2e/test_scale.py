"""The field's scale over HTTP, on a real server whose model folder declares its pixel size (``scale.json``): a field
sent with ``microns_per_pixel`` is read at the model's scale and answered in its own pixels; the image's resolution
metadata is used when credible; nothing known is said; impossible pixel sizes are 422 problems."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import DENSE_ONNX
from service.engine.scale import ModelScale, resample
from service.engine.scale_estimate import SLIDE_OBJECTS
from tests.conftest import install_model, red_rod_field
from tests.service.e2e.conftest import finished_job, model_id_of, png_bytes, start_server, stop_server
from tests.service.engine.test_scale_estimate import rods_field
from training.data.synthetic import synthetic_field

MODEL_UM = 0.1
ROOT = Path(__file__).resolve().parents[3]


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
        "field_estimate": None,
        "empty_probe": False,
        "slide_fields": None,
        "slide_objects": None,
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


@pytest.fixture(scope="module")
def estimating_models(red_fast_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory of the red-seeing model, whose scale.json gives the length of its 40 px rods: it
    estimates a field's scale from them."""
    root = tmp_path_factory.mktemp("slide-scale")
    folder = shutil.copytree(red_fast_folder, root / "models" / "red")
    segmenter = load_segmenter(SegmenterConfig(folder / DENSE_ONNX, providers=("CPUExecutionProvider",)))
    lengths = sorted(o.length_px for o in segmenter.segment(rods_field(40)).bacilli)
    ModelScale(model_id_of(folder / DENSE_ONNX), MODEL_UM, "set by the test", {}, lengths[len(lengths) // 2]).write(
        folder
    )
    return root / "models"


@pytest.fixture(scope="module")
def estimating_server(estimating_models: Path):
    """A real server on :func:`estimating_models`."""
    server = start_server(estimating_models, estimating_models.parent / "server.log")
    yield server
    stop_server(server)


def _half_scale_slide(folder: Path) -> int:
    """Half-scale fields of six rods each (``d*.png``, enough for the slide's scale) and one of two rods, too few
    alone (``s.png``, read last); returns how many six-rod fields."""
    folder.mkdir(parents=True)
    dense = resample(rods_field(40), (128, 128))
    two = np.minimum.reduce([red_rod_field(s, 40, (256, 256)) for s in [(20, 20), (150, 150)]])
    needed = -(-SLIDE_OBJECTS // 6)
    for i in range(needed):
        Image.fromarray(dense).save(folder / f"d{i}.png")
    Image.fromarray(resample(two, (128, 128))).save(folder / "s.png")
    return needed


def test_the_batch_command_reads_a_slides_fields_at_the_scale_they_agree_on(
    estimating_models: Path, tmp_path: Path
) -> None:
    """``python -m service segment --slide`` pools its fields' scale as the service does a slide's, and a run that
    resumes takes the estimates of the fields it finds done."""
    needed = _half_scale_slide(tmp_path / "fields")
    env = {**os.environ, "TBSEG_MODELS_DIR": str(estimating_models), "TBSEG_PROVIDERS": "CPUExecutionProvider"}

    def run(*more: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "service", "segment", str(tmp_path / "fields"), "-o", str(tmp_path / "out")]
        return subprocess.run(
            [*command, *more], env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
        )

    alone = run()  # not a slide: the two-rod field is read alone, at the model's scale
    assert alone.returncode == 0, alone.stderr
    scale = json.loads((tmp_path / "out" / "s_objects.json").read_text())["scale"]
    assert scale["source"] == "assumed" and scale["factor"] == 1.0
    done = run("--slide", "--force")
    assert done.returncode == 0, done.stderr
    last = json.loads((tmp_path / "out" / "s_objects.json").read_text())
    assert last["scale"]["source"] == "slide" and last["scale"]["factor"] == pytest.approx(2.0, rel=0.2)
    assert last["scale"]["slide_fields"] == needed and last["count"] == 2
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "summary.csv").read_text())))
    assert [r["scale_source"] for r in rows] == [*["estimated"] * needed, "slide"]
    slide = json.loads((tmp_path / "out" / "slide.json").read_text())
    assert [f["scale_source"] for f in slide["fields"]] == [*["estimated"] * needed, "slide"]
    for path in (tmp_path / "out").glob("s_*"):
        path.unlink()
    resumed = run("--slide")  # the six-rod fields are done: their stored estimates give the scale
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads((tmp_path / "out" / "s_objects.json").read_text())["scale"]
    assert again["source"] == "slide" and again["slide_fields"] == needed


def test_a_slides_sparse_field_is_read_at_the_scale_its_earlier_fields_agree_on(estimating_server) -> None:
    """Half-scale fields of six rods each estimate their own scale; once the slide holds enough of them (sent one by
    one, or in one job, or stored before), a field of two rods, too few alone, is read at the slide's scale."""
    url = estimating_server.url
    dense = png_bytes(resample(rods_field(40), (128, 128)))
    two = np.minimum.reduce([red_rod_field(s, 40, (256, 256)) for s in [(20, 20), (150, 150)]])
    sparse = png_bytes(resample(two, (128, 128)))
    alone = _analyze(url, sparse).json()["scale"]
    assert alone["source"] == "assumed" and alone["factor"] == 1.0  # 2 rods: too few to estimate alone
    fields_needed = -(-SLIDE_OBJECTS // 6)
    for _ in range(fields_needed):
        added = httpx.post(
            f"{url}/v1/slides/by-requests/fields", files={"file": ("d.png", dense, "image/png")}, timeout=60
        )
        assert added.status_code == 200
    answer = httpx.post(
        f"{url}/v1/slides/by-requests/fields", files={"file": ("s.png", sparse, "image/png")}, timeout=60
    )
    report = answer.json()
    assert answer.status_code == 200 and [f["scale_source"] for f in report["fields"]] == [
        *["estimated"] * fields_needed,
        "slide",
    ]
    assert report["fields"][-1]["objects"] == 2
    files = [("files", (f"d{i}.png", dense, "image/png")) for i in range(fields_needed)]
    job = httpx.post(
        f"{url}/v1/jobs", params={"slide_id": "by-job"}, files=[*files, ("files", ("s.png", sparse, "image/png"))]
    )
    done = finished_job(f"{url}{job.headers['Location']}", timeout_s=120)
    result = httpx.get(f"{url}{job.headers['Location']}/result", timeout=30).json()
    assert done["state"] == "done"
    fields = result["results"]
    own = [f["scale"] for f in fields[:-1]]
    assert {s["source"] for s in own} == {"estimated"} and all(s["field_estimate"]["objects"] == 6 for s in own)
    last = fields[-1]
    assert last["scale"]["source"] == "slide" and last["scale"]["factor"] == pytest.approx(2.0, rel=0.2)
    assert last["scale"]["slide_fields"] == fields_needed and last["count"] == 2
    assert last["microns_per_pixel"] is None  # µm are not measured on an estimate
    later = httpx.post(f"{url}/v1/slides/by-job/fields", files={"file": ("s2.png", sparse, "image/png")}, timeout=60)
    stored = later.json()["fields"]  # the slide's stored fields (the job's) give the scale of a field sent later
    assert later.status_code == 200 and stored[-1]["scale_source"] == "slide" and stored[-1]["objects"] == 2
