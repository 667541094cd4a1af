"""Several models in one service: /v1/models, model=<id> on every route, reload, one model per slide, metrics."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import install_model
from tests.service.e2e.conftest import LiveServer, finished_job, model_id_of, png_bytes, start_server, stop_server
from training.data.synthetic import synthetic_field

FIELD = synthetic_field(41, height=120, width=150, background="pink").image
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def two_models(
    random_dense_onnx: Path,
    random_object_filter: Path,
    other_dense_onnx: Callable[[float], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, Path, str, str]]:
    """The random model with its filter (the default, named in DEFAULT_MODEL) and another without a filter."""
    root = tmp_path_factory.mktemp("two-models")
    models = install_model(root / "models", random_dense_onnx, random_object_filter, card="# A\n\nThe first model.\n")
    install_model(models, other_dense_onnx(2.0), name="other")
    first, second = model_id_of(random_dense_onnx), model_id_of(other_dense_onnx(2.0))
    (models / "DEFAULT_MODEL").write_text(first + "\n")
    server = start_server(models, root / "server.log", tile_px="96")
    yield server, models, first, second
    stop_server(server)


def test_models_are_listed_and_described(two_models: tuple[LiveServer, Path, str, str]) -> None:
    server, _, first, second = two_models
    listed = httpx.get(f"{server.url}/v1/models").json()
    assert listed["default_model"] == first
    by_id = {m["model_id"]: m for m in listed["models"]}
    assert set(by_id) == {first, second}
    assert by_id[first]["default"] and not by_id[second]["default"]
    assert by_id[first]["filter_id"].startswith("tbseg-objects-") and by_id[second]["filter_id"] is None
    assert by_id[first]["card_summary"] == "The first model." and by_id[second]["recipe"] == "other"
    full = httpx.get(f"{server.url}/v1/models/{second}").json()
    assert full["model_id"] == second and full["object_filter"] is None and full["url"] == f"/v1/models/{second}"
    assert httpx.get(f"{server.url}/v1/model").json()["model_id"] == first
    assert httpx.get(f"{server.url}/v1/model?model={second}").json()["model_id"] == second
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["model_id"] == first and sorted(ready["models"]) == sorted([first, second])
    assert "no object_filter.onnx; every candidate of this model is kept" in server.log()


def test_model_picks_the_model_on_every_inference_route(two_models: tuple[LiveServer, Path, str, str]) -> None:
    server, _, first, second = two_models
    default = httpx.post(f"{server.url}/v1/analyze", content=png_bytes(FIELD), headers=PNG)
    chosen = httpx.post(f"{server.url}/v1/analyze?model={second}", content=png_bytes(FIELD), headers=PNG)
    assert default.status_code == chosen.status_code == 200
    assert default.json()["model_id"] == default.headers["x-model-id"] == first
    assert chosen.json()["model_id"] == chosen.headers["x-model-id"] == second
    assert default.json()["filter_id"] is not None and chosen.json()["filter_id"] is None
    heatmaps = [
        httpx.post(f"{server.url}/v1/segment?output=heatmap{query}", content=png_bytes(FIELD), headers=PNG)
        for query in ("", f"&model={second}")
    ]
    assert [h.headers["x-model-id"] for h in heatmaps] == [first, second]
    assert heatmaps[0].content != heatmaps[1].content  # other weights, other probabilities

    unknown = httpx.post(f"{server.url}/v1/analyze?model=nope", content=png_bytes(FIELD), headers=PNG)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert "'nope'" in unknown.json()["detail"] and first in unknown.json()["detail"]
    assert second in unknown.json()["detail"]
    assert httpx.get(f"{server.url}/v1/models/nope").status_code == 404


def test_a_slide_keeps_one_model_unless_asked(two_models: tuple[LiveServer, Path, str, str]) -> None:
    server, _, first, second = two_models
    url = f"{server.url}/v1/slides/one-model/fields"
    assert httpx.post(url, content=png_bytes(FIELD), headers=PNG).status_code == 200
    refused = httpx.post(f"{url}?model={second}", content=png_bytes(FIELD), headers=PNG)
    assert refused.status_code == 409 and first in refused.json()["detail"]
    assert len(httpx.get(f"{server.url}/v1/slides/one-model").json()["fields"]) == 1  # nothing stored
    job = httpx.post(f"{server.url}/v1/jobs?slide_id=one-model&model={second}", content=png_bytes(FIELD), headers=PNG)
    assert job.status_code == 409
    mixed = httpx.post(f"{url}?model={second}&mixed_models=true", content=png_bytes(FIELD), headers=PNG)
    assert mixed.status_code == 200
    report = mixed.json()
    assert report["models"] == [first, second] and report["needs_review"]
    assert any("2 models" in reason for reason in report["reasons"])


def test_jobs_name_their_model(two_models: tuple[LiveServer, Path, str, str]) -> None:
    server, _, _, second = two_models
    accepted = httpx.post(
        f"{server.url}/v1/jobs?model={second}&slide_id=by-other", content=png_bytes(FIELD), headers=PNG
    )
    assert accepted.status_code == 202 and accepted.json()["model_id"] == second
    status_url = f"{server.url}{accepted.json()['status_url']}"
    status = finished_job(status_url)
    assert status["state"] == "done" and status["model_id"] == second
    result = httpx.get(f"{status_url}/result").json()
    assert result["results"][0]["model_id"] == second and result["slide"]["models"] == [second]


def test_metrics_report_each_model(two_models: tuple[LiveServer, Path, str, str]) -> None:
    server, _, first, second = two_models
    text = httpx.get(f"{server.url}/metrics").text
    assert "tbseg_models_loaded 2.0" in text
    for model_id in (first, second):
        line = next(x for x in text.splitlines() if x.startswith(f'tbseg_model_memory_bytes{{model_id="{model_id}"}}'))
        assert float(line.split()[1]) >= 0
    assert f'tbseg_fields_processed_total{{mode="exact",model_id="{first}"}}' in text


def test_reload_adds_new_folders_without_dropping_requests(
    two_models: tuple[LiveServer, Path, str, str], other_dense_onnx: Callable[[float], Path]
) -> None:
    server, models, first, second = two_models
    third = model_id_of(other_dense_onnx(-2.0))
    install_model(models, other_dense_onnx(-2.0), name="third")
    big = synthetic_field(42, height=600, width=700, background="blue").image
    answers: list[httpx.Response] = []
    in_flight = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.url}/v1/analyze", content=png_bytes(big), headers=PNG, timeout=120)
        )
    )
    in_flight.start()
    reloaded = httpx.post(f"{server.url}/v1/models/reload", timeout=120)
    in_flight.join()
    assert reloaded.status_code == 200 and reloaded.json()["added"] == [third]
    assert answers[0].status_code == 200 and answers[0].json()["model_id"] == first
    assert sorted(reloaded.json()["models"]) == sorted([first, second, third])
    served = httpx.post(f"{server.url}/v1/analyze?model={third}", content=png_bytes(FIELD), headers=PNG)
    assert served.status_code == 200 and served.json()["model_id"] == third
    assert httpx.post(f"{server.url}/v1/models/reload").json()["added"] == []

    shutil.copytree(models / "other", models / "other-again", symlinks=True)  # one model_id in two folders
    try:
        refused = httpx.post(f"{server.url}/v1/models/reload")
        assert refused.status_code == 409 and "hold the same model_id" in refused.json()["detail"]
        assert len(httpx.get(f"{server.url}/v1/models").json()["models"]) == 3
    finally:
        shutil.rmtree(models / "other-again")
