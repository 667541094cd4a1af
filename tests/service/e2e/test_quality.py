"""The quality check through the real service on the shipped model: a verdict on every field, unreadable fields
not counted by a slide, a field sent twice counted once; bad input gets a verdict, never an error."""

from __future__ import annotations

import httpx
import numpy as np

from tests.service.e2e.conftest import LiveServer, png_bytes
from tests.service.engine.test_quality import smear_like
from training.data.degrade import gaussian_blur


def test_every_field_says_whether_it_is_readable_and_why_not(shipped_server: LiveServer) -> None:
    url = shipped_server.url
    sharp = httpx.post(f"{url}/v1/analyze", files={"file": ("sharp.png", png_bytes(smear_like()))}, timeout=120)
    assert sharp.status_code == 200 and sharp.json()["quality"]["readable"] is True
    assert set(sharp.json()["quality"]["checks"]) == {"smear", "exposure", "stain", "focus"}
    blurred = gaussian_blur(smear_like(), 10.0)
    answer = httpx.post(f"{url}/v1/analyze", files={"file": ("blurred.png", png_bytes(blurred))}, timeout=120)
    assert answer.status_code == 200, answer.text  # still segmented, as the user may want it
    quality = answer.json()["quality"]
    assert quality["readable"] is False and quality["checks"]["focus"]["ok"] is False
    assert quality["reasons"][-1].startswith("out of focus: sharpness ")
    for name, image in (
        ("one-pixel.png", np.zeros((1, 1, 3), np.uint8)),
        ("white.png", np.full((300, 300, 3), 255, np.uint8)),
        ("black.png", np.zeros((300, 300, 3), np.uint8)),
    ):
        bad = httpx.post(f"{url}/v1/analyze", files={"file": (name, png_bytes(image))}, timeout=120)
        assert bad.status_code == 200, (name, bad.text)
        assert bad.json()["quality"]["readable"] is False and bad.json()["quality"]["reasons"], name
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200


def test_a_slide_counts_readable_fields_once(shipped_server: LiveServer) -> None:
    url = shipped_server.url
    a, b = png_bytes(smear_like(seed=3)), png_bytes(smear_like(seed=4))
    blurred = png_bytes(gaussian_blur(smear_like(seed=5), 10.0))
    files = [("files", (n, data, "image/png")) for n, data in (("a.png", a), ("b.png", b), ("c.png", blurred))]
    files.append(("files", ("a-again.png", a, "image/png")))
    report = httpx.post(f"{url}/v1/slides?slide_id=quality-slide", files=files, timeout=300).json()
    assert report["fields_examined"] == 2 and len(report["fields"]) == 4
    assert [f["counted"] for f in report["fields"]] == [True, True, False, False]
    assert report["fields"][2]["readable"] is False and report["fields"][2]["quality_reasons"]
    assert report["fields"][3]["duplicate_of"] == 0
    assert any("unreadable field(s) not counted" in r for r in report["reasons"])
    assert any("field 3 = field 0" in r for r in report["reasons"])
    printed = httpx.get(f"{url}/v1/slides/quality-slide/report.html", timeout=30)
    assert printed.status_code == 200 and "no: repeats field 1" in printed.text
