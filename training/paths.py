"""Where the repository and the shared data live, relative to this checkout."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ZNSM_MS2 = SHARED_DATA / "znsm-ms2"
