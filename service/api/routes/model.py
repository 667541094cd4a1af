"""The loaded model: its metadata and its card."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from service.api.schemas import ModelInfo
from service.api.state import ReadyDep

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", response_model=ModelInfo, summary="The loaded model: metadata, settings in use, model card")
def model_info(serving: ReadyDep) -> ModelInfo:
    segmenter = serving.segmenter
    meta = segmenter.model.meta
    return ModelInfo(
        model_id=meta.model_id,
        path=str(segmenter.model.path),
        providers=list(segmenter.model.providers),
        receptive_field_px=meta.receptive_field_px,
        halo_px=meta.halo_px,
        classes=list(meta.classes),
        tile_px=segmenter.tile_px,
        batch_tiles=segmenter.batch_tiles,
        threshold=segmenter.threshold,
        object_filter=segmenter.object_filter.meta.summary if segmenter.object_filter is not None else None,
        object_threshold=segmenter.object_threshold,
        input_normalisation=dataclasses.asdict(meta.normalisation) if meta.normalisation is not None else None,
        metadata=meta.raw,
        validation_metrics=meta.validation_metrics,
        card_markdown=serving.card,
    )
