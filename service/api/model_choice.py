"""Which model and mode a request uses: the ``model`` and ``mode`` query parameters, and the rule that a slide is
read by one model."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from service.api.problems import Conflict
from service.engine.errors import ModeUnavailable
from service.engine.segmenter import Mode, Segmenter
from service.slides.model import Slide

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
LabParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="lab_id of a lab profile (GET /v1/labs): the field is read at the lab's operating point and its "
        "slide decided on the lab's own negatives; default: the API key's user's lab (TBSEG_KEY_LABS), else none",
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
    """The mode a request runs in (:meth:`Segmenter.resolve_mode <service.engine.segmenter.Segmenter.resolve_mode>`);
    409 when this model cannot run the one asked for."""
    try:
        return segmenter.resolve_mode(asked, default)
    except ModeUnavailable as exc:
        raise Conflict(str(exc), slug="mode-unavailable") from exc
