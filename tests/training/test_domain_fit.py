"""``python -m training domain``: the limit chosen on validation distances, and the whole command on the real
fields of both labs (skipped, saying why, without ../shared/data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from service.engine.domain import DomainModel
from training.evaluation.domain_fit import build_domain, choose_limit
from training.paths import SHIPPED_DIR, UFAM_DDS1_SPLIT, ZNSM_MS2_SPLIT


def test_the_limit_lies_between_the_two_sides_or_keeps_every_in_domain_field() -> None:
    limit, rule = choose_limit([1.0, 4.0], [9.0, 20.0])
    assert limit == 6.0 and "geometric mean" in rule
    overlapping, rule = choose_limit([1.0, 8.0], [5.0, 20.0])
    assert overlapping == 8.0 and "overlap" in rule


def test_the_domain_command_on_both_labs(znsm_ms2: Path, ufam_dds1: Path, tmp_path: Path) -> None:
    folder = tmp_path / SHIPPED_DIR.name
    folder.mkdir()
    for name in ("bacilli_dense.onnx", "object_filter.onnx", "bacilli_coarse.onnx"):
        shutil.copy(SHIPPED_DIR / name, folder / name)
    report = build_domain(folder, znsm_ms2, ZNSM_MS2_SPLIT, ufam_dds1, UFAM_DDS1_SPLIT, tmp_path / "out")
    shares = report["in_domain_share"]
    assert shares["znsm-ms2 test"] == 1.0 and shares["ufam-dds1 test"] == 0.0, shares
    written = DomainModel.load(folder / "domain.json")
    assert written == DomainModel.load(SHIPPED_DIR / "domain.json")  # the shipped file is what the command writes
    assert "validation" in written.z_limit_rule and written.foreign_false is not None
    assert "S04" not in written.foreign_false.source and "S08" not in written.foreign_false.source  # no test slide
    assert json.loads((tmp_path / "out" / "domain_report.json").read_text())["model_id"] == written.model_id
    assert (tmp_path / "out" / "domain.png").stat().st_size > 1000
