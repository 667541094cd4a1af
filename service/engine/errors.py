"""Errors the engine raises; each names the offending value. Only the HTTP layer maps them to statuses."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ModelContractError(EngineError):
    """The model file is missing, unreadable, or its metadata does not describe what the engine needs."""


class InferenceFailed(EngineError):
    """ONNX Runtime failed while running a model on a batch (a provider's limit, memory, a driver error)."""


class InvalidImage(EngineError):
    """An image array the engine cannot work on (wrong dtype, rank or channel count)."""


class ModeUnavailable(EngineError):
    """A mode was asked for that this model cannot run (fast mode without the folder's fast networks)."""
