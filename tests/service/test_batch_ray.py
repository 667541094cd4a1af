"""``python -m service batch-ray`` on a real local Ray (``ray.init(num_cpus=2)``, started here and shut down after):
results equal ``Segmenter.segment``'s field by field, slides are graded as ``GET /v1/slides/{id}`` grades them, a
second run skips what is done, a corrupt file is recorded and the batch finishes, list files take paths and URIs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from service.cli import main
from tests.conftest import install_model
from tests.service.e2e.test_scale import (
    estimating_models as estimating_models,
)  # a fixture: the red model that estimates

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]'; make test does)")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow comes with the ray extra")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """Two slides of synthetic fields, one folder each; slide B also holds a corrupt file."""
    from PIL import Image

    from training.data.synthetic import synthetic_field

    root = tmp_path / "archive"
    for slide, seeds in (("slide-A", (401, 402)), ("slide-B", (403,))):
        (root / slide).mkdir(parents=True)
        for seed in seeds:
            Image.fromarray(synthetic_field(seed, height=160, width=200).image).save(root / slide / f"f{seed}.png")
    (root / "slide-B" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    return root


@pytest.fixture()
def models(random_dense_onnx: Path, random_object_filter: Path, tmp_path: Path, monkeypatch) -> Path:
    folder = install_model(tmp_path / "models", random_dense_onnx, random_object_filter)
    for name, value in {
        "TBSEG_MODELS_DIR": str(folder),
        "TBSEG_PROVIDERS": "CPUExecutionProvider",
        "TBSEG_TILE_PX": "96",
    }.items():
        monkeypatch.setenv(name, value)
    return folder


def _run(*argv: str) -> tuple[int, dict]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["batch-ray", *argv])
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else {}


def _rows(out: Path) -> list[dict]:
    return [r for f in sorted((out / "fields").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timings"}


def test_results_equal_the_engine_and_a_second_run_skips_what_is_done(
    local_ray, archive: Path, models: Path, tmp_path: Path
) -> None:
    from service.engine.loading import load_segmenter
    from service.engine.model_folder import scan_models
    from service.engine.segmenter import Mode
    from service.field_result import AnalyzedField, FieldOptions, segment_field
    from service.settings import Settings
    from service.slides.intake import slide_field
    from service.slides.model import Slide, SlideField
    from service.slides.report import slide_report

    out = tmp_path / "out"
    code, summary = _run(str(archive), "-o", str(out), "--slides-from-folders", "--workers", "2", "--masks")
    assert code == 1, "one field failed"
    assert (summary["fields"], summary["done"], summary["skipped"], summary["failed"]) == (4, 3, 0, 1)
    assert summary["slides"] == 2 and summary["workers"] == 2 and summary["fields_per_second"] > 0
    assert sum(w["fields"] for w in summary["per_worker"]) == 4

    rows = {r["name"]: r for r in _rows(out)}
    assert rows["broken.png"]["status"] == "failed" and "corrupt" in rows["broken.png"]["error"]
    settings = Settings()
    (folder,) = scan_models(settings.models_dir)
    segmenter = load_segmenter(settings.segmenter_config(folder))
    counts: dict[str, list[SlideField]] = {"slide-A": [], "slide-B": []}
    for path in sorted(archive.rglob("f*.png")):
        row = rows[path.name]
        assert row["status"] == "done" and row["slide_id"] == path.parent.name and row["field_id"] == str(path)
        # the random model has no fast networks: the batch ran exact mode, as the service would
        single = segment_field(
            segmenter, path.read_bytes(), max_pixels=settings.max_pixels, options=FieldOptions(mode=Mode.EXACT)
        )
        expected = single.analyzed(0.0, include_rejected=True).model_dump(mode="json")
        assert _without_timings(json.loads(row["result"])) == _without_timings(expected)
        assert (row["count"], row["estimated_bacilli"]) == (expected["count"], expected["estimated_bacilli"])
        assert Path(row["mask_png"]).is_file() and Path(row["objects_png"]).is_file()
        counts[path.parent.name].append(slide_field(path.name, AnalyzedField.model_validate_json(row["result"])))

    for slide_id, fields in counts.items():
        written = json.loads((out / "slides" / f"{slide_id}.json").read_text())
        expected_report = slide_report(Slide(slide_id, 0.0, tuple(fields))).model_dump(mode="json")
        for key in ("total_afb", "grade", "report", "fields_examined", "afb_per_field"):
            assert written[key] == expected_report[key], key
    assert any("could not be read" in r for r in json.loads((out / "slides" / "slide-B.json").read_text())["reasons"])

    # again: the three done fields are skipped, the corrupt one is tried again and fails again
    code, again = _run(str(archive), "-o", str(out), "--slides-from-folders", "--workers", "1")
    assert code == 1
    assert (again["done"], again["skipped"], again["failed"]) == (0, 3, 1)
    assert json.loads((out / "summary.json").read_text()) == again


def test_a_list_file_of_paths_and_uris(local_ray, archive: Path, models: Path, tmp_path: Path) -> None:
    listing = tmp_path / "fields.txt"
    first, second = sorted(archive.rglob("f*.png"))[:2]
    listing.write_text(f"# two fields\n{first.as_uri()}\n\n{second.relative_to(tmp_path)}\n")
    code, summary = _run(str(listing), "-o", str(tmp_path / "listed"))
    assert code == 0 and (summary["done"], summary["failed"], summary["slides"]) == (2, 0, 0)
    assert {r["field_id"] for r in _rows(tmp_path / "listed")} == {first.as_uri(), str(second)}


def test_bad_inputs_are_one_line_errors(tmp_path: Path, models: Path, caplog) -> None:
    assert _run(str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"))[0] == 2
    (tmp_path / "empty").mkdir()
    assert _run(str(tmp_path / "empty"), "-o", str(tmp_path / "o"))[0] == 2
    listing = tmp_path / "list.txt"
    listing.write_text("missing.png\n")
    assert _run(str(listing), "-o", str(tmp_path / "o"))[0] == 2
    assert (
        "no such folder" in caplog.text
        and "no field images" in caplog.text
        and "missing.png: no such file" in caplog.text
    )


def test_a_slides_fields_share_their_scale_as_through_the_service(
    local_ray, estimating_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half-scale fields of six rods each, then one of two rods (too few alone): the batch reads a slide's first
    fields on their own estimate, then the rest with the slide's pooled evidence, so the two-rod field is read at the
    slide's scale, as the service and ``segment --slide`` read it; with ``--scale-fields 0`` it is read alone."""
    from tests.service.e2e.test_scale import _half_scale_slide

    needed = _half_scale_slide(tmp_path / "archive" / "slide-S")
    monkeypatch.setenv("TBSEG_MODELS_DIR", str(estimating_models))
    monkeypatch.setenv("TBSEG_PROVIDERS", "CPUExecutionProvider")
    out = tmp_path / "out"
    code, summary = _run(
        str(tmp_path / "archive"),
        "-o",
        str(out),
        "--slides-from-folders",
        "--workers",
        "2",
        "--scale-fields",
        str(needed),
    )
    assert code == 0 and summary["done"] == needed + 1
    rows = {r["name"]: r for r in _rows(out)}
    assert rows["s.png"]["scale_source"] == "slide" and rows["s.png"]["count"] == 2
    assert rows["s.png"]["scale_factor"] == pytest.approx(2.0, rel=0.2)
    first = [rows[f"d{i}.png"]["scale_source"] for i in range(needed)]
    assert first == ["estimated"] * needed  # the first fields on their own estimate, in the first pass
    slide = json.loads((out / "slides" / "slide-S.json").read_text())
    assert {f["name"]: f["scale_source"] for f in slide["fields"]}["s.png"] == "slide"

    alone = tmp_path / "alone"  # each field on its own: the two-rod field is read at the model's scale
    code, summary = _run(str(tmp_path / "archive"), "-o", str(alone), "--slides-from-folders", "--scale-fields", "0")
    assert code == 0
    by_name = {r["name"]: r for r in _rows(alone)}
    assert by_name["s.png"]["scale_source"] == "assumed" and by_name["s.png"]["scale_factor"] == 1.0
