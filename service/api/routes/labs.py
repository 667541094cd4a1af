"""The lab profiles served (``GET /v1/labs``, ``GET /v1/labs/{lab_id}``): which model each validated, its
operating point and what the lab's own negatives and positives showed (:mod:`service.engine.lab_profile`)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Path

from service.api.schemas import LabList, LabSummary
from service.api.state import ReadyDep
from service.engine.lab_profile import LAB_ID_PATTERN, LabProfile

router = APIRouter(prefix="/v1/labs", tags=["labs"])
LabId = Annotated[str, Path(pattern=LAB_ID_PATTERN, description="a lab_id from GET /v1/labs")]


def summary(profile: LabProfile) -> LabSummary:
    recall = profile.positives.recall_at(profile.object_threshold) if profile.positives else None
    return LabSummary(
        lab_id=profile.lab_id,
        version=profile.version,
        model_id=profile.model_id,
        filter_id=profile.filter_id,
        object_threshold=profile.object_threshold,
        budget=profile.budget,
        negative_fields=profile.negatives.fields,
        false_bacilli_per_field=round(
            profile.negatives.false_at(profile.object_threshold) / profile.negatives.fields, 4
        ),
        false_bacilli_upper_95=round(profile.false_rate_upper_95, 4),
        positives=profile.positives.bacilli if profile.positives else None,
        recall=None if recall is None or math.isnan(recall) else round(recall, 4),
        pixel_size_um=profile.pixel_size_um,
        url=f"/v1/labs/{profile.lab_id}",
    )


@router.get("", summary="The lab profiles served: model, operating point, evidence", response_model=LabList)
def list_labs(serving: ReadyDep) -> LabList:
    return LabList(labs=[summary(serving.labs.get(i)) for i in serving.labs.ids])


@router.get(
    "/{lab_id}",
    summary="One lab profile in full (every negative candidate's score, recall by threshold)",
    responses={404: {"description": "no such lab"}},
)
def get_lab(serving: ReadyDep, lab_id: LabId) -> dict[str, object]:
    return serving.lab(lab_id).to_json()
