"""Running jobs: a background thread takes queued jobs in submission order and runs their fields in order, a few in
hand at once.

:class:`JobRunner` is the loop (claim, run each queued field, record it, finish, clean up expired jobs); on start
it queues again the jobs a stop left ``running``, and on stop it finishes the fields in hand first. With more than
one field in hand (``fields_in_flight``: the service passes its inference workers), a job uses every worker (each
field still passes the inference gate like a request's). More fields in hand than workers buys nothing: with one
worker on 2 cores, two in hand read a 20-field slide as one job in 156.8 s against 157.3 s one at a time
(``docs/results.md`` section 15).
:class:`JobFieldWork` is a field's work in the service: segment it on an inference worker (``run_on_worker``: the
same gate as HTTP requests, so a job and a request never infer at once beyond the workers), write both masks, return
the field's summary (:mod:`service.field_result`). :func:`file_into_slide` adds a finished job's fields to its slide.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from service.engine.scale_estimate import SlideScaleEvidence
from service.engine.segmenter import Mode
from service.field_result import FieldOptions, FieldResult, FieldSummary, ScaleOut, segment_field
from service.files import write_atomically
from service.jobs.store import FieldState, Job, JobStore, JsonObject
from service.model_registry import ModelRegistry
from service.render import mask_pngs
from service.slides.intake import scale_estimate, slide_field
from service.slides.store import SlideStore

log = logging.getLogger(__name__)

FieldRunner = Callable[[Job, int, bytes], JsonObject]
SCALES_KEPT = 8  # slide jobs whose scale evidence is kept in memory (the running one, and a few just before)


class JobRunner:
    """One background thread running queued jobs field by field, in submission order (module docstring).

    Args:
        store: the job store.
        run_field: segments one field's bytes, writes its output PNGs, returns its JSON result; raises ValueError
            (or an image error) for a field that cannot be read, anything else for an engine failure.
        on_done: called with each finished job (e.g. to add its fields to a slide).
        retention_s: how long finished jobs are kept.
        field_errors: what a field that cannot be read raises (recorded as the field's error; the job goes on).
        fields_in_flight: fields of a job in hand at once (1: one after another).
    """

    def __init__(
        self,
        store: JobStore,
        run_field: FieldRunner,
        on_done: Callable[[Job], None],
        retention_s: float,
        field_errors: tuple[type[BaseException], ...] = (ValueError,),
        fields_in_flight: int = 1,
    ) -> None:
        self.store, self.run_field, self.on_done, self.retention_s = store, run_field, on_done, retention_s
        self.field_errors = field_errors
        self.fields_in_flight = max(1, fields_in_flight)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tbseg-jobs", daemon=True)
        self.current: str | None = None

    def start(self) -> None:
        requeued = self.store.requeue_interrupted()
        if requeued:
            log.info("jobs: %d interrupted job(s) queued again", requeued)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float) -> bool:
        """Ask the thread to stop after the fields in hand; returns whether it stopped within ``timeout_s``.
        A job stopped midway stays ``running`` and is queued again at the next start."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        last_cleanup = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_cleanup > 600:
                removed = self.store.remove_expired(self.retention_s)
                if removed:
                    log.info("jobs: %d expired job(s) removed", removed)
                last_cleanup = time.monotonic()
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(timeout=5)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        self.current = job.job_id
        try:
            if not self._run_fields(job):
                log.info("jobs: stopping; job %s stays queued for the next start", job.job_id)
                return
            self.store.finish(job.job_id)
            finished = self.store.get(job.job_id)
            if finished is not None:
                self.on_done(finished)
        except Exception as exc:
            if self._stop.is_set():  # e.g. the service's event loop closing under the field in hand
                log.warning("jobs: job %s interrupted by the stop (%s); it resumes at the next start", job.job_id, exc)
                return
            log.exception("jobs: job %s failed", job.job_id)
            self.store.finish(job.job_id, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.current = None

    def _run_fields(self, job: Job) -> bool:
        """Run the job's queued fields in order, up to ``fields_in_flight`` at once; False when a stop came first
        (the fields in hand are finished and recorded). An engine failure of any field is raised once the fields in
        hand are done."""
        queued = [f.position for f in job.fields if f.state is FieldState.QUEUED]
        pending: set[Future[None]] = set()
        failure: BaseException | None = None
        stopped = False
        with ThreadPoolExecutor(self.fields_in_flight, thread_name_prefix="tbseg-job-field") as pool:
            for position in queued:
                while len(pending) >= self.fields_in_flight:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    failure = failure or next((e for e in map(Future.exception, done) if e is not None), None)
                if self._stop.is_set() or failure is not None:
                    stopped = self._stop.is_set()
                    break
                pending.add(pool.submit(self._run_field, job, position))
            done, _ = wait(pending)
            failure = failure or next((e for e in map(Future.exception, done) if e is not None), None)
        if failure is not None:
            raise failure
        return not stopped

    def _run_field(self, job: Job, position: int) -> None:
        data = self.store.input_path(job.job_id, position).read_bytes()
        try:
            result = self.run_field(job, position, data)
        except self.field_errors as exc:
            self.store.finish_field(job.job_id, position, None, str(exc))
        else:
            self.store.finish_field(job.job_id, position, result, None)


RunOnWorker = Callable[[Callable[[], FieldResult]], FieldResult]


@dataclass(frozen=True)
class JobFieldWork:
    """A job field's work in the service (a :data:`FieldRunner`).

    Attributes:
        store: where the masks are written.
        models: the served models; each job names its own.
        max_pixels: largest image accepted.
        run_on_worker: runs a function on an inference worker and returns its result (blocking).
        on_field: called with each segmented field (metrics).
        slides: the slide store, for the scale evidence of a slide job's fields (None: each field on its own).
    """

    store: JobStore
    models: ModelRegistry
    max_pixels: int
    run_on_worker: RunOnWorker
    on_field: Callable[[FieldResult], None] = lambda result: None
    slides: SlideStore | None = None
    _scales: OrderedDict[str, SlideScaleEvidence] = field(default_factory=OrderedDict)
    _scales_lock: threading.Lock = field(default_factory=threading.Lock)

    def slide_scale(self, job: Job, model_id: str) -> SlideScaleEvidence | None:
        """The scale evidence a slide job's fields share (:mod:`service.engine.scale_estimate`): the slide's stored
        fields read by the job's model and the job's own fields read so far (its stored results, read once when the
        job starts or resumes), then each field as it is read. None for a job without a slide."""
        if not job.slide_id or self.slides is None:
            return None
        with self._scales_lock:
            evidence = self._scales.get(job.job_id)
            if evidence is None:
                slide = self.slides.get(job.slide_id, objects=False)
                estimates, empty = slide.scale_evidence(model_id) if slide else ([], 0)
                stored = self.store.get(job.job_id)
                for f in stored.fields if stored else ():
                    raw = (f.result or {}).get("scale")
                    if not raw:
                        continue
                    scale = ScaleOut.model_validate(raw)
                    own = scale_estimate(scale)
                    estimates += [own] if own is not None else []
                    empty += scale.empty_probe
                evidence = self._scales[job.job_id] = SlideScaleEvidence(estimates, empty)
                while len(self._scales) > SCALES_KEPT:
                    self._scales.popitem(last=False)
            return evidence

    def __call__(self, job: Job, position: int, data: bytes) -> JsonObject:
        started = time.perf_counter()
        served = self.models.get(job.params.model_id)  # UnknownModel: the job fails, saying which
        segmenter = served.segmenter
        params = job.params
        options = FieldOptions(
            object_threshold=params.object_threshold,
            mode=Mode(params.mode),
            lab_id=params.lab_id,
            lab_version=params.lab_version,
            lab_pixel_size_um=params.lab_pixel_size_um,
            microns_per_pixel=params.microns_per_pixel,
            slide_scale=self.slide_scale(job, served.model_id),
        )
        result = self.run_on_worker(lambda: segment_field(segmenter, data, max_pixels=self.max_pixels, options=options))
        self.on_field(result)
        for kind, png in mask_pngs(result.segmentation).items():
            write_atomically(self.store.output_path(job.job_id, position, kind), png)
        # rejected candidates and outlines too: the slide keeps them for review (the web page draws them)
        analyzed = result.analyzed(time.perf_counter() - started, include_rejected=True, outlines=True)
        return analyzed.model_dump(mode="json")


def file_into_slide(slides: SlideStore, job: Job) -> None:
    """When a finished job names a slide, add its read fields to that slide (created when new), from the results
    it stored (the job may finish after a restart)."""
    if not job.slide_id:
        return
    fields = [
        slide_field(f.name, FieldSummary.model_validate(f.result), job=(job.job_id, f.position))
        for f in job.fields
        if f.state is FieldState.DONE and f.result is not None
    ]
    slides.ensure(job.slide_id)
    slides.add_fields(job.slide_id, fields)
