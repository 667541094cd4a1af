"""The HTTP API end to end: a real uvicorn process, real ONNX Runtime, real image files."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.engine.model import OnnxModel
from tests.service.e2e.conftest import LiveServer, png_bytes
from training.data.synthetic import synthetic_field
from training.paths import SHIPPED_DIR

FIELD = synthetic_field(21, height=130, width=170, background="pink").image


def _whole_pass(model_path: Path, image: np.ndarray) -> np.ndarray:
    """The reference heatmap: one untiled pass over the mirror-padded field."""
    model = OnnxModel(model_path, providers=("CPUExecutionProvider",))
    padded = np.pad(image, ((22, 22), (22, 22), (0, 0)), mode="reflect").astype(np.float32) / 255
    return model.run(padded[None])[0, ..., 1]


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["detail"] and body["type"].startswith("/problems/")
    return body


def test_health_readiness_model_docs(random_server: LiveServer) -> None:
    url = random_server.url
    assert httpx.get(f"{url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["status"] == "ready" and ready["providers"] == ["CPUExecutionProvider"]
    model = httpx.get(f"{url}/v1/model").json()
    assert model["model_id"] == ready["model_id"] and model["halo_px"] == 22 and model["tile_px"] == 96
    assert model["metadata"]["recipe"] == "random"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/segment", "/v1/analyze", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.mark.parametrize("as_multipart", [True, False])
def test_segment_mask_equals_whole_image_inference(
    random_server: LiveServer, random_dense_onnx: Path, as_multipart: bool
) -> None:
    png = png_bytes(FIELD)
    if as_multipart:
        response = httpx.post(f"{random_server.url}/v1/segment", files={"file": ("f.png", png, "image/png")})
    else:
        response = httpx.post(f"{random_server.url}/v1/segment", content=png, headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == FIELD.shape[:2] and set(np.unique(mask)) <= {0, 255}
    expected = _whole_pass(random_dense_onnx, FIELD) > 0.5
    np.testing.assert_array_equal(mask == 255, expected)
    assert 0 < expected.mean() < 1, "the random model must mark some pixels, or this proves nothing"
    assert response.headers["x-model-id"].startswith("tbseg-random-")
    assert float(response.headers["x-inference-ms"]) > 0
    assert float(response.headers["x-bacillus-fraction"]) == pytest.approx(expected.mean(), abs=1e-6)


def test_heatmap_outputs(random_server: LiveServer, random_dense_onnx: Path) -> None:
    png, expected = png_bytes(FIELD), _whole_pass(random_dense_onnx, FIELD)
    tiff = httpx.post(
        f"{random_server.url}/v1/segment?output=heatmap&format=tiff", content=png, headers={"content-type": "image/png"}
    )
    assert tiff.headers["content-type"] == "image/tiff"
    heat = np.asarray(Image.open(io.BytesIO(tiff.content)))
    assert heat.dtype == np.float32
    np.testing.assert_allclose(heat, expected, atol=1e-5)  # tiles vs one pass: float rounding only
    png_heat = httpx.post(
        f"{random_server.url}/v1/segment?output=heatmap", content=png, headers={"content-type": "image/png"}
    )
    eight_bit = np.asarray(Image.open(io.BytesIO(png_heat.content)))
    assert np.abs(eight_bit.astype(int) - np.rint(expected * 255)).max() <= 1
    shown = httpx.post(
        f"{random_server.url}/v1/segment?output=overlay", content=png, headers={"content-type": "image/png"}
    )
    overlay = np.asarray(Image.open(io.BytesIO(shown.content)))
    assert overlay.shape == FIELD.shape and (overlay == (0, 255, 0)).all(-1).any()


def test_analyze_json_and_geojson(random_server: LiveServer) -> None:
    jpeg = io.BytesIO()
    Image.fromarray(FIELD).save(jpeg, format="JPEG", quality=95)
    url = f"{random_server.url}/v1/analyze?microns_per_pixel=0.1"
    body = httpx.post(url, content=jpeg.getvalue(), headers={"content-type": "image/jpeg"}).json()
    assert body["image"] == {"width": 170, "height": 130, "format": "JPEG", "mode": "RGB"}
    assert body["count"] == len(body["bacilli"]) > 0
    first = body["bacilli"][0]
    assert first["area_px"] >= body["min_object_px"]
    assert first["length_um"] == pytest.approx(first["length_px"] * 0.1, abs=1e-3)
    assert first["area_um2"] == pytest.approx(first["area_px"] * 0.01, abs=1e-3)
    assert set(body["timings"]) == {"decode_ms", "inference_ms", "coarse_ms", "postprocess_ms", "total_ms"}
    assert body["timings"]["coarse_ms"] is None and body["mode"] == "exact" and body["heatmap_exact"]
    geo = httpx.post(f"{url}&format=geojson", content=jpeg.getvalue(), headers={"content-type": "image/jpeg"})
    assert geo.headers["content-type"] == "application/geo+json"
    collection = geo.json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == body["count"]
    feature = collection["features"][0]
    ring = feature["geometry"]["coordinates"][0]
    assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]
    assert feature["properties"]["classification"]["name"] == "Bacillus"
    assert feature["properties"]["measurements"]["Area px"] == first["area_px"]


def _tiff16(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16) * 257).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "size"),
    [
        (png_bytes(FIELD[..., 0]), (170, 130)),  # grey
        (png_bytes(np.dstack([FIELD, np.full(FIELD.shape[:2], 255, np.uint8)])), (170, 130)),  # RGBA
        (_tiff16(FIELD[..., 1]), (170, 130)),  # 16-bit TIFF
        (png_bytes(FIELD[:10, :7]), (7, 10)),  # smaller than the receptive field
        (png_bytes(FIELD[:1, :1]), (1, 1)),  # one pixel
    ],
)
def test_any_mode_and_size_is_segmented(random_server: LiveServer, image: bytes, size: tuple[int, int]) -> None:
    response = httpx.post(f"{random_server.url}/v1/segment", content=image, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == size


def test_bad_input_gets_a_clear_4xx_and_the_service_stays_ready(random_server: LiveServer) -> None:
    url, png = random_server.url, png_bytes(FIELD)
    gif = io.BytesIO()
    Image.fromarray(FIELD).save(gif, format="GIF")
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    cases = [
        (b"", "image/png", 422),  # nothing
        (png[: len(png) // 2], "image/png", 422),  # truncated PNG
        (b"just some text", "image/png", 415),  # text named as a PNG
        (gif.getvalue(), "image/png", 415),  # a format we do not read
        (png, "text/plain", 415),  # wrong Content-Type
        (bomb.getvalue(), "image/png", 413),  # decompression bomb: 400 MP in a few kB
        (b"\0" * 3_100_000, "image/png", 413),  # over the upload limit
    ]
    for body, content_type, status in cases:
        response = httpx.post(f"{url}/v1/segment", content=body, headers={"content-type": content_type})
        _problem(response, status)
    _problem(httpx.post(f"{url}/v1/segment?output=nonsense", content=png, headers={"content-type": "image/png"}), 422)
    _problem(
        httpx.post(f"{url}/v1/analyze?microns_per_pixel=-1", content=png, headers={"content-type": "image/png"}), 422
    )
    _problem(httpx.post(f"{url}/v1/segment", files={"image": ("f.png", png, "image/png")}), 422)
    _problem(httpx.get(f"{url}/v1/nothing-here"), 404)
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert httpx.post(f"{url}/v1/segment", content=png, headers={"content-type": "image/png"}).status_code == 200


def test_full_queue_answers_503_with_retry_after_at_once(random_server: LiveServer) -> None:
    """One worker and a queue of one: of four simultaneous slow requests, two are refused without waiting."""
    big = png_bytes(synthetic_field(3, height=420, width=420).image)

    def post(_: int) -> tuple[int, str | None, float]:
        with httpx.Client(timeout=120) as client:
            response = client.post(
                f"{random_server.url}/v1/segment", content=big, headers={"content-type": "image/png"}
            )
        return response.status_code, response.headers.get("retry-after"), response.elapsed.total_seconds()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(post, range(4)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, results
    refused = [r for r in results if r[0] == 503]
    assert all(retry == "5" for _, retry, _ in refused)
    slowest_ok = max(seconds for status, _, seconds in results if status == 200)
    assert all(seconds < slowest_ok / 2 for _, _, seconds in refused)
    metrics = httpx.get(f"{random_server.url}/metrics").text
    assert 'tbseg_http_requests_total{method="POST",route="/v1/segment",status="503"}' in metrics
    assert "tbseg_megapixels_processed_total" in metrics and "tbseg_queue_depth" in metrics


def test_a_real_field_with_the_shipped_model(shipped_server: LiveServer, znsm_ms2: Path) -> None:
    from training.data.annotations import BoxLabel
    from training.data.dataset import discover_fields, read_annotation

    (files,) = [f for f in discover_fields(znsm_ms2) if f.field_id == "19"]  # a test-split field
    response = httpx.post(
        f"{shipped_server.url}/v1/analyze",
        files={"file": ("19.jpg", files.image.read_bytes(), "image/jpeg")},
        timeout=600,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"]["width"] == 2592 and body["image"]["height"] == 1944
    # the default is fast mode with fp32 networks (docs/results.md section 10); exact mode keeps the same bacilli
    assert (body["mode"], body["precision"], body["heatmap_exact"]) == ("fast", "fp32", False)
    boxes = read_annotation(files).boxes_with(BoxLabel.SINGLE_BACILLUS, BoxLabel.BACILLI_CLUSTER)
    # exact mode keeps the same bacilli (a 1024×768 part of the field around an expert's box: exact mode reads a
    # whole 2592×1944 field in about a minute on 2 cores; both read at the model's own pixel size)
    x0 = min(max(0, boxes[0].x + boxes[0].width // 2 - 512), 2592 - 1024)
    y0 = min(max(0, boxes[0].y + boxes[0].height // 2 - 384), 1944 - 768)
    part = png_bytes(np.asarray(Image.open(files.image).convert("RGB"))[y0 : y0 + 768, x0 : x0 + 1024])
    pixel_size = json.loads((SHIPPED_DIR / "scale.json").read_text())["pixel_size_um"]
    read = {
        mode: httpx.post(
            f"{shipped_server.url}/v1/analyze?mode={mode}&microns_per_pixel={pixel_size}",
            files={"file": ("19-part.png", part, "image/png")},
            timeout=600,
        ).json()
        for mode in ("fast", "exact")
    }
    assert read["exact"]["mode"] == "exact" and read["exact"]["count"] == read["fast"]["count"] > 0
    assert [b["bbox"] for b in read["exact"]["bacilli"]] == [b["bbox"] for b in read["fast"]["bacilli"]]

    def hit(box) -> bool:  # type: ignore[no-untyped-def]
        return any(
            box.x <= b["centroid"]["x"] < box.x + box.width and box.y <= b["centroid"]["y"] < box.y + box.height
            for b in body["bacilli"]
        )

    found = sum(hit(box) for box in boxes)
    assert found >= 0.8 * len(boxes), f"{found} of {len(boxes)} annotated bacilli have an object"
    model = httpx.get(f"{shipped_server.url}/v1/model", timeout=30).json()
    assert body["model_id"] == model["model_id"]
    # fast mode read with the folder's cascade, and found exact mode's bacilli above
    described = json.loads((SHIPPED_DIR / "cascade.json").read_text())
    cascade = model["fast"]["cascade"]
    assert {k: v for k, v in cascade.items() if k != "screening"} == described["rule"]
    # its grid read in int8, screening at the threshold less the model's margin
    assert (
        cascade["screening"]["precision"] == "int8"
        and cascade["screening"]["margin"] == described["screening"]["margin"]
        and cascade["screening"]["fp32_band_logit"] == described["screening"]["fp32_band_logit"]
    )
    assert cascade["screening"]["screens_at"] == pytest.approx(
        model["fast"]["screen_threshold"] - cascade["screening"]["margin"]
    )
    declared = model["metadata"].get("input_normalisation")
    if declared is None:
        assert model["input_normalisation"] is None
    else:  # the service reports the normalisation the model file declares, as it applies it
        assert model["input_normalisation"]["method"] == json.loads(declared)["method"]


def test_the_shipped_model_says_which_fields_it_has_evidence_for(
    shipped_server: LiveServer, znsm_ms2: Path, ufam_dds1: Path
) -> None:
    """A field of the model's own microscope reads as in its domain and a slide of it may be decided; another
    lab's negative fields read as out of its domain, and their slide is ``review`` whatever it counts."""
    url = shipped_server.url
    own = (znsm_ms2 / "images" / "19.jpg").read_bytes()  # a test-split field
    created = httpx.post(
        f"{url}/v1/slides?slide_id=own-lab", files=[("files", ("19.jpg", own, "image/jpeg"))], timeout=600
    )
    assert created.status_code == 201, created.text
    report = created.json()
    assert report["fields"][0]["in_domain"] is True and report["decision_evidence"]["fields_in_domain"] == 1
    negatives = sorted((ufam_dds1 / "negatives").glob("S04*.png"))[:2]  # a test slide's negative fields
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in negatives]
    foreign = httpx.post(f"{url}/v1/slides?slide_id=other-lab", files=files, timeout=600).json()
    assert [f["in_domain"] for f in foreign["fields"]] == [False, False]
    assert all(f["domain_reasons"] for f in foreign["fields"])
    assert foreign["decision"] == "review" and foreign["decision_evidence"]["fields_out_of_domain"] == 2
    assert any("do not look like the model's training fields" in r for r in foreign["decision_reasons"])
    analyzed = httpx.post(
        f"{url}/v1/analyze", files={"file": (negatives[0].name, negatives[0].read_bytes(), "image/png")}, timeout=600
    ).json()
    assert analyzed["domain"]["in_domain"] is False and analyzed["domain"]["distance"] > analyzed["domain"]["limit"]
