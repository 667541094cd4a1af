"""Where the repository, the shipped model, the fixed splits and the shared data live, relative to this checkout."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ZNSM_MS2 = SHARED_DATA / "znsm-ms2"
UFAM_DDS1 = SHARED_DATA / "ufam-dds1"

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
ZNSM_MS2_SPLIT = SPLITS_DIR / "znsm-ms2.json"
UFAM_DDS1_SPLIT = SPLITS_DIR / "ufam-dds1.json"  # by slide

MODELS_DIR = REPO_ROOT / "models"
SHIPPED_MODEL = MODELS_DIR / "bacilli_dense.onnx"
SHIPPED_PATCH_MODEL = MODELS_DIR / "patch_cnn.keras"
SHIPPED_FILTER = MODELS_DIR / "object_filter.onnx"

DEFAULT_CACHE = REPO_ROOT / "runs" / "heatmap-cache"  # heatmaps of evaluated fields, per model id and image digest
