"""The served models: ``GET /v1/models`` (all), ``GET /v1/models/{id}`` and ``GET /v1/model`` (one, in full),
``POST /v1/models/reload`` (load the model folders added since)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path, Query

from service.api.problems import Conflict
from service.api.schemas import FastVariant, ModelInfo, ModelList, ModelSummary, Override, ReloadResult
from service.api.state import ReadyDep, Serving
from service.engine.cascade import Cascade
from service.engine.errors import ModelContractError
from service.model_registry import LoadedModel

router = APIRouter(prefix="/v1", tags=["models"])

ModelIdPath = Annotated[str, Path(min_length=1, max_length=200, description="a model_id from GET /v1/models")]


def card_summary(card: str) -> str:
    """The card's first paragraph of prose (its opening description)."""
    paragraph: list[str] = []
    for line in card.splitlines():
        text = line.strip()
        if not text or text.startswith(("#", "|", "```")):
            if paragraph:
                break
            continue
        paragraph.append(text)
    return " ".join(paragraph)


def fast_variant(loaded: LoadedModel) -> FastVariant | None:
    segmenter = loaded.segmenter
    fast = segmenter.fast
    if fast is None:
        return None
    return FastVariant(
        precision=fast.precision,
        coarse=fast.coarse.path.name,
        refine=fast.refine.path.name,
        stride_px=fast.geometry.stride,
        phase_px=list(fast.geometry.phase),
        screen_threshold=segmenter.fast_settings.screen_threshold,
        tile_px=segmenter.fast_settings.tile_px,
        cascade=(
            _cascade(fast.cascade, segmenter.fast_settings.screen_threshold) if fast.cascade is not None else None
        ),
    )


def _cascade(cascade: Cascade, screen_threshold: float) -> dict[str, object]:
    """The cascade's rule, and how its coarse grid is read (fp32, or int8 screening at the threshold less the
    model's margin)."""
    screening = cascade.screening
    read: dict[str, object] = {"precision": "fp32"}
    if screening is not None:
        read = {
            "precision": "int8",
            "margin": screening.margin,
            "screens_at": round(screen_threshold - screening.margin, 6),
            "first_threshold": screening.first_threshold,
            "lattice_threshold": screening.refine_threshold,
            "fp32_band_logit": screening.band_logit,
        }
    return {**dataclasses.asdict(cascade.rule), "screening": read}


def summary(loaded: LoadedModel, serving: Serving) -> ModelSummary:
    segmenter = loaded.segmenter
    raw = segmenter.model.meta.raw
    return ModelSummary(
        model_id=loaded.model_id,
        default=loaded.model_id == serving.models.default_id,
        recipe=raw.get("recipe", ""),
        training_data=raw.get("training_data", ""),
        filter_id=segmenter.object_filter.meta.filter_id if segmenter.object_filter is not None else None,
        card_summary=card_summary(loaded.card),
        folder=str(loaded.folder.path),
        memory_bytes=loaded.memory_bytes,
        modes=[m.value for m in segmenter.modes],
        fast=fast_variant(loaded),
        url=f"/v1/models/{loaded.model_id}",
    )


def info(loaded: LoadedModel, serving: Serving) -> ModelInfo:
    segmenter = loaded.segmenter
    meta = segmenter.model.meta
    return ModelInfo(
        **summary(loaded, serving).model_dump(),
        path=str(segmenter.model.path),
        providers=list(segmenter.model.providers),
        receptive_field_px=meta.receptive_field_px,
        halo_px=meta.halo_px,
        classes=list(meta.classes),
        tile_px=segmenter.tile_px,
        batch_tiles=segmenter.batch_tiles,
        threshold=segmenter.threshold,
        min_object_px=segmenter.min_object_px,
        overrides=[Override(name=o.name, trained=o.trained, used=o.used) for o in segmenter.overrides],
        object_filter=segmenter.object_filter.meta.summary if segmenter.object_filter is not None else None,
        object_threshold=segmenter.object_threshold,
        input_normalisation=dataclasses.asdict(meta.normalisation) if meta.normalisation is not None else None,
        metadata=meta.raw,
        validation_metrics=meta.validation_metrics,
        warm_up_seconds=round(loaded.warm_up_seconds, 3),
        card_markdown=loaded.card,
    )


@router.get("/models", response_model=ModelList, summary="The models served: id, recipe, training data, card summary")
def list_models(serving: ReadyDep) -> ModelList:
    return ModelList(
        default_model=serving.models.default_id, models=[summary(m, serving) for m in serving.models.all()]
    )


@router.get(
    "/models/{model_id}",
    response_model=ModelInfo,
    summary="One model in full: metadata, settings in use, object filter, model card",
    responses={404: {"description": "no such model (the problem lists the loaded ones)"}},
)
def get_model(serving: ReadyDep, model_id: ModelIdPath) -> ModelInfo:
    return info(serving.model(model_id), serving)


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The default model (or ?model=<id>) in full",
    responses={404: {"description": "no such model"}},
)
def model_info(
    serving: ReadyDep,
    model: Annotated[str | None, Query(max_length=200, description="a model_id; default: the default model")] = None,
) -> ModelInfo:
    return info(serving.model(model), serving)


@router.post(
    "/models/reload",
    response_model=ReloadResult,
    summary="Load the model folders added to the models directory since the start (or the last reload)",
    responses={409: {"description": "a new folder is broken or repeats a served model_id; nothing was added"}},
)
async def reload_models(serving: ReadyDep) -> ReloadResult:
    """Requests in flight keep the model they started with; the new models are served as soon as this answers.
    A folder already served is not read again: to replace a model, add it as a new folder (a new model_id)."""
    try:
        added = await anyio.to_thread.run_sync(serving.models.reload)
    except ModelContractError as exc:
        raise Conflict(f"reload refused, nothing added: {exc}", slug="bad-model-folder") from exc
    return ReloadResult(added=added, models=serving.models.ids, default_model=serving.models.default_id)
