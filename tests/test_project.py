"""The project's standing rules: dependency groups, the service's imports, the two set-up commands."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import install_model
from training.paths import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parents[1]


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[=<>!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_service_groups_never_pull_tensorflow() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    base = _requirement_names(project["dependencies"])
    for group in ("api", "service", "gpu"):
        names = base | _requirement_names(extras[group]) | _requirement_names(extras["api"])
        assert not names & {"tensorflow", "tf2onnx", "keras", "tf-keras"}, group
    assert "onnxruntime" in _requirement_names(extras["service"])
    assert "onnxruntime-gpu" in _requirement_names(extras["gpu"])
    assert "onnxruntime" not in _requirement_names(extras["gpu"])
    assert {"tensorflow", "tf2onnx", "onnx"} <= _requirement_names(extras["training"])
    assert "onnxruntime" in _requirement_names(extras["training"])  # training runs models through service.engine
    # every direct dependency is pinned to a version seen working
    for requirement in project["dependencies"] + [r for g in extras.values() for r in g if not r.startswith("tbseg")]:
        assert "==" in requirement, requirement


def test_service_never_imports_tensorflow_or_training() -> None:
    for path in (ROOT / "service").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top not in {"tensorflow", "keras", "tf2onnx", "training"}, f"{path}: imports {module}"


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("install:", "serve:", "test:"):
        assert re.search(rf"^{target}", makefile, re.MULTILINE), target


def _serve(models: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "TBSEG_MODELS_DIR": str(models),
        "TBSEG_PORT": "1",
        **{f"TBSEG_{k.upper()}": v for k, v in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_serve_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    missing = _serve(tmp_path / "missing")
    assert missing.returncode == 2
    assert "missing: models directory not found" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _serve(tmp_path / "empty")
    assert empty.returncode == 2 and "no model folder" in empty.stderr


def test_serve_refuses_a_corrupt_model_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    result = _serve(install_model(tmp_path / "models", bad, name="broken"))
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "broken/bacilli_dense.onnx" in result.stderr
    assert "cannot load" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_corrupt_object_filter_and_a_missing_one_when_required(tmp_path: Path) -> None:
    bad = tmp_path / "filter.onnx"
    bad.write_bytes(b"\0" * 64)
    corrupt = _serve(install_model(tmp_path / "a", SHIPPED_MODEL, bad))
    assert corrupt.returncode == 2 and "object_filter.onnx: ONNX Runtime cannot load it" in corrupt.stderr
    required = _serve(install_model(tmp_path / "b", SHIPPED_MODEL, name="bare"), require_filter="true")
    assert required.returncode == 2 and "bare: no object_filter.onnx, and filters are required" in required.stderr
    assert "Traceback" not in corrupt.stderr + required.stderr


def test_serve_refuses_two_folders_with_one_model_id_and_an_unknown_default(tmp_path: Path) -> None:
    models = install_model(tmp_path / "models", SHIPPED_MODEL, name="one")
    install_model(models, SHIPPED_MODEL, name="two")
    twice = _serve(models)
    assert twice.returncode == 2 and "one and" in twice.stderr and "two hold the same model_id" in twice.stderr
    single = install_model(tmp_path / "single", SHIPPED_MODEL)
    unknown = _serve(single, default_model="no-such-model")
    assert unknown.returncode == 2 and "TBSEG_DEFAULT_MODEL names 'no-such-model'" in unknown.stderr
    removed = subprocess.run(
        [sys.executable, "-m", "service", "models"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "TBSEG_MODEL_PATH": str(SHIPPED_MODEL)},
        cwd=ROOT,
        timeout=60,
    )
    assert removed.returncode == 2 and "TBSEG_MODEL_PATH is no longer read" in removed.stderr


def test_cuda_asked_for_but_absent_runs_on_the_cpu_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    from service.engine.model import OnnxModel

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine's onnxruntime has CUDA: the fallback is not exercised here")
    with caplog.at_level("WARNING"):
        model = OnnxModel(SHIPPED_MODEL)  # default: CUDA first, then CPU
    assert model.providers == ("CPUExecutionProvider",)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "CUDAExecutionProvider" in warnings[0].getMessage()


def test_readme_documents_every_setting() -> None:
    from service.settings import Settings

    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`TBSEG_{name.upper()}`" in readme, name


def card_text(models: Path) -> str:
    return (models / "MODEL_CARD.md").read_text()


def test_models_ships_exactly_one_self_describing_model_folder() -> None:
    import onnx

    models = ROOT / "models"
    default = (models / "DEFAULT_MODEL").read_text().strip()
    assert sorted(p.name for p in models.iterdir()) == ["DEFAULT_MODEL", default]
    folder = models / default
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "bacilli_coarse.int8.onnx",
        "bacilli_coarse.onnx",
        "bacilli_dense.int8.onnx",
        "bacilli_dense.onnx",
        "bacilli_head.int8.onnx",
        "bacilli_head.onnx",
        "bacilli_trunk_coarse.int8.onnx",
        "bacilli_trunk_coarse.onnx",
        "bacilli_trunk_dense.onnx",
        "by_lab.json",
        "cascade.json",
        "domain.json",
        "fast_variants.json",
        "object_filter.onnx",
        "patch_cnn.keras",
        "quality.json",
        "scale.json",
    ]
    cascade = json.loads((folder / "cascade.json").read_text())  # fast mode's cascade: its rule and how it was chosen
    assert cascade["dense_model_id"] == default and "validation fields of every lab" in cascade["rule_choice"]
    scale = json.loads((folder / "scale.json").read_text())  # the pixel size it was trained at, and how it is known
    assert scale["model_id"] == default and scale["pixel_size_um"] > 0 and "estimated from" in scale["how"]
    assert scale["object_length_px"] > 0  # the reference a field's own scale is estimated against
    quality = json.loads((folder / "quality.json").read_text())  # the quality check's limits and how they were chosen
    assert quality["model_id"] == default and "validation fields of every lab" in quality["source"]
    assert "## Field quality" in card_text(folder)
    assert "## Scale" in card_text(folder) and f"{scale['pixel_size_um']:.4g} µm per pixel" in card_text(folder)
    int8 = json.loads((folder / "fast_variants.json").read_text())  # int8: calibrated on every lab, measured on each
    assert int8["quantisation"]["float_nodes"] == "Softmax, conv1" and "ufam-dds1" in int8["calibration"]
    assert {"znsm-ms2", "ufam-dds1 centres ×1"} <= set(int8["int8_on_test"]["detections"])
    for fast in ("bacilli_coarse.onnx", "bacilli_coarse.int8.onnx", "bacilli_dense.int8.onnx"):
        fast_meta = {p.key: p.value for p in onnx.load(str(folder / fast)).metadata_props}
        assert fast_meta["dense_model_id"] == default, fast
    meta = {p.key: p.value for p in onnx.load(str(folder / "bacilli_dense.onnx")).metadata_props}
    filter_meta = {p.key: p.value for p in onnx.load(str(folder / "object_filter.onnx")).metadata_props}
    assert meta["model_id"] == default
    assert filter_meta["dense_model_id"] == meta["model_id"] and filter_meta["filter_id"] in card_text(folder)
    assert len(filter_meta["created_from"]) == 40  # a clean commit, not +dirty
    by_lab = json.loads((folder / "by_lab.json").read_text())["row"]  # its own row on another lab, in its card
    assert (by_lab["model_id"], by_lab["filter_id"]) == (default, filter_meta["filter_id"])
    found = f"{by_lab['found_at_centre']} of {by_lab['positives']}"
    assert "## By lab" in card_text(folder) and found in card_text(folder)
    from service.engine.domain import DomainModel

    domain = DomainModel.load(folder / "domain.json")  # its training domain: spreads, limit, false-bacilli rates
    assert domain.model_id == default and domain.z_limit > 0 and domain.foreign_false and domain.in_domain_false
    card = (folder / "MODEL_CARD.md").read_text()
    assert meta["model_id"] in card and f"Recipe `{meta['recipe']}`" in card
    assert (meta["receptive_field"], meta["halo"], meta["classes"]) == ("45", "22", "background,bacillus")
    assert len(meta["created_from"]) >= 40
