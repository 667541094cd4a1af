"""A model folder's "By lab" card section: how the model and its own filter did on another lab's slides.

``python -m training labs --pair NAME=MODEL:FILTER --card FOLDER`` scores the pairs (:mod:`training.evaluation.labs`)
and, for the row that is the folder's own dense model with its own object filter, writes ``by_lab.json`` into the
folder and a ``## By lab`` section into its ``MODEL_CARD.md`` (replacing an older one). The card's "Known limits"
line about other microscopes is rewritten from the same figures (:func:`limit_phrase`), so a card never says
"untested" about a lab it was measured on. ``python -m training ship`` writes the section again after it rewrites a
card (:func:`restore_by_lab_section`), as it does for the fast-mode section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx

from service.engine.model_folder import CARD_MD, DENSE_ONNX, OBJECT_FILTER_ONNX
from training.evaluation.labs import LabReport, lab_table
from training.model.card_sections import replace_section

BY_LAB_JSON = "by_lab.json"
SECTION = "## By lab"
UNTESTED = "other stains, cameras and magnifications are untested"
# the limits line's words about other microscopes, measured (limit_phrase) or not: what a new record replaces
_LIMIT = re.compile(r"(?:on another lab's microscope \(.*?; see By lab\); )?" + re.escape(UNTESTED))


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _ids(model: Path, object_filter: Path | None) -> tuple[str, str | None]:
    """The model id of a dense ONNX file, and the filter id of an object filter (None without one)."""
    model_id = _metadata(model).get("model_id", "")
    return model_id, _metadata(object_filter).get("filter_id") if object_filter is not None else None


def folder_ids(folder: Path) -> tuple[str, str | None]:
    """``folder``'s own dense model id and object filter id (None when it has no filter).

    Raises:
        FileNotFoundError: not a model folder (no dense model in it).
    """
    if not (folder / DENSE_ONNX).is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no {DENSE_ONNX})")
    filter_path = folder / OBJECT_FILTER_ONNX
    return _ids(folder / DENSE_ONNX, filter_path if filter_path.is_file() else None)


def check_pairs(folder: Path, pairs: list[tuple[Path, Path | None]]) -> None:
    """Before any scoring: one of ``pairs`` (dense model, filter) must be ``folder``'s own.

    Raises:
        FileNotFoundError: ``folder`` is not a model folder.
        ValueError: no pair is its own model with its own filter (the message says which to pass).
    """
    wanted = folder_ids(folder)
    if not any(_ids(model, filt) == wanted for model, filt in pairs):
        filter_path = folder / OBJECT_FILTER_ONNX
        own = f"{folder / DENSE_ONNX}" + (f":{filter_path}" if wanted[1] is not None else "")
        raise ValueError(
            f"{folder}: no --pair is its own model {wanted[0]} with its own filter {wanted[1] or '(none)'}; "
            f"pass --pair NAME={own}"
        )


def own_row(folder: Path, rows: list[LabReport]) -> LabReport:
    """The row scored with ``folder``'s own dense model and its own object filter.

    Raises:
        ValueError: no row is that pair.
    """
    model_id, filter_id = folder_ids(folder)
    for row in rows:
        if row["model_id"] == model_id and row["filter_id"] == filter_id:
            return row
    raise ValueError(f"{folder}: no row scored its own model {model_id} with its own filter {filter_id or '(none)'}")


def limit_phrase(row: LabReport | None) -> str:
    """The "Known limits" words about other microscopes: measured figures when there are some."""
    if row is None:
        return UNTESTED
    s = row["negative_slide"]
    return (
        f"on another lab's microscope ({row['lab']}, slides {' '.join(row['slides'])}) it keeps a bacillus at "
        f"{100 * row['recall_at_centre']:.1f}% of the experts' points and {row['false_bacilli_per_field']:.2f} false "
        f"bacilli per negative field (a negative slide: {s['grade_expected']}; see By lab); other stains, cameras "
        "and magnifications are untested"
    )


def _section(record: dict[str, Any]) -> str:
    row: LabReport = record["row"]
    s = row["negative_slide"]
    worse = sum(v for k, v in s["probability"].items() if k in ("1+", "2+", "3+"))
    lines = [
        SECTION,
        "",
        f"Written by `python -m training labs --card` on {row['lab']} (slides {', '.join(row['slides'])}; split "
        f"`{record['split']}`, by slide), through the service's engine with this folder's model and object filter "
        f"(threshold {row['object_threshold']}). A positive patch is found when a kept bacillus lies within 3 px of "
        "the expert's point at its centre; every kept object on a negative field is a false bacillus; a negative "
        "slide is 100 such fields, its false bacilli a Poisson count with the observed mean, graded on the WHO/IUATLD "
        "table.",
        "",
        *lab_table([row]),
        "",
        f"- Experts' points found: {row['found_at_centre']} of {row['positives']}.",
        f"- False bacilli on each negative field: {', '.join(str(n) for n in row['false_bacilli'])}.",
        f"- A negative slide of this lab would be graded **{s['grade_expected']}** (95% range {s['grade_range'][0]} "
        f"… {s['grade_range'][1]}; {s['poisson_95'][0]}–{s['poisson_95'][1]} false bacilli in 100 fields); graded "
        f"1+ or worse with probability {100 * worse:.1f}%.",
        "",
        "The project's targets on another lab's slides are at least 90% of the points and at most 0.05 false "
        "bacilli per negative field. The multi-lab recipes, and why no model meets those targets on the data "
        "available, are in `docs/results.md`, section 8. For a lab's own microscope, see section 9 there: a model "
        "fine-tuned on that lab's annotated fields.",
    ]
    return "\n".join(lines)


def _write_section(folder: Path, record: dict[str, Any]) -> None:
    card = folder / CARD_MD
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        card.write_text(_LIMIT.sub(lambda _: limit_phrase(record["row"]), text, count=1), encoding="utf-8")
    replace_section(card, SECTION, _section(record))


def write_by_lab(folder: Path, rows: list[LabReport], split: Path) -> LabReport:
    """Record ``folder``'s own row (:func:`own_row`) in ``by_lab.json`` and in its card; returns the row."""
    row = own_row(folder, rows)
    record = {"row": row, "split": split.name}
    (folder / BY_LAB_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _write_section(folder, record)
    return row


def read_by_lab(folder: Path) -> LabReport | None:
    """The folder's recorded row, or None when it was never scored on another lab."""
    path = folder / BY_LAB_JSON
    if not path.is_file():
        return None
    row: LabReport = json.loads(path.read_text(encoding="utf-8"))["row"]
    return row


def restore_by_lab_section(folder: Path) -> bool:
    """Write the card's By lab section again from ``by_lab.json``; False when there is none."""
    path = folder / BY_LAB_JSON
    if not path.is_file():
        return False
    _write_section(folder, json.loads(path.read_text(encoding="utf-8")))
    return True
