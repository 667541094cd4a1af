"""How a benchmark hands over its record: JSON on stdout, and the same in a file when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit_json(record: dict[str, Any], out: Path | None) -> None:
    """Print ``record`` as indented JSON; with ``out``, also write it there (its folder made)."""
    text = json.dumps(record, indent=1)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
