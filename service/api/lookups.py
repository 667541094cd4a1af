"""The resources routes find by id, as dependencies: an existing slide, an existing job, a slide's field; 404
(naming what is missing) otherwise."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from service.api.params import FieldIndex, JobId, SlideId
from service.api.problems import Conflict, NotFound
from service.api.state import ReadyDep, Serving
from service.jobs.store import Job
from service.slides.model import Slide, SlideField


def existing_slide(serving: Serving, slide_id: str) -> Slide:
    """The slide as it stands now (also to read it again after a change).

    Raises:
        NotFound: no such slide.
    """
    slide = serving.slides.get(slide_id)
    if slide is None:
        raise NotFound(f"no slide {slide_id!r}")
    return slide


def slide_field(slide: Slide, index: int, reviewable: bool = False) -> SlideField:
    """The slide's field ``index``; with ``reviewable``, only one whose objects are kept.

    Raises:
        NotFound: no such field.
        Conflict: ``reviewable`` asked and its objects were not kept.
    """
    if index >= len(slide.fields):
        raise NotFound(f"slide {slide.slide_id!r} has {len(slide.fields)} field(s); there is no field {index}")
    field = slide.fields[index]
    if reviewable and not field.reviewable:
        raise Conflict(
            f"field {index} of slide {slide.slide_id!r} has no kept objects to review (it was read before review "
            "existed); send it again as a job",
            slug="not-reviewable",
        )
    return field


def _slide(serving: ReadyDep, slide_id: SlideId) -> Slide:
    return existing_slide(serving, slide_id)


def _field(slide: Annotated[Slide, Depends(_slide)], index: FieldIndex) -> SlideField:
    return slide_field(slide, index)


def _reviewable_field(slide: Annotated[Slide, Depends(_slide)], index: FieldIndex) -> SlideField:
    return slide_field(slide, index, reviewable=True)


def _job_or_404(serving: Serving, job_id: str, results: bool) -> Job:
    job = serving.jobs.get(job_id, results=results)
    if job is None:
        raise NotFound(f"no job {job_id} (finished jobs are removed after the retention time)")
    return job


def _job(serving: ReadyDep, job_id: JobId) -> Job:
    return _job_or_404(serving, job_id, results=True)


def _job_state(serving: ReadyDep, job_id: JobId) -> Job:
    """The job without its fields' results (its state, progress and fields' states: what a poll needs)."""
    return _job_or_404(serving, job_id, results=False)


ExistingSlide = Annotated[Slide, Depends(_slide)]
ExistingField = Annotated[SlideField, Depends(_field)]
ReviewableField = Annotated[SlideField, Depends(_reviewable_field)]
ExistingJob = Annotated[Job, Depends(_job)]
PolledJob = Annotated[Job, Depends(_job_state)]
