"""Shared fixtures: the real ZNSM-iDB fields (skipped visibly when ../shared is absent) and synthetic ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.paths import ZNSM_MS2
from training.synthetic import SyntheticField, synthetic_field


@pytest.fixture(scope="session")
def znsm_ms2() -> Path:
    """The shared real data set; skips the test, saying why, when it is not beside the checkout."""
    if not (ZNSM_MS2 / "images").is_dir():
        pytest.skip(
            f"real data not available: {ZNSM_MS2} is missing (tests on real fields need ../shared/data)"
        )
    return ZNSM_MS2


@pytest.fixture(scope="session")
def synthetic_fields() -> list[SyntheticField]:
    """Three small synthetic fields, one per background colour."""
    return [
        synthetic_field(seed, background=bg, field_id=str(seed))
        for seed, bg in ((1, "pink"), (2, "blue"), (3, "green"))
    ]
