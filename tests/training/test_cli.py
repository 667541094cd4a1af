"""``python -m training`` end to end on a generated data set, and its errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from training.cli import main
from training.data.sampling import PatchSet
from training.data.split import DatasetSplit


def test_synth_split_masks_patches(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    assert main(["synth", "-o", str(data), "--count", "8", "--size", "160", "120"]) == 0
    split_file = tmp_path / "split.json"
    assert main(["split", "--data", str(data), "-o", str(split_file)]) == 0
    split = DatasetSplit.load(split_file)
    assert len(split.all_ids) == 8

    assert main(["masks", "--data", str(data), "-o", str(out / "masks"), "--fields", "1,2"]) == 0
    for fid in ("1", "2"):
        mask = np.asarray(Image.open(out / "masks" / f"{fid}_mask.png"))
        assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255} and mask.any()
        assert Image.open(out / "masks" / f"{fid}_overlay.png").size == (160, 120)
        assert (out / "masks" / f"{fid}_boxes.png").is_file()
    with (out / "masks" / "masks_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["field"] for r in rows] == ["1", "2"]

    args = ["patches", "--data", str(data), "--split", str(split_file), "-o", str(out / "p")]
    assert main([*args, "--positives", "20", "--negatives", "30"]) == 0
    train = PatchSet.load(out / "p" / "train.npz")
    assert len(train) == 50 * len(split.train)
    assert set(train.field_ids) == set(split.train)
    validation = PatchSet.load(out / "p" / "validation.npz")
    assert set(validation.field_ids) == set(split.validation)
    summary = json.loads((out / "p" / "patches.json").read_text())
    assert summary["train"]["bacillus"] == 20 * len(split.train)


def test_split_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    main(["synth", "-o", str(data), "--count", "3"])
    (tmp_path / "s.json").write_text("{}")
    assert main(["split", "--data", str(data), "-o", str(tmp_path / "s.json")]) == 2


def test_bad_data_gives_a_message_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    main(["synth", "-o", str(data), "--count", "2"])
    (data / "annotations" / "2_annot.csv").write_text("Label,x\nTB,1\n")
    result = subprocess.run(
        [sys.executable, "-m", "training", "masks", "--data", str(data), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "2_annot.csv" in result.stderr and "missing column" in result.stderr
    assert "Traceback" not in result.stderr


HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "sklearn", "skl2onnx", "matplotlib")


def test_help_loads_neither_tensorflow_nor_onnx_runtime() -> None:
    """`python -m training --help` and every command's --help answer at once: the heavy libraries load only in the
    commands that run them."""
    commands = [
        "masks",
        "split",
        "patches",
        "synth",
        "train",
        "calibrate",
        "export",
        "evaluate",
        "objects",
        "labs",
        "ship",
        "finetune",
    ]
    code = (
        "import sys\n"
        "from training.cli import build_parser\n"
        f"for args in [['--help']] + [[c, '--help'] for c in {commands!r}]:\n"
        "    try:\n"
        "        build_parser().parse_args(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip().endswith("loaded: []"), result.stdout[-500:]
    assert "objects" in result.stdout and "evaluate" in result.stdout  # the help texts were printed
