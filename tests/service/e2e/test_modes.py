"""mode=exact|fast through HTTP on a real server: every inference route, jobs, slides, the default (TBSEG_MODE),
models without fast networks, /v1/models and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import install_model, red_rod_field
from tests.service.e2e.conftest import LiveServer, finished_job, model_id_of, png_bytes, start_server, stop_server

PNG = {"content-type": "image/png"}
FIELD = red_rod_field((112, 112), 32)  # one rod across the corner of four 64 px refinement tiles


@pytest.fixture(scope="module")
def fast_server(
    red_fast_folder: Path, random_dense_onnx: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str, str]]:
    """The red-seeing model with its fast networks (the default) and a model without them; TBSEG_MODE=fast with the
    int8 networks."""
    root = tmp_path_factory.mktemp("modes")
    models = root / "models"
    models.mkdir()
    (models / "red").symlink_to(red_fast_folder, target_is_directory=True)
    install_model(models, random_dense_onnx, name="plain")
    red, plain = model_id_of(red_fast_folder / "bacilli_dense.onnx"), model_id_of(random_dense_onnx)
    (models / "DEFAULT_MODEL").write_text(red + "\n")
    server = start_server(models, root / "server.log", tile_px="128", mode="fast", fast_precision="int8")
    yield server, red, plain
    stop_server(server)


def test_the_default_mode_and_mode_exact_on_analyze(fast_server: tuple[LiveServer, str, str]) -> None:
    server, red, _ = fast_server
    fast = httpx.post(f"{server.url}/v1/analyze", content=png_bytes(FIELD), headers=PNG)
    exact = httpx.post(f"{server.url}/v1/analyze?mode=exact", content=png_bytes(FIELD), headers=PNG)
    assert fast.status_code == exact.status_code == 200, (fast.text, exact.text)
    f, e = fast.json(), exact.json()
    assert f["model_id"] == e["model_id"] == red
    assert (f["mode"], f["precision"], f["heatmap_exact"]) == ("fast", "int8", False)
    assert (e["mode"], e["precision"], e["heatmap_exact"], e["refined_tiles"]) == ("exact", "fp32", True, None)
    assert fast.headers["x-mode"] == "fast" and exact.headers["x-mode"] == "exact"
    assert fast.headers["x-refined-tiles"] == f"{f['refined_tiles']}/{f['tiles']}"
    assert "x-refined-tiles" not in exact.headers
    assert 4 <= f["refined_tiles"] < f["tiles"] == 64 and f["timings"]["coarse_ms"] > 0  # 32 px tiles of 256²
    assert e["timings"]["coarse_ms"] is None
    assert f["count"] == e["count"] == 1
    fb, eb = f["bacilli"][0]["bbox"], e["bacilli"][0]["bbox"]
    assert all(abs(fb[k] - eb[k]) <= 2 for k in ("x", "y", "width", "height"))


def test_segment_takes_the_mode_and_bad_modes_are_refused(fast_server: tuple[LiveServer, str, str]) -> None:
    server, _, plain = fast_server
    mask = httpx.post(f"{server.url}/v1/segment?mode=fast&output=heatmap", content=png_bytes(FIELD), headers=PNG)
    assert mask.status_code == 200 and mask.headers["x-mode"] == "fast" and mask.headers["x-precision"] == "int8"
    assert mask.headers["x-heatmap"] == "approximate below the mask threshold"
    bad = httpx.post(f"{server.url}/v1/analyze?mode=slow", content=png_bytes(FIELD), headers=PNG)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    # a model without fast networks: the default falls back to exact; asking for fast is a 409 problem
    fallback = httpx.post(f"{server.url}/v1/analyze?model={plain}", content=png_bytes(FIELD), headers=PNG)
    assert fallback.status_code == 200 and fallback.json()["mode"] == "exact"
    refused = httpx.post(f"{server.url}/v1/analyze?model={plain}&mode=fast", content=png_bytes(FIELD), headers=PNG)
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/mode-unavailable") and "mode=exact" in refused.json()["detail"]


def test_jobs_and_slides_keep_their_mode(fast_server: tuple[LiveServer, str, str]) -> None:
    server, _, _ = fast_server
    accepted = httpx.post(f"{server.url}/v1/jobs?mode=exact&slide_id=job-exact", content=png_bytes(FIELD), headers=PNG)
    assert accepted.status_code == 202 and accepted.json()["mode"] == "exact"
    status_url = f"{server.url}{accepted.json()['status_url']}"
    status = finished_job(status_url)
    assert status["state"] == "done" and status["mode"] == "exact"
    result = httpx.get(f"{status_url}/result").json()
    assert result["results"][0]["mode"] == "exact" and result["slide"]["modes"] == ["exact"]
    default = httpx.post(f"{server.url}/v1/jobs", content=png_bytes(FIELD), headers=PNG)
    assert default.status_code == 202 and default.json()["mode"] == "fast"
    slide = httpx.post(
        f"{server.url}/v1/slides?slide_id=fast-slide&mode=fast",
        files=[("files", ("a.png", png_bytes(FIELD), "image/png"))],
    )
    assert slide.status_code == 201, slide.text
    assert slide.json()["modes"] == ["fast"] and slide.json()["fields"][0]["mode"] == "fast"
    mirrored = np.ascontiguousarray(FIELD[:, ::-1])  # another field with the same rod (the same one is counted once)
    more = httpx.post(f"{server.url}/v1/slides/fast-slide/fields?mode=exact", content=png_bytes(mirrored), headers=PNG)
    assert more.status_code == 200 and more.json()["modes"] == ["fast", "exact"]
    assert more.json()["total_afb"] == 2


def test_models_list_their_modes_and_metrics_count_them(fast_server: tuple[LiveServer, str, str]) -> None:
    server, red, plain = fast_server
    httpx.post(f"{server.url}/v1/analyze?mode=fast", content=png_bytes(FIELD), headers=PNG)
    by_id = {m["model_id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
    assert by_id[red]["modes"] == ["exact", "fast"] and by_id[plain]["modes"] == ["exact"]
    fast = by_id[red]["fast"]
    assert fast["precision"] == "int8" and fast["coarse"] == "bacilli_coarse.int8.onnx"
    assert fast["refine"] == "bacilli_dense.int8.onnx" and fast["stride_px"] == 6 and fast["phase_px"] == [0, 0]
    assert by_id[plain]["fast"] is None
    assert fast["cascade"] is None  # int8 reads every grid point and refined pixel: the cascade is fp32's
    text = httpx.get(f"{server.url}/metrics").text
    assert f'tbseg_fields_processed_total{{mode="fast",model_id="{red}"}}' in text
