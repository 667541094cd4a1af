"""Every setting of the service, from environment variables ``TBSEG_*`` (pydantic-settings), grouped by concern.

One class per concern (:class:`ServerSettings`, :class:`ModelSettings`, :class:`InferenceSettings`,
:class:`LimitSettings`, :class:`StorageSettings`, :class:`AccessSettings`); :class:`Settings` is all of them, so
each setting keeps its flat name (``settings.tile_px``) and its variable (``TBSEG_TILE_PX``). Built once in the
entry point (``python -m service``) or by ``create_app(settings)`` in tests, never at import. The engine receives
plain values (:meth:`Settings.segmenter_config`), not this object. Measured figures behind the defaults are in
``docs/results.md``, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.engine.defaults import BATCH_TILES, TILE_PX
from service.engine.fast import PRECISIONS, FastSettings
from service.engine.loading import SegmenterConfig
from service.engine.model_folder import ModelFolder
from service.engine.segmenter import Mode

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
LABS_DIR = REPO_ROOT / "labs"
REMOVED = {
    "TBSEG_MODEL_PATH": "a model is now a folder: set TBSEG_MODELS_DIR (a folder of model folders) and "
    "TBSEG_DEFAULT_MODEL (a model_id) instead",
}


def pairs(text: str, setting: str, form: str) -> list[tuple[str, str]]:
    """``a=b,a=b`` as (a, b) pairs.

    Raises:
        ValueError: an entry without both parts, naming the setting and its form.
    """
    found = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        left, sep, right = entry.strip().partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ValueError(f"{setting} must be '{form}' pairs separated by commas (an entry lacks one)")
        found.append((left.strip(), right.strip()))
    return found


CONFIG = SettingsConfigDict(env_prefix="TBSEG_", extra="ignore", frozen=True)


class ServerSettings(BaseSettings):
    """Where and how the HTTP server runs."""

    model_config = CONFIG

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    shutdown_grace_s: int = Field(
        120, ge=1, description="on SIGTERM, how long in-flight requests and the job in hand may take to finish"
    )
    cors_origins: str = Field(
        "", description="comma-separated origins allowed to call from a browser; empty = CORS off (no headers)"
    )
    log_level: str = Field("info", description="debug, info, warning or error")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log_level must be debug, info, warning or error, got {value!r}")
        return value.lower()


class ModelSettings(BaseSettings):
    """Which model folders and lab profiles are served, and on what."""

    model_config = CONFIG

    models_dir: Path = Field(
        MODELS_DIR,
        description="folder of model folders (each: bacilli_dense.onnx, object_filter.onnx, MODEL_CARD.md); every "
        "one is loaded at start",
    )
    default_model: str = Field(
        "",
        description="model_id used when a request names none; empty = the one named in <models_dir>/DEFAULT_MODEL, "
        "else the only model",
    )
    require_filter: bool = Field(
        False, description="refuse to start (or reload) a model folder without object_filter.onnx"
    )
    object_filter: str = Field(
        "auto",
        description="auto = each model uses the object_filter.onnx of its folder when present; none = keep every "
        "candidate (the paper's behaviour) for every model",
    )
    providers: str = Field(
        "CUDAExecutionProvider,CPUExecutionProvider",
        description="ONNX Runtime execution providers in order of preference (unavailable ones are skipped)",
    )
    intra_op_threads: int = Field(0, ge=0, description="threads per inference; 0 = all cores")
    labs_dir: Path = Field(
        LABS_DIR,
        description="folder of lab profiles (<lab_id>/profile.json, python -m training lab-profile); each is checked "
        "against the served models at start; a missing folder serves no lab",
    )

    @field_validator("object_filter")
    @classmethod
    def _auto_or_none(cls, value: str) -> str:
        if value.strip().lower() not in ("auto", "none"):
            raise ValueError(
                f"object_filter must be auto or none, got {value!r} (a model's filter is object_filter.onnx in its "
                "folder)"
            )
        return value.strip().lower()

    @property
    def provider_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.providers.split(",") if p.strip())


class InferenceSettings(BaseSettings):
    """How a field is inferred and cut into objects. The candidate threshold and minimum size default to what each
    model folder's object filter was trained with; a value set here overrides them (with a warning)."""

    model_config = CONFIG

    mode: Mode = Field(
        Mode.FAST,
        description="mode of a request that names none: exact (every pixel through the dense network) or fast (a "
        "coarse pass, the dense network only around what it sees; for models whose folder has the fast networks, "
        "others run exact)",
    )
    tile_px: int = Field(
        TILE_PX,
        ge=8,
        le=4096,
        description="exact mode: side of a tile's output area (the mosaic is exact at any size; memory grows with "
        "it); on CUDA at most 2047 (cuDNN's tensor limit; larger is reduced, with a warning)",
    )
    batch_tiles: int = Field(BATCH_TILES, ge=1, le=64, description="exact mode: tiles per ONNX Runtime call")
    fast_precision: str = Field(
        "fp32",
        description="fast mode's networks: fp32 (exact mode's mask wherever refined) or int8 (the folder's quantised "
        "copies; fp32 when a folder has none)",
    )
    fast_cascade: bool = Field(
        True,
        description="fast mode in fp32 on the CPU: read the network's last convolution only where a sparser look "
        "saw anything, with the model's cascade (cascade.json; about twice as fast on 2 cores, the same bacilli on "
        "every test field measured); false reads every grid point and every refined pixel",
    )
    fast_screening: Literal["int8", "fp32"] = Field(
        "int8",
        description="the cascade's coarse grid (which only decides where fp32 refinement runs): int8 reads it with "
        "the folder's int8 screening parts and screens at the threshold less the model's margin for int8's error "
        "(cascade.json; the mask stays fp32), fp32 reads it with the fp32 parts; int8 falls back to fp32 for a "
        "folder without them",
    )
    fast_screen_threshold: float = Field(
        FastSettings.screen_threshold,
        gt=0.0,
        lt=1.0,
        description="fast mode: a coarse P above which the tiles around it are refined",
    )
    fast_tile_px: int = Field(
        FastSettings.tile_px,
        ge=8,
        le=1024,
        description="fast mode: side of a refinement tile (smaller tiles refine fewer pixels around what the coarse "
        "pass sees; the same bacilli as 64 px on every test field of both labs, docs/results.md section 15)",
    )
    fast_batch_tiles: int = Field(
        FastSettings.batch_tiles, ge=1, le=256, description="fast mode: refinement tiles per ONNX Runtime call"
    )
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="P(bacillus) above which a pixel is bacillus; empty = what each model's object filter was "
        "trained with (0.5 without a filter)",
    )
    min_object_px: int | None = Field(
        None,
        ge=1,
        description="smaller connected components are not reported as bacilli; empty = the object filter's (20 "
        "without a filter)",
    )
    object_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="filter score a candidate needs to be kept; empty = the filter's own"
    )

    @field_validator("fast_precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value.strip().lower() not in PRECISIONS:
            raise ValueError(f"fast_precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
        return value.strip().lower()


class LimitSettings(BaseSettings):
    """Back-pressure and input limits: what is refused, and when."""

    model_config = CONFIG

    inference_workers: int = Field(1, ge=1, le=16, description="fields inferred at once")
    queue_size: int = Field(8, ge=0, le=1000, description="fields waiting beyond the workers; more get 503")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503 when the queue is full")
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest accepted request body")
    max_files_per_request: int = Field(64, ge=1, le=1000, description="most fields in one slide request")
    max_pixels: int = Field(40_000_000, ge=1, description="largest accepted image (width × height)")
    max_queued_jobs: int = Field(1000, ge=1, description="jobs waiting or running; more get 503")


class StorageSettings(BaseSettings):
    """Where slides and jobs are kept, and for how long."""

    model_config = CONFIG

    data_dir: Path = Field(
        REPO_ROOT / "var", description="where slides and jobs (SQLite, job files) are kept; created when missing"
    )
    job_retention_s: int = Field(7 * 24 * 3600, ge=60, description="finished jobs and their files are kept this long")


class AccessSettings(BaseSettings):
    """Who may call the API, and who a key names."""

    model_config = CONFIG

    api_key: SecretStr | None = Field(
        None, description="when set, every route but /healthz and /readyz needs 'Authorization: Bearer <key>'"
    )
    api_keys: SecretStr | None = Field(
        None,
        description="keys that name their users, 'name=key,name=key' (with or instead of api_key): a review made "
        "with such a key records who made it",
    )
    key_labs: str = Field(
        "",
        description="the default lab of users named by api_keys, 'user=lab_id,user=lab_id': their requests that name "
        "no lab= use it",
    )

    @property
    def key_users(self) -> dict[str, str | None]:
        """Every accepted API key and the user it names (None for :attr:`api_key`); empty = the service is open."""
        keys: dict[str, str | None] = {}
        if self.api_key is not None and self.api_key.get_secret_value():
            keys[self.api_key.get_secret_value()] = None
        if self.api_keys is not None:
            keys |= {key: user for user, key in pairs(self.api_keys.get_secret_value(), "api_keys", "name=key")}
        return keys

    @property
    def key_lab_map(self) -> dict[str, str]:
        """Each API-key user's default lab (:attr:`key_labs`)."""
        return dict(pairs(self.key_labs, "key_labs", "user=lab_id"))


class Settings(ServerSettings, ModelSettings, InferenceSettings, LimitSettings, StorageSettings, AccessSettings):
    """Service settings; each field is ``TBSEG_<NAME>`` in the environment (e.g. ``TBSEG_TILE_PX=384``)."""

    model_config = CONFIG

    @model_validator(mode="after")
    def _no_removed_settings(self) -> Settings:
        for name, instead in REMOVED.items():
            if name in os.environ:
                raise ValueError(f"{name} is no longer read: {instead}")
        self.key_users  # noqa: B018  (a malformed api_keys fails at start, not at the first request)
        self.key_lab_map  # noqa: B018
        return self

    def segmenter_config(self, folder: ModelFolder) -> SegmenterConfig:
        """What the engine needs to load the segmenter of a model folder, as plain values."""
        fast_paths, precision = folder.fast_networks(self.fast_precision)
        return SegmenterConfig(
            model_path=folder.dense,
            providers=self.provider_list,
            intra_op_threads=self.intra_op_threads,
            object_filter_path=folder.object_filter if self.object_filter == "auto" else None,
            tile_px=self.tile_px,
            batch_tiles=self.batch_tiles,
            threshold=self.threshold,
            min_object_px=self.min_object_px,
            object_threshold=self.object_threshold,
            fast_paths=fast_paths,
            fast_precision=precision,
            cascade_path=folder.cascade if self.fast_cascade else None,
            cascade_screening=self.fast_screening,
            fast_settings=FastSettings(
                screen_threshold=self.fast_screen_threshold,
                tile_px=self.fast_tile_px,
                batch_tiles=self.fast_batch_tiles,
            ),
            domain_path=folder.domain,
            scale_path=folder.scale,
            quality_path=folder.quality,
        )
