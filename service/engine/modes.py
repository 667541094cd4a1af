"""The modes a field can be inferred in, and the one rule choosing a request's mode.

Light on purpose (no ONNX Runtime): model folders, settings and the command lines name modes without loading a
network. Each mode's pass is in :mod:`service.engine.passes`.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

from service.engine.errors import ModeUnavailable


class Mode(StrEnum):
    """How a field was inferred. ``exact``: every pixel through the dense network, equal to patch-by-patch
    scanning. ``fast``: a coarse pass, then the dense network only on the tiles around what it saw
    (:mod:`service.engine.fast`); the heatmap elsewhere is approximate."""

    EXACT = "exact"
    FAST = "fast"


def resolve_mode(model_id: str, available: Collection[Mode], asked: Mode | None, default: Mode) -> Mode:
    """The mode a field of model ``model_id`` runs in: the one ``asked`` for, else ``default`` when the model can
    run it (``available``), else exact. The service, the batch commands and the warm-up all choose here.

    Raises:
        ModeUnavailable: ``asked`` is a mode the model cannot run.
    """
    if asked is None:
        return default if default in available else Mode.EXACT
    if asked not in available:
        raise unavailable(model_id, Mode(asked))
    return Mode(asked)


def unavailable(model_id: str, mode: Mode) -> ModeUnavailable:
    """The error for a mode this model's folder cannot run."""
    return ModeUnavailable(
        f"model {model_id} has no fast networks, so it cannot run mode={mode.value} (its folder has no fast-mode "
        "networks: python -m training fast writes them); send mode=exact"
    )
