"""Sections that commands other than ``ship`` keep in a model folder's ``MODEL_CARD.md`` (fast mode, by lab)."""

from __future__ import annotations

from pathlib import Path


def replace_section(card: Path, heading: str, section: str) -> None:
    """Put ``section`` (which starts with the line ``heading``) into ``card``: in place of the section under that
    heading, up to the next heading of its level, or at the end when there is none."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    head, found, tail = text.partition(heading + "\n")
    if found:
        rest = tail.split("\n## ", 1)
        text = head.rstrip() + "\n\n" + section.rstrip() + ("\n\n## " + rest[1] if len(rest) == 2 else "\n")
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    card.write_text(text.lstrip(), encoding="utf-8")
