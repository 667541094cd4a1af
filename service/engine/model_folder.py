"""Model folders: one model, self-described, per folder; a models directory holds any number of them.

A model folder (``models/<model_id>/``, written by ``python -m training ship`` or ``finetune``) holds:

* ``bacilli_dense.onnx``: the dense network; its ONNX metadata carries the ``model_id`` (:mod:`service.engine.model`);
* ``object_filter.onnx``: its object filter (optional: without it every candidate is kept);
* ``MODEL_CARD.md``: its card (optional);
* ``patch_cnn.keras``: the patch CNN it was made from (training only: fine-tuning starts from it);
* ``bacilli_coarse.onnx``, ``bacilli_dense.int8.onnx``, ``bacilli_coarse.int8.onnx``: fast mode's networks
  (optional, written by ``python -m training fast``; :mod:`service.engine.fast`).

The id of a model is its ``model_id`` metadata, not the folder's name. A models directory is scanned one level
deep: every sub-folder holding ``bacilli_dense.onnx`` is a model; others (e.g. training runs) are skipped. The
directory may name its default model in a ``DEFAULT_MODEL`` text file; with one model, that one is the default.
Training writes folders and the service reads them through this one module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.engine.errors import ModelContractError
from service.engine.modes import Mode

if TYPE_CHECKING:  # loaded where a folder is opened: the layout's names cost no ONNX Runtime import
    from service.engine.model import OnnxModel
    from service.engine.object_filter import ObjectFilter

log = logging.getLogger(__name__)

DENSE_ONNX = "bacilli_dense.onnx"
OBJECT_FILTER_ONNX = "object_filter.onnx"
CARD_MD = "MODEL_CARD.md"
PATCH_KERAS = "patch_cnn.keras"
DOMAIN_JSON = "domain.json"
QUALITY_JSON = "quality.json"  # as service.engine.quality.QUALITY_JSON
SCALE_JSON = "scale.json"  # as service.engine.scale.SCALE_JSON
DEFAULT_MARKER = "DEFAULT_MODEL"
COARSE_ONNX = "bacilli_coarse.onnx"
DENSE_INT8_ONNX = "bacilli_dense.int8.onnx"
COARSE_INT8_ONNX = "bacilli_coarse.int8.onnx"
CASCADE_JSON = "cascade.json"  # as service.engine.cascade.CASCADE_JSON


@dataclass(frozen=True)
class ModelFolder:
    """A model folder whose dense network has been opened once (on the CPU) and whose filter, when present, was
    checked to belong to it.

    Attributes:
        path: the folder.
        model_id: the dense network's ``model_id``.
        recipe: the training recipe its metadata names (empty when it names none).
        filter_id: the object filter's id, or None when the folder has none.
    """

    path: Path
    model_id: str
    recipe: str
    filter_id: str | None

    @property
    def dense(self) -> Path:
        return self.path / DENSE_ONNX

    @property
    def object_filter(self) -> Path | None:
        path = self.path / OBJECT_FILTER_ONNX
        return path if path.is_file() else None

    @property
    def scale(self) -> Path | None:
        """The pixel size of its training fields (``python -m training pixel-size`` writes it), when declared."""
        path = self.path / SCALE_JSON
        return path if path.is_file() else None

    @property
    def domain(self) -> Path | None:
        """Its training domain's description (``python -m training domain`` writes it), when it has one."""
        path = self.path / DOMAIN_JSON
        return path if path.is_file() else None

    @property
    def quality(self) -> Path | None:
        """The limits of its field quality check (``python -m training quality`` writes them), when it has them."""
        path = self.path / QUALITY_JSON
        return path if path.is_file() else None

    @property
    def cascade(self) -> Path | None:
        """Fast mode's cascade (``python -m training cascade`` writes it), when the folder has one."""
        path = self.path / CASCADE_JSON
        return path if path.is_file() else None

    @property
    def patch_model(self) -> Path:
        return self.path / PATCH_KERAS

    def fast_files(self, precision: str) -> tuple[Path, Path] | None:
        """Fast mode's (coarse, refinement) networks of ``precision`` (``fp32`` or ``int8``), or None when the
        folder lacks one of them."""
        if precision == "int8":
            coarse, dense = self.path / COARSE_INT8_ONNX, self.path / DENSE_INT8_ONNX
        else:
            coarse, dense = self.path / COARSE_ONNX, self.dense
        return (coarse, dense) if coarse.is_file() and dense.is_file() else None

    def fast_networks(self, precision: str) -> tuple[tuple[Path, Path] | None, str]:
        """Fast mode's (coarse, refinement) networks to load for ``precision``, and the precision they have: a
        folder without int8 copies falls back to its fp32 ones; ``(None, …)`` when it has no coarse network."""
        paths = self.fast_files(precision)
        if paths is None and precision != "fp32":
            return self.fast_files("fp32"), "fp32"
        return paths, precision

    def modes(self, precision: str = "fp32") -> tuple[Mode, ...]:
        """The modes a segmenter of this folder runs, its fast networks loaded at ``precision``."""
        return (Mode.EXACT, Mode.FAST) if self.fast_networks(precision)[0] is not None else (Mode.EXACT,)

    def card(self) -> str:
        """The model card's Markdown, or an empty string without one."""
        path = self.path / CARD_MD
        return path.read_text(encoding="utf-8") if path.is_file() else ""


def check_pair(model: OnnxModel, object_filter: ObjectFilter) -> None:
    """Refuse an object filter trained on another dense model's candidates (its scores would not transfer).

    Raises:
        ModelContractError: naming both ids and what to do.
    """
    if object_filter.meta.dense_model_id != model.meta.model_id:
        raise ModelContractError(
            f"{object_filter.path}: trained on the candidates of {object_filter.meta.dense_model_id}, not of "
            f"{model.meta.model_id}; retrain it (python -m training objects) or serve the model without its filter"
        )


def open_folder(path: Path, require_filter: bool = False) -> ModelFolder:
    """Open a model folder's files once on the CPU and check them.

    Raises:
        ModelContractError: no dense network, a file that does not load, a filter of another model, or (with
            ``require_filter``) no filter; the message names the file.
    """
    from service.engine.model import OnnxModel
    from service.engine.object_filter import ObjectFilter

    path = Path(path)
    if not (path / DENSE_ONNX).is_file():
        raise ModelContractError(f"{path}: not a model folder (no {DENSE_ONNX})")
    model = OnnxModel(path / DENSE_ONNX, providers=("CPUExecutionProvider",))
    filter_id = None
    if (path / OBJECT_FILTER_ONNX).is_file():
        object_filter = ObjectFilter(path / OBJECT_FILTER_ONNX)
        check_pair(model, object_filter)
        filter_id = object_filter.meta.filter_id
    elif require_filter:
        raise ModelContractError(f"{path}: no {OBJECT_FILTER_ONNX}, and filters are required")
    return ModelFolder(path, model.meta.model_id, model.meta.raw.get("recipe", ""), filter_id)


def model_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold a dense network, sorted by name."""
    if not root.is_dir():
        raise ModelContractError(f"{root}: models directory not found")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / DENSE_ONNX).is_file())


def scan_models(
    root: Path, require_filter: bool = False, known: dict[Path, ModelFolder] | None = None
) -> list[ModelFolder]:
    """Open every model folder of ``root`` (those in ``known``, by resolved path, are not opened again).

    Raises:
        ModelContractError: no model folder, a broken folder (named), or two folders with one ``model_id``
            (both named).
    """
    known = known or {}
    folders = []
    for path in model_folders(root):
        folder = known.get(path.resolve())
        if folder is None:
            folder = open_folder(path, require_filter)
            if folder.filter_id is None:
                log.warning("%s: no %s; every candidate of this model is kept", path, OBJECT_FILTER_ONNX)
        folders.append(folder)
    if not folders:
        raise ModelContractError(f"{root}: no model folder (a sub-folder holding {DENSE_ONNX})")
    seen: dict[str, ModelFolder] = {}
    for folder in folders:
        if folder.model_id in seen:
            raise ModelContractError(
                f"{seen[folder.model_id].path} and {folder.path} hold the same model_id {folder.model_id}: "
                "keep one of them"
            )
        seen[folder.model_id] = folder
    return folders


def default_model_id(
    root: Path, folders: list[ModelFolder], configured: str = "", setting: str = "the configured default"
) -> str:
    """The default model's id: ``configured`` when given, else the id in ``root/DEFAULT_MODEL``, else the only
    model. ``setting`` names where ``configured`` came from, in the errors (the service: its variable).

    Raises:
        ModelContractError: the id chosen is not among ``folders``, or several models and nothing names one.
    """
    ids = [f.model_id for f in folders]
    marker = root / DEFAULT_MARKER
    chosen = configured.strip()
    source = setting
    if not chosen and marker.is_file():
        chosen, source = marker.read_text(encoding="utf-8").strip(), str(marker)
    if not chosen:
        if len(ids) == 1:
            return ids[0]
        raise ModelContractError(
            f"{root} holds {len(ids)} models ({', '.join(ids)}): name the default in {setting} or in {marker}"
        )
    if chosen not in ids:
        raise ModelContractError(f"{source} names {chosen!r}, which is not in {root} (models: {', '.join(ids)})")
    return chosen
