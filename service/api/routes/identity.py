"""Who the caller is (``/v1/me``): the user its API key names, which reviews and signatures record."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.auth import request_user
from service.api.schemas import Me
from service.api.state import ReadyDep

router = APIRouter(tags=["review"])


@router.get("/v1/me", summary="Who the API key names (reviews and signatures record it)", response_model=Me)
def me(request: Request, serving: ReadyDep) -> Me:
    user = request_user(request)
    return Me(user=user, key_required=bool(serving.settings.key_users), lab=serving.labs.for_user(user))
