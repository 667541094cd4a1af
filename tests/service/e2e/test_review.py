"""Reviewing a slide over HTTP (what the web page does, as a script does it), on a real server with a real object
filter: objects, accept / reject / add / remove, who and when from the key's user, the automatic and reviewed
figures side by side, signatures, the exports (read back by the training data layer), images while the job keeps
them, and all of it kept across a restart."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.service.e2e.conftest import png_bytes, start_server, stop_server

KEYS = "alice=key-alice,bob=key-bob"


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def fields() -> list[bytes]:
    from training.data.synthetic import synthetic_field

    return [png_bytes(synthetic_field(seed, height=300, width=400, rods=8, debris=8).image) for seed in (301, 302)]


def _read_slide(url: str, slide: str, fields: list[bytes]) -> None:
    """Send each field as its own job for ``slide`` (as the page does) and wait until the slide holds them all."""
    for i, data in enumerate(fields):
        accepted = httpx.post(
            f"{url}/v1/jobs",
            params={"slide_id": slide},
            files={"files": (f"field-{i + 1}.png", data, "image/png")},
            headers=_h("key-alice"),
        )
        assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        got = httpx.get(f"{url}/v1/slides/{slide}", headers=_h("key-alice"))
        if got.status_code == 200 and len(got.json()["fields"]) == len(fields):
            return
        time.sleep(0.1)
    raise AssertionError("the jobs did not file their fields into the slide in 90 s")


def test_review_over_http_is_recorded_with_who_and_survives_a_restart(
    random_dense_onnx: Path, random_object_filter: Path, fields: list[bytes], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = start_server(random_dense_onnx, log, object_filter=random_object_filter, tile_px="96", api_keys=KEYS)
    url, slide = server.url, "S-review-1"
    try:
        assert httpx.get(f"{url}/v1/me", headers=_h("key-bob")).json() == {
            "user": "bob",
            "key_required": True,
            "lab": None,
        }
        assert httpx.get(f"{url}/v1/me").status_code == 401
        _read_slide(url, slide, fields)
        report = httpx.get(f"{url}/v1/slides/{slide}", headers=_h("key-alice")).json()
        assert report["review"]["total_afb"] == report["total_afb"] and report["review"]["objects_reviewed"] == 0
        objects = httpx.get(f"{url}/v1/slides/{slide}/fields/0/objects", headers=_h("key-alice")).json()
        assert objects["reviewable"] and objects["image_url"] == f"/v1/slides/{slide}/fields/0/image"
        kept = [o for o in objects["objects"] if o["origin"] == "kept"]
        rejected = [o for o in objects["objects"] if o["origin"] == "rejected"]
        assert kept and rejected, "the filter kept some candidates and rejected others"
        assert all(o["outline"] and o["outline"][0] == o["outline"][-1] for o in objects["objects"])
        assert sum(o["afb"] for o in kept) == report["fields"][0]["afb"]

        # reject a kept object (alice), accept a rejected candidate (bob): the reviewed figure moves, the automatic
        # one stays
        one = httpx.put(
            f"{url}/v1/slides/{slide}/fields/0/objects/{kept[0]['number']}/review",
            json={"decision": "reject", "reviewer": "mallory"},  # the key names alice: the body's name is ignored
            headers=_h("key-alice"),
        ).json()
        assert (one["object"]["decision"], one["object"]["reviewer"], one["object"]["counted"]) == (
            "reject",
            "alice",
            False,
        )
        two = httpx.put(
            f"{url}/v1/slides/{slide}/fields/0/objects/{rejected[0]['number']}/review",
            json={"decision": "accept"},
            headers=_h("key-bob"),
        ).json()
        review = two["slide"]["review"]
        expected = report["total_afb"] - kept[0]["afb"] + rejected[0]["afb"]
        assert review["total_afb"] == expected and two["slide"]["total_afb"] == report["total_afb"]
        assert (review["objects_rejected"], review["objects_accepted"], review["reviewed_by"]) == (
            1,
            1,
            ["alice", "bob"],
        )

        # add a missed bacillus and remove it again; a model's object cannot be removed, only rejected
        added = httpx.post(
            f"{url}/v1/slides/{slide}/fields/1/objects", json={"x": 20.5, "y": 30}, headers=_h("key-bob")
        )
        assert added.status_code == 201
        number = added.json()["object"]["number"]
        assert added.json()["slide"]["review"]["total_afb"] == expected + 1
        assert added.json()["object"]["origin"] == "added" and added.json()["object"]["reviewer"] == "bob"
        outside = httpx.post(
            f"{url}/v1/slides/{slide}/fields/1/objects", json={"x": 400, "y": 3}, headers=_h("key-bob")
        )
        assert outside.status_code == 422 and "outside" in outside.json()["detail"]
        refused = httpx.delete(
            f"{url}/v1/slides/{slide}/fields/0/objects/{kept[1]['number'] if len(kept) > 1 else kept[0]['number']}",
            headers=_h("key-bob"),
        )
        assert refused.status_code == 409 and "reject it instead" in refused.json()["detail"]
        again = httpx.post(
            f"{url}/v1/slides/{slide}/fields/1/objects", json={"x": 100, "y": 100}, headers=_h("key-bob")
        )
        assert again.status_code == 201
        removed = httpx.delete(f"{url}/v1/slides/{slide}/fields/1/objects/{number}", headers=_h("key-bob"))
        assert removed.json()["review"]["total_afb"] == expected + 1  # one of the two added points is left
        missing = httpx.put(
            f"{url}/v1/slides/{slide}/fields/0/objects/9999/review", json={"decision": "accept"}, headers=_h("key-bob")
        )
        assert missing.status_code == 404
        assert httpx.get(f"{url}/v1/slides/{slide}/fields/7/objects", headers=_h("key-bob")).status_code == 404

        # sign: the key's user signs the reviewed grade as it stands
        signed = httpx.post(f"{url}/v1/slides/{slide}/sign", json={}, headers=_h("key-alice")).json()
        signature = signed["review"]["signature"]
        assert (signature["signed_by"], signature["total_afb"], signature["current"]) == ("alice", expected + 1, True)

        # the image, as sent, while the job keeps it
        image = httpx.get(f"{url}/v1/slides/{slide}/fields/0/image", headers=_h("key-alice"))
        assert image.headers["content-type"] == "image/png" and image.content == fields[0]
    finally:
        stop_server(server)

    # a restart on the same data folder (and the models folder the first start made): every decision, who and
    # when, the signature
    server = start_server(log.parent / f"models-{log.stem}", log, tile_px="96", api_keys=KEYS)
    url = server.url
    try:
        after = httpx.get(f"{url}/v1/slides/{slide}", headers=_h("key-alice")).json()
        assert after["review"]["total_afb"] == expected + 1 and after["review"]["reviewed_by"] == ["alice", "bob"]
        assert after["review"]["signature"]["signed_by"] == "alice" and after["review"]["signature"]["current"]
        objects = httpx.get(f"{url}/v1/slides/{slide}/fields/0/objects", headers=_h("key-alice")).json()
        decided = {o["number"]: (o["decision"], o["reviewer"]) for o in objects["objects"] if o["decision"]}
        assert decided == {kept[0]["number"]: ("reject", "alice"), rejected[0]["number"]: ("accept", "bob")}
        # a later change makes the signature stale, and says so
        httpx.put(
            f"{url}/v1/slides/{slide}/fields/0/objects/{kept[0]['number']}/review",
            json={"decision": None},
            headers=_h("key-alice"),
        )
        assert not httpx.get(f"{url}/v1/slides/{slide}", headers=_h("key-alice")).json()["review"]["signature"][
            "current"
        ]
        log_entries = httpx.get(f"{url}/v1/slides/{slide}/review-log", headers=_h("key-bob")).json()
        assert [(e["action"], e["reviewer"]) for e in log_entries] == [
            ("reject", "alice"),
            ("accept", "bob"),
            ("add", "bob"),
            ("add", "bob"),
            ("remove", "bob"),
            ("sign", "alice"),
            ("clear", "alice"),
        ]
        _check_exports(url, slide, after, tmp_path)
    finally:
        stop_server(server)


def _check_exports(url: str, slide: str, report: dict, tmp_path: Path) -> None:
    from training.data.dataset import load_dataset

    counts = httpx.get(f"{url}/v1/slides/{slide}/counts.csv", headers=_h("key-alice"))
    rows = list(csv.DictReader(io.StringIO(counts.text)))
    assert [r["name"] for r in rows] == ["field-1.png", "field-2.png"]
    now = httpx.get(f"{url}/v1/slides/{slide}", headers=_h("key-alice")).json()
    assert [int(r["reviewed_afb"]) for r in rows] == [f["reviewed_afb"] for f in now["fields"]]
    assert [int(r["afb"]) for r in rows] == [f["afb"] for f in report["fields"]]

    geojson = httpx.get(f"{url}/v1/slides/{slide}/fields/1/objects.geojson", headers=_h("key-alice")).json()
    classes = {f["properties"]["classification"]["name"] for f in geojson["features"]}
    assert "Bacillus (added in review)" in classes and geojson["type"] == "FeatureCollection"
    assert any(f["geometry"]["type"] == "Point" for f in geojson["features"])

    html = httpx.get(f"{url}/v1/slides/{slide}/report.html", headers=_h("key-alice")).text
    assert (
        f"slide {slide}" in html and "Reviewed by: bob" in html and "review changed after" in html
    )  # alice cleared hers
    assert "Automatic decision: review" in html and "domain.json" in html  # the decision and its evidence, first

    for fmt in ("points", "voc"):
        archive = httpx.get(
            f"{url}/v1/slides/{slide}/annotations.zip", params={"format": fmt}, headers=_h("key-alice")
        ).content
        folder = tmp_path / fmt
        zipfile.ZipFile(io.BytesIO(archive)).extractall(folder)
        read = {f.image_path.name: f for f in load_dataset(folder)}  # training's own data layer reads it
        assert set(read) == {"field-1.png", "field-2.png"}
        for i, name in enumerate(("field-1.png", "field-2.png")):
            assert len(read[name].boxes) == sum(
                1
                for o in httpx.get(f"{url}/v1/slides/{slide}/fields/{i}/objects", headers=_h("key-alice")).json()[
                    "objects"
                ]
                if o["counted"]
            )


def test_fields_sent_to_slides_directly_are_reviewable_but_keep_no_image(random_server, fields: list[bytes]) -> None:
    url = random_server.url
    created = httpx.post(
        f"{url}/v1/slides",
        params={"slide_id": "S-direct"},
        files=[("files", ("a.png", fields[0], "image/png"))],
        timeout=60,
    )
    assert created.status_code == 201
    assert created.json()["fields"][0]["reviewable"] and created.json()["fields"][0]["image_url"] is None
    gone = httpx.get(f"{url}/v1/slides/S-direct/fields/0/image")
    assert gone.status_code == 410 and "only jobs keep their images" in gone.json()["detail"]
    assert httpx.post(f"{url}/v1/slides/S-direct/sign", json={}).status_code == 422  # nobody named
    signed = httpx.post(f"{url}/v1/slides/S-direct/sign", json={"signer": "Dr. Okello"})
    assert signed.json()["review"]["signature"]["signed_by"] == "Dr. Okello"


def test_the_page_and_its_files_need_no_key_but_the_api_does(random_dense_onnx: Path, tmp_path: Path) -> None:
    server = start_server(random_dense_onnx, tmp_path / "s.log", tile_px="96", api_key="plain-key")
    try:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and '<meta name="tbseg-auth" content="key">' in page.text
        for path in ("/ui/app.js", "/ui/api.js", "/ui/viewer.js", "/ui/style.css"):
            assert httpx.get(server.url + path).status_code == 200, path
        assert httpx.get(server.url + "/v1/slides/x").status_code == 401
        assert httpx.get(server.url + "/v1/me", headers=_h("plain-key")).json() == {
            "user": None,
            "key_required": True,
            "lab": None,
        }
    finally:
        stop_server(server)


def test_the_ranked_gallery_and_its_thumbnails(
    random_dense_onnx: Path, random_object_filter: Path, fields: list[bytes], tmp_path: Path
) -> None:
    import numpy as np
    from PIL import Image

    server = start_server(random_dense_onnx, tmp_path / "g.log", object_filter=random_object_filter, tile_px="96")
    url, slide = server.url, "S-gallery"
    try:
        _read_slide(url, slide, fields)
        objects = [
            httpx.get(f"{url}/v1/slides/{slide}/fields/{i}/objects").json()["objects"] for i in range(len(fields))
        ]
        body = httpx.get(f"{url}/v1/slides/{slide}/gallery", params={"limit": 5}).json()
        every = sum(len(o) for o in objects)
        assert body["candidates"] == every and body["shown"] == min(5, every) and body["decision"] == "review"
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True) and [i["rank"] for i in body["items"]] == list(range(1, 6))
        best = max((o for field in objects for o in field), key=lambda o: o["score"])
        assert body["items"][0]["score"] == best["score"]
        whole = httpx.get(f"{url}/v1/slides/{slide}/gallery", params={"limit": 500}).json()
        assert {i["origin"] for i in whole["items"]} == {"kept", "rejected"} and whole["shown"] == every

        top = body["items"][0]
        thumb = httpx.get(f"{url}{top['thumbnail_url']}", params={"size": 64})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
        assert len(thumb.content) < 20_000
        image = np.asarray(Image.open(io.BytesIO(thumb.content)))
        assert max(image.shape[:2]) <= 64 and image.shape[2] == 3

        # rejecting it from the gallery is the review route; the gallery shows the decision
        httpx.put(
            f"{url}/v1/slides/{slide}/fields/{top['field_index']}/objects/{top['number']}/review",
            json={"decision": "reject", "reviewer": "ann"},
        )
        again = httpx.get(f"{url}/v1/slides/{slide}/gallery", params={"limit": 1}).json()
        assert again["items"][0]["decision"] == "reject" and again["reviewed"] == 1

        missing = httpx.get(f"{url}/v1/slides/{slide}/fields/0/objects/999999/thumbnail.png")
        assert missing.status_code == 404 and "no object 999999" in missing.json()["detail"]
        assert httpx.get(f"{url}/v1/slides/{slide}/gallery", params={"limit": 501}).status_code == 422
        assert httpx.get(f"{url}/v1/slides/nope/gallery").status_code == 404
    finally:
        stop_server(server)
