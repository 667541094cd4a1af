"""``python -m training simulate-slides`` on the real fields of both labs (skipped, saying why, without
../shared/data): another lab's negative slides are never decided positive, with or without its profile."""

from __future__ import annotations

from pathlib import Path

from training.evaluation.slide_simulation import simulate, write_report
from training.paths import LABS_DIR, SHIPPED_DIR, UFAM_DDS1_SPLIT, ZNSM_MS2_SPLIT


def test_simulated_slides_by_the_services_rules(znsm_ms2: Path, ufam_dds1: Path, tmp_path: Path) -> None:
    lab = LABS_DIR / "ufam-dds1" / "profile.json"
    record = simulate(
        SHIPPED_DIR,
        ufam_dds1,
        UFAM_DDS1_SPLIT,
        "test",
        znsm_ms2,
        ZNSM_MS2_SPLIT,
        lab,
        slides=10,
        bacilli=60,
        own_fields=3,
    )
    assert record["negative_fields"] == 8 and record["annotated_bacilli"] == 60
    assert set(record["by_profile"]) == {"no lab profile", "lab profile ufam-dds1 v3"}
    for figures in record["by_profile"].values():
        assert figures["negative_slides"]["positive"] == 0.0  # never a negative slide signed positive
        assert set(figures["positive_slides"]) == {"1 bacilli", "5 bacilli", "20 bacilli"}
    assert record["own_lab"]["in_domain"] == 3 and record["own_lab"]["as_one_slide"] == "positive"
    write_report(record, tmp_path)
    assert (tmp_path / "slides.json").is_file() and "own lab" in (tmp_path / "slides.md").read_text()
