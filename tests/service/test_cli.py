"""``python -m service segment``: outputs, skipping done fields, atomic files, summary, bad files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from service.field_result import AnalyzedField
from service.slides.report import SlideReport
from tests.conftest import install_model
from training.data.synthetic import synthetic_field

ROOT = Path(__file__).resolve().parents[2]


def _run(
    args: list[str], model: Path, object_filter: Path | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """``python -m service segment`` with ``model`` (a dense ONNX file, and its filter) as the one model of a models
    directory made beside the outputs, or ``model`` itself when it is a models directory."""
    out = Path(args[args.index("-o") + 1]) if "-o" in args else Path.cwd()
    models = model if model.is_dir() else out.parent / f"models-{out.name}"
    if not models.exists():
        install_model(models, model, object_filter)
    env = {
        **os.environ,
        "TBSEG_MODELS_DIR": str(models),
        "TBSEG_TILE_PX": "128",
        "TBSEG_PROVIDERS": "CPUExecutionProvider",
        **{f"TBSEG_{k.upper()}": v for k, v in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "service", "segment", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=300,
    )


def test_batch_segments_skips_and_summarises(tmp_path: Path, random_dense_onnx: Path) -> None:
    fields = tmp_path / "fields"
    (fields / "nested").mkdir(parents=True)
    for i, where in ((1, fields), (2, fields / "nested")):
        Image.fromarray(synthetic_field(i, height=80, width=100).image).save(where / f"f{i}.png")
    (fields / "notes.txt").write_text("not an image")
    (fields / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"

    first = _run([str(fields), "-o", str(out), "--overlay"], random_dense_onnx)
    assert first.returncode == 1, first.stderr  # one field failed, the others are done
    assert "broken.png" in first.stderr and "Traceback" not in first.stderr
    for stem in ("f1", "f2"):
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (80, 100) and set(np.unique(mask)) <= {0, 255}
        objects = json.loads((out / f"{stem}_objects.json").read_text())
        assert objects["count"] == len(objects["bacilli"])
        assert (out / f"{stem}_overlay.png").is_file()
    assert not list(out.glob(".*partial"))
    with (out / "summary.csv").open() as handle:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    assert rows["f1.png"]["status"] == "done" and rows["broken.png"]["status"] == "error"

    stamp = (out / "f1_mask.png").stat().st_mtime_ns
    again = _run([str(fields / "f1.png"), str(fields / "nested"), "-o", str(out), "--overlay"], random_dense_onnx)
    assert again.returncode == 0, again.stderr
    assert (out / "f1_mask.png").stat().st_mtime_ns == stamp
    with (out / "summary.csv").open() as handle:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    assert rows["f1.png"]["status"].startswith("skipped") and rows["f2.png"]["status"].startswith("skipped")
    assert set(rows) == {"f1.png", "f2.png"}


def test_missing_input_and_name_clash(tmp_path: Path, random_dense_onnx: Path) -> None:
    missing = _run([str(tmp_path / "nothing"), "-o", str(tmp_path / "o")], random_dense_onnx)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        Image.new("RGB", (50, 50)).save(tmp_path / where / "same.png")
    clash = _run([str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "o")], random_dense_onnx)
    assert clash.returncode == 2 and "same outputs" in clash.stderr


def test_batch_with_the_object_filter_grades_a_slide(
    tmp_path: Path, random_dense_onnx: Path, random_object_filter: Path
) -> None:
    fields = tmp_path / "fields"
    fields.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_field(60 + i, height=100, width=120).image).save(fields / f"f{i}.png")
    out = tmp_path / "out"
    done = _run([str(fields), "-o", str(out), "--slide"], random_dense_onnx, object_filter=random_object_filter)
    assert done.returncode == 0, done.stderr
    afb = []
    for i in range(3):
        mask = np.asarray(Image.open(out / f"f{i}_mask.png")) == 255
        objects = np.asarray(Image.open(out / f"f{i}_objects.png")) == 255
        assert objects.shape == mask.shape and not (objects & ~mask).any()
        found = json.loads((out / f"f{i}_objects.json").read_text())
        assert found["filter_id"].startswith("tbseg-objects-")
        assert found["candidates"] == found["count"] + len(found["rejected"])
        assert objects.sum() == sum(b["area_px"] for b in found["bacilli"])
        afb.append(found["estimated_bacilli"])
    slide = json.loads((out / "slide.json").read_text())
    assert [f["afb"] for f in slide["fields"]] == afb and slide["total_afb"] == sum(afb)
    assert (
        slide["fields_examined"] == 3
        and slide["needs_review"]
        and slide["grade"] in {"negative", "scanty", "1+", "2+", "3+"}
    )
    assert "slide:" in done.stderr
    # the same schemas as the API: GET /v1/slides/{id} for slide.json, /v1/analyze for _objects.json
    assert set(slide) == set(SlideReport.model_fields) and SlideReport.model_validate(slide).slide_id == "out"
    found = json.loads((out / "f0_objects.json").read_text())
    assert set(found) - {"file"} == set(AnalyzedField.model_fields)
    assert AnalyzedField.model_validate(found).rejected is not None
    named = _run(
        [str(fields), "-o", str(out), "--slide-id", "S-2026-17"],
        random_dense_onnx,
        object_filter=random_object_filter,
    )
    assert named.returncode == 0 and "skipped" in (out / "summary.csv").read_text()
    again = json.loads((out / "slide.json").read_text())
    assert again["slide_id"] == "S-2026-17" and [f["afb"] for f in again["fields"]] == afb


def _list_models(models: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "models"],
        capture_output=True,
        text=True,
        env={**os.environ, "TBSEG_MODELS_DIR": str(models)},
        cwd=ROOT,
        check=False,
        timeout=120,
    )


def test_batch_and_models_commands_pick_a_model_by_id(
    tmp_path: Path, random_dense_onnx: Path, other_dense_onnx: Callable[[float], Path]
) -> None:
    from service.engine.model import OnnxModel

    models = install_model(tmp_path / "models", random_dense_onnx, name="first")
    install_model(models, other_dense_onnx(2.0), name="second")
    first, second = (
        OnnxModel(p, providers=("CPUExecutionProvider",)).meta.model_id
        for p in (random_dense_onnx, other_dense_onnx(2.0))
    )
    fields = tmp_path / "fields"
    fields.mkdir()
    Image.fromarray(synthetic_field(70, height=80, width=100).image).save(fields / "f.png")
    env = {"models_dir": str(models), "default_model": first}
    picked = _run([str(fields), "-o", str(tmp_path / "out"), "--model", second], random_dense_onnx, **env)
    assert picked.returncode == 0, picked.stderr
    assert json.loads((tmp_path / "out" / "f_objects.json").read_text())["model_id"] == second
    unknown = _run([str(fields), "-o", str(tmp_path / "o2"), "--model", "nope"], random_dense_onnx, **env)
    assert unknown.returncode == 2 and "--model nope: no such model" in unknown.stderr and first in unknown.stderr
    listed = _list_models(models)
    assert listed.returncode == 2 and "name the default in TBSEG_DEFAULT_MODEL" in listed.stderr
    (models / "DEFAULT_MODEL").write_text(second)
    listed = _list_models(models)
    lines = listed.stdout.splitlines()
    assert listed.returncode == 0 and len(lines) == 2
    assert any(line.startswith(f"* {second}") for line in lines) and any(first in line for line in lines)


def test_the_batch_command_takes_the_mode(tmp_path: Path, red_fast_folder: Path, random_dense_onnx: Path) -> None:
    from tests.conftest import red_rod_field

    fields = tmp_path / "fields"
    fields.mkdir()
    Image.fromarray(red_rod_field((112, 112), 32)).save(fields / "rod.png")
    models = tmp_path / "models-fast"
    models.mkdir()
    (models / "red").symlink_to(red_fast_folder, target_is_directory=True)
    args = [str(fields), "-o", str(tmp_path / "fast"), "--mode", "fast", "--slide"]
    fast = _run(args, random_dense_onnx, fast_precision="int8")
    assert fast.returncode == 0, fast.stderr
    body = AnalyzedField.model_validate_json((tmp_path / "fast" / "rod_objects.json").read_text())
    assert (body.mode, body.precision, body.count) == ("fast", "int8", 1) and body.refined_tiles
    slide = SlideReport.model_validate_json((tmp_path / "fast" / "slide.json").read_text())
    assert slide.modes == ["fast"]
    with (tmp_path / "fast" / "summary.csv").open() as handle:
        assert next(csv.DictReader(handle))["mode"] == "fast"
    # the same outputs asked for in exact mode are made again, not skipped
    exact = _run([str(fields), "-o", str(tmp_path / "fast"), "--mode", "exact"], random_dense_onnx)
    assert exact.returncode == 0, exact.stderr
    with (tmp_path / "fast" / "summary.csv").open() as handle:
        assert [(r["status"], r["mode"]) for r in csv.DictReader(handle)] == [("done", "exact")]
    assert AnalyzedField.model_validate_json((tmp_path / "fast" / "rod_objects.json").read_text()).mode == "exact"
    # a model without fast networks: --mode fast is refused, naming the model
    plain = _run([str(fields), "-o", str(tmp_path / "plain"), "--mode", "fast"], random_dense_onnx)
    assert plain.returncode == 2 and "no fast networks" in plain.stderr


def test_the_batch_command_records_each_fields_quality(tmp_path: Path) -> None:
    """On the shipped model (its folder has quality limits): summary.csv says which fields are readable and why
    not, and the slide counts only the readable one."""
    from tests.service.engine.test_quality import smear_like
    from training.data.degrade import gaussian_blur

    fields = tmp_path / "fields"
    fields.mkdir()
    Image.fromarray(smear_like(seed=11)).save(fields / "sharp.png")
    Image.fromarray(gaussian_blur(smear_like(seed=12), 10.0)).save(fields / "blurred.png")
    out = tmp_path / "out"
    done = _run([str(fields), "-o", str(out), "--slide"], ROOT / "models")
    assert done.returncode == 0, done.stderr
    with (out / "summary.csv").open() as handle:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    assert rows["sharp.png"]["readable"] == "True" and rows["sharp.png"]["quality_reasons"] == ""
    assert rows["blurred.png"]["readable"] == "False"
    assert rows["blurred.png"]["quality_reasons"].startswith("out of focus: sharpness")
    slide = SlideReport.model_validate_json((out / "slide.json").read_text())
    assert slide.fields_examined == 1 and len(slide.fields) == 2
