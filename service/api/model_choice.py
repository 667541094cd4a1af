"""Which model and mode a request uses: the ``model`` and ``mode`` query parameters, and the rule that a slide is
read by one model."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from service.api.problems import Conflict
from service.engine.segmenter import Mode, Segmenter
from service.slides import Slide

ModelParam = Annotated[
    str | None,
    Query(
        max_length=200,
        description="model_id of a served model (GET /v1/models); default: the service's default model",
    ),
]
ModeParam = Annotated[
    Mode | None,
    Query(
        description="exact: every pixel through the dense network; fast: a coarse pass, then the dense network only "
        "on the tiles around what it sees (the heatmap elsewhere is interpolated); default: TBSEG_MODE"
    ),
]
MixedModels = Annotated[
    bool,
    Query(
        description="allow fields read by another model than the slide's earlier ones (the report then needs "
        "review); by default such a request is refused with 409"
    ),
]


def check_one_model(slide: Slide | None, model_id: str, mixed_models: bool) -> None:
    """Refuse (409) to add fields read by ``model_id`` to a slide read by other models, unless asked to."""
    if slide is None or mixed_models:
        return
    others = slide.other_models(model_id)
    if others:
        raise Conflict(
            f"slide {slide.slide_id!r} holds fields read by {', '.join(others)}; this request would use {model_id}: "
            "send model=<that id>, or mixed_models=true to grade them together anyway",
            slug="mixed-models",
        )


def choose_mode(segmenter: Segmenter, asked: Mode | None, default: Mode) -> Mode:
    """The mode a request runs in: the one asked for (409 when this model cannot run it), else the service's
    default when this model can run it, else exact."""
    if asked is None:
        return default if default in segmenter.modes else Mode.EXACT
    if asked not in segmenter.modes:
        raise Conflict(
            f"model {segmenter.model.meta.model_id} cannot run mode={asked.value}: its folder has no fast-mode "
            "networks (python -m training fast writes them); send mode=exact",
            slug="mode-unavailable",
        )
    return asked
