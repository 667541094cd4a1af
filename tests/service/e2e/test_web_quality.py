"""The page shows an unreadable field at once with its reason, before its count (issue 27), in a real browser
against the real service on the shipped model (whose folder has the quality check's limits)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.service.e2e.conftest import LiveServer, png_bytes
from tests.service.e2e.test_web_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, playwright_api
from tests.service.engine.test_quality import smear_like
from training.data.degrade import gaussian_blur

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium: apt-get install chromium")


def test_an_unreadable_field_says_why_before_its_count(shipped_server: LiveServer, tmp_path: Path) -> None:
    sharp, blurred = tmp_path / "sharp.png", tmp_path / "blurred.png"
    sharp.write_bytes(png_bytes(smear_like(seed=7)))
    blurred.write_bytes(png_bytes(gaussian_blur(smear_like(seed=8), 10.0)))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(shipped_server.url + "/")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        page.fill("#slide-id", "quality-page")
        page.set_input_files("#files", [str(sharp), str(blurred)])
        page.wait_for_function("document.querySelectorAll('#fields li[data-state=done]').length === 2", timeout=120_000)
        entries = page.evaluate(
            """[...document.querySelectorAll('#fields li')].map((li) => ({
                 name: li.querySelector('.name').textContent,
                 order: [...li.querySelector('.entry').children].map((c) => c.className),
                 quality: li.querySelector('.quality')?.textContent ?? null,
                 state: li.querySelector('.state').textContent,
                 counts: li.querySelector('.counts').textContent }))"""
        )
        by_name = {e["name"]: e for e in entries}
        assert by_name["sharp.png"]["quality"] is None and "not counted" not in by_name["sharp.png"]["counts"]
        # sent with no pixel size: each field says where the scale it was read at came from
        report = httpx.get(f"{shipped_server.url}/v1/slides/quality-page", timeout=30).json()
        said = {"estimated": "scale estimated from the field", "assumed": "pixel size unknown: read as uploaded"}
        for field in report["fields"]:
            assert field["scale_source"] in said, field["scale_source"]
            assert by_name[field["name"]]["state"].endswith(said[field["scale_source"]])
        unreadable = by_name["blurred.png"]
        assert unreadable["quality"].startswith("unreadable: out of focus: sharpness ")
        assert unreadable["order"].index("quality error") < unreadable["order"].index("counts")
        assert unreadable["counts"].endswith("not counted")
        assert page.inner_text("#fields-examined") == "1"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "quality-unreadable-field.png"))
        assert not errors, errors
        browser.close()
