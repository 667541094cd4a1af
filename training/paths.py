"""Where the repository, the shipped model, the fixed splits and the shared data live, relative to this checkout."""

from __future__ import annotations

from pathlib import Path

from service.engine.model_folder import DEFAULT_MARKER, DENSE_ONNX, OBJECT_FILTER_ONNX, PATCH_KERAS

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ZNSM_MS2 = SHARED_DATA / "znsm-ms2"
UFAM_DDS1 = SHARED_DATA / "ufam-dds1"
ZNSM_MS1 = SHARED_DATA / "znsm-ms1"  # the same database's other microscope (another camera and scale)

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
ZNSM_MS2_SPLIT = SPLITS_DIR / "znsm-ms2.json"
UFAM_DDS1_SPLIT = SPLITS_DIR / "ufam-dds1.json"  # by slide
ZNSM_MS1_SPLIT = SPLITS_DIR / "znsm-ms1.json"

MODELS_DIR = REPO_ROOT / "models"
LABS_DIR = REPO_ROOT / "labs"  # lab profiles: labs/<lab_id>/profile.json


def _default_folder(models: Path) -> Path:
    """The default model's folder: the one ``models/DEFAULT_MODEL`` names (service.engine.model_folder)."""
    marker = models / DEFAULT_MARKER
    return models / marker.read_text(encoding="utf-8").strip() if marker.is_file() else models


SHIPPED_DIR = _default_folder(MODELS_DIR)
SHIPPED_MODEL = SHIPPED_DIR / DENSE_ONNX
SHIPPED_PATCH_MODEL = SHIPPED_DIR / PATCH_KERAS
SHIPPED_FILTER = SHIPPED_DIR / OBJECT_FILTER_ONNX

DEFAULT_CACHE = REPO_ROOT / "runs" / "heatmap-cache"  # heatmaps of evaluated fields, per model id and image digest
