"""The models a service (or a batch) serves: every model folder of ``TBSEG_MODELS_DIR``, loaded and warmed.

:func:`load_registry` opens each folder (:mod:`service.engine.model_folder`: a broken one, or two with one
``model_id``, stops the start naming them), loads its segmenter with the service's settings and warms it up on one
tile. Requests name a model by id (``model=<id>``) or get the default one. :meth:`ModelRegistry.reload` loads the
folders added since: the new models join the set in one step, so requests in flight keep the segmenter they
started with and none is dropped. Models are never unloaded while serving; replacing one means adding a new folder
(a new ``model_id``).

Memory per model is the growth of the process's resident memory while it was loaded and warmed (Linux
``/proc/self/statm``; loads are serialised so the figures do not mix), reported by ``/metrics``.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from service.engine.loading import load_segmenter
from service.engine.model_folder import ModelFolder, default_model_id, scan_models
from service.engine.segmenter import Segmenter
from service.labs.registry import load_labs
from service.settings import Settings

log = logging.getLogger(__name__)


DEFAULT_MODEL_SETTING = "TBSEG_DEFAULT_MODEL"  # named in the errors about the default model


class UnknownModel(LookupError):
    """A model id that is not loaded; the message names the ids that are."""


def resident_bytes() -> int:
    """This process's resident memory in bytes (0 where ``/proc/self/statm`` does not exist)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class LoadedModel:
    """A served model.

    Attributes:
        folder: its folder (id, recipe, files).
        segmenter: its warm segmenter.
        card: its model card's Markdown ("" without one).
        warm_up_seconds: time of the warm-up inference.
        memory_bytes: resident memory the process grew by while loading and warming it.
    """

    folder: ModelFolder
    segmenter: Segmenter
    card: str
    warm_up_seconds: float
    memory_bytes: int

    @property
    def model_id(self) -> str:
        return self.folder.model_id


def load_model(folder: ModelFolder, settings: Settings) -> LoadedModel:
    """Load one model folder with the service's settings and warm it in the mode its requests run by default
    (TBSEG_MODE where the model can run it, else exact).

    Raises:
        ModelContractError: a file that does not load or does not fit the contract.
    """
    before = resident_bytes()
    segmenter = load_segmenter(settings.segmenter_config(folder))
    warm_up = segmenter.warm_up(segmenter.resolve_mode(None, settings.mode))
    grown = max(resident_bytes() - before, 0)
    log.info("model %s ready (%s): warm-up %.2f s, +%.0f MB", folder.model_id, folder.path, warm_up, grown / 2**20)
    return LoadedModel(folder, segmenter, folder.card(), warm_up, grown)


class ModelRegistry:
    """The loaded models by id, and the default one; safe to read from any thread while a reload adds models."""

    def __init__(self, settings: Settings, models: list[LoadedModel], default_id: str) -> None:
        self.settings = settings
        self.default_id = default_id
        self._models = {m.model_id: m for m in models}
        self._reload_lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    def all(self) -> list[LoadedModel]:
        return list(self._models.values())

    @property
    def default(self) -> LoadedModel:
        return self._models[self.default_id]

    def get(self, model_id: str | None = None) -> LoadedModel:
        """The model with this id, or the default one for None or "".

        Raises:
            UnknownModel: no such model is loaded (the message lists the loaded ones).
        """
        if not model_id:
            return self.default
        found = self._models.get(model_id)
        if found is None:
            raise UnknownModel(f"no model {model_id!r}; the models loaded are: {', '.join(self._models)}")
        return found

    def reload(self) -> list[str]:
        """Load the model folders added to the models directory since; returns their ids.

        Raises:
            ModelContractError: a new folder is broken, or holds an id already served by another folder; nothing
                is added then.
        """
        with self._reload_lock:
            known = {m.folder.path.resolve(): m.folder for m in self._models.values()}
            folders = scan_models(self.settings.models_dir, self.settings.require_filter, known)
            new = [f for f in folders if f.path.resolve() not in known]
            loaded = [load_model(f, self.settings) for f in new]
            self._models = {**self._models, **{m.model_id: m for m in loaded}}  # one step: readers see old or new
        if loaded:
            log.info("reload: %d model(s) added: %s", len(loaded), ", ".join(m.model_id for m in loaded))
        return [m.model_id for m in loaded]


def load_registry(settings: Settings) -> ModelRegistry:
    """Open, load and warm every model folder of ``settings.models_dir``.

    Raises:
        ModelContractError: no model, a broken folder, two folders with one id, or a default that is not there.
    """
    folders = scan_models(settings.models_dir, settings.require_filter)
    default_id = default_model_id(settings.models_dir, folders, settings.default_model, DEFAULT_MODEL_SETTING)
    return ModelRegistry(settings, [load_model(f, settings) for f in folders], default_id)


def check_models(settings: Settings) -> tuple[list[ModelFolder], str]:
    """Open every model folder on the CPU, choose the default and check the lab profiles against them, without
    keeping them: the pre-flight check before a server starts (one line naming the first broken file).

    Raises:
        ModelContractError: as :func:`load_registry`.
    """
    folders = scan_models(settings.models_dir, settings.require_filter)
    default = default_model_id(settings.models_dir, folders, settings.default_model, DEFAULT_MODEL_SETTING)
    load_labs(settings.labs_dir, [f.model_id for f in folders], settings.key_lab_map)
    return folders, default
