"""Lab profiles over HTTP, on a real server: ``lab=`` reads a field at the lab's operating point and decides its
slide on the lab's own negatives; the API key's user's default lab; unknown labs, other models and a profile of a
model that is not served (refused at start)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.engine.lab_profile import LabProfile, NegativeEvidence, PositiveEvidence
from service.engine.object_filter import ObjectFilter
from tests.conftest import install_model
from tests.service.e2e.conftest import REPO_ROOT, model_id_of, png_bytes, start_server, stop_server
from training.data.synthetic import synthetic_field

KEYS = "alice=key-alice,bob=key-bob"


def _profile(labs: Path, lab_id: str, model_id: str, filter_id: str | None, threshold_scores: float) -> LabProfile:
    """A lab whose 200 confirmed-negative fields held one candidate scoring ``threshold_scores``."""
    negatives = NegativeEvidence("confirmed-negative test fields", 200, ((threshold_scores,), *([()] * 199)))
    positives = PositiveEvidence("test bacilli", 2, (0.99, None))
    profile = LabProfile.make(lab_id, model_id, filter_id, negatives, positives, budget=0.02)
    profile.write(labs / lab_id)
    return profile


@pytest.fixture(scope="module")
def lab_server(random_dense_onnx: Path, random_object_filter: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("labs")
    filter_id = ObjectFilter(random_object_filter).meta.filter_id
    profile = _profile(root / "labs", "lab-a", model_id_of(random_dense_onnx), filter_id, 0.62)
    server = start_server(
        random_dense_onnx,
        root / "server.log",
        object_filter=random_object_filter,
        tile_px="96",
        labs_dir=str(root / "labs"),
        api_keys=KEYS,
        key_labs="bob=lab-a",
    )
    yield server, profile
    stop_server(server)


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_lab_reads_a_field_at_the_labs_operating_point(lab_server) -> None:
    server, profile = lab_server
    url = server.url
    labs = httpx.get(f"{url}/v1/labs", headers=_h("key-alice")).json()["labs"]
    assert [(lab["lab_id"], lab["version"], lab["object_threshold"]) for lab in labs] == [("lab-a", 1, 0.63)]
    assert labs[0]["recall"] == 0.5 and labs[0]["negative_fields"] == 200
    full = httpx.get(f"{url}/v1/labs/lab-a", headers=_h("key-alice")).json()
    assert full["negatives"]["fields"] == 200 and full["by_threshold"]
    field = png_bytes(synthetic_field(7, height=200, width=260, rods=6).image)
    plain = httpx.post(f"{url}/v1/analyze", files={"file": ("f.png", field, "image/png")}, headers=_h("key-alice"))
    at_lab = httpx.post(
        f"{url}/v1/analyze?lab=lab-a", files={"file": ("f.png", field, "image/png")}, headers=_h("key-alice")
    )
    body, lab_body = plain.json(), at_lab.json()
    assert body["lab_id"] is None and (lab_body["lab_id"], lab_body["lab_version"]) == ("lab-a", 1)
    assert lab_body["object_threshold"] == profile.object_threshold != body["object_threshold"]
    assert all(b["score"] >= profile.object_threshold for b in lab_body["bacilli"])
    # bob's key names lab-a as his default: the same field, no lab=, reads at the lab's point
    bobs = httpx.post(f"{url}/v1/analyze", files={"file": ("f.png", field, "image/png")}, headers=_h("key-bob"))
    assert bobs.json()["lab_id"] == "lab-a"
    assert httpx.get(f"{url}/v1/me", headers=_h("key-bob")).json()["lab"] == "lab-a"  # the page preselects it
    explicit = httpx.post(
        f"{url}/v1/analyze?lab=lab-a&object_threshold=0.1",
        files={"file": ("f.png", field, "image/png")},
        headers=_h("key-alice"),
    ).json()
    assert explicit["object_threshold"] == 0.1 and explicit["lab_id"] == "lab-a"


def test_unknown_labs_and_other_models_are_refused(lab_server) -> None:
    server, _ = lab_server
    field = png_bytes(synthetic_field(8, height=120, width=160).image)
    unknown = httpx.post(
        f"{server.url}/v1/analyze?lab=nope", files={"file": ("f.png", field, "image/png")}, headers=_h("key-alice")
    )
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/unknown-lab")
    assert "the labs with a profile are: lab-a" in unknown.json()["detail"]
    other = httpx.post(
        f"{server.url}/v1/analyze?lab=lab-a&model=tbseg-other",
        files={"file": ("f.png", field, "image/png")},
        headers=_h("key-alice"),
    )
    assert other.status_code == 409 and other.json()["type"].endswith("/lab-model")
    assert httpx.get(f"{server.url}/v1/labs/nope", headers=_h("key-alice")).status_code == 404


def test_a_slide_read_with_a_lab_is_decided_on_its_negatives_and_records_it(lab_server) -> None:
    server, _ = lab_server
    url = server.url
    blanks = [  # three fields (one field sent three times would be counted once)
        png_bytes(synthetic_field(9 + i, height=120, width=160, rods=0, clusters=0, debris=0, specks=0).image)
        for i in range(3)
    ]
    files = [("files", (f"f{i}.png", blank, "image/png")) for i, blank in enumerate(blanks)]
    made = httpx.post(f"{url}/v1/slides?slide_id=lab-slide&lab=lab-a", files=files, headers=_h("key-alice")).json()
    assert [(f["lab_id"], f["lab_version"]) for f in made["fields"]] == [("lab-a", 1)] * 3
    evidence = made["decision_evidence"]
    assert evidence["lab_profile"] == "lab-a v1" and made["total_afb"] == 0
    # no kept object, but a negative slide needs 100 fields (the unit tests decide one negative)
    assert (
        made["decision"] == "review"
        and "a negative slide needs 100 fields; 3 were examined" in made["decision_reasons"][0]
    )

    # a job for the same lab records it in its parameters and its fields
    job = httpx.post(
        f"{url}/v1/jobs?lab=lab-a&slide_id=lab-job",
        files={"files": ("f.png", blanks[0], "image/png")},
        headers=_h("key-alice"),
    ).json()
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/jobs/{job['job_id']}", headers=_h("key-alice")).json()["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result = httpx.get(f"{url}/v1/jobs/{job['job_id']}/result", headers=_h("key-alice")).json()
    assert result["results"][0]["lab_id"] == "lab-a" and result["slide"]["decision_evidence"]["lab_profile"]


def test_a_profile_of_a_model_not_served_stops_the_start(random_dense_onnx: Path, tmp_path: Path) -> None:
    models = install_model(tmp_path / "models", random_dense_onnx, None)
    _profile(tmp_path / "labs", "lab-b", "tbseg-not-served", None, 0.5)
    env = {
        **os.environ,
        "TBSEG_MODELS_DIR": str(models),
        "TBSEG_LABS_DIR": str(tmp_path / "labs"),
        "TBSEG_PROVIDERS": "CPUExecutionProvider",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "lab-b/profile.json: validated model tbseg-not-served, which is not served" in done.stderr
