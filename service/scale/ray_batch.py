"""A slide archive on a Ray cluster: the service's engine in a Ray Data ``map_batches`` (``batch-ray``).

The driver lists the fields (:mod:`service.scale.inputs`), drops those already written for this model and mode
(resume), and hands the rest to Ray Data as a dataset of field ids. Each actor of :class:`FieldSegmenter` loads one
:class:`~service.engine.segmenter.Segmenter` (one ONNX Runtime session, CUDA when it was given a GPU) once, then for
each batch reads the fields' bytes where they lie, decodes them with the service's decoder, segments them exactly as
``python -m service segment`` does, and writes the batch's results as one Parquet file under ``OUTPUT/fields/``
(atomically: a temporary name, then a rename), with the masks as PNG when asked. A field that cannot be read or
segmented is written as ``failed`` with its error, and the rest go on; a field written ``done`` is skipped by the
next run, a ``failed`` one is tried again.

A slide's fields share their scale as through the service (:mod:`service.engine.scale_estimate`) when no pixel size
is given: the first :attr:`BatchPlan.scale_fields` fields of each slide (less those done before) are read first, each
estimating its own scale; the driver pools what the slide's done fields estimated, and the rest of the slide is read
with that evidence (at the slide's scale once its fields agree; ``scale_source: slide``), in a second pass.

When every batch is written the driver grades each slide from the latest row of each of its fields into
``OUTPUT/slides/<slide_id>.json`` (the schema of ``GET /v1/slides/{id}``), and writes ``OUTPUT/summary.json``:
fields done, skipped and failed, fields per second, and each worker's throughput.

Per-field Parquet columns (:data:`FIELD_SCHEMA`): ``field_id`` (path or URI), ``slide_id``, ``name``, ``status``
(done | failed), ``error``, ``model_id``, ``filter_id``, ``mode``, ``precision``, ``width``, ``height``, ``count``,
``estimated_bacilli``, ``candidates``, ``in_domain`` (the domain check; null without one), ``readable`` and
``quality_reasons`` (the quality check; null without one), ``scale_factor`` and
``scale_source`` (the scale it was read at), ``inference_ms``,
``total_ms``, ``result`` (the field's ``/v1/analyze`` answer as JSON: bacilli with boxes, centroids, scores;
rejected candidates; the domain check; timings), ``mask_png`` and
``objects_png`` (paths, when masks are asked for), ``worker`` and ``finished_at`` (Unix time).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs

from service.engine.domain import DomainModel
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.scale_estimate import SlideScaleEvidence
from service.engine.segmenter import Mode
from service.engine.slide_decision import ModelEvidence
from service.field_result import AnalyzedField, FieldOptions, ScaleOut, segment_field
from service.render import mask_pngs
from service.scale.inputs import FieldInput, is_uri, read_field
from service.slides.intake import scale_estimate, slide_field
from service.slides.model import Slide
from service.slides.report import slide_report

log = logging.getLogger(__name__)

FIELD_SCHEMA = pa.schema(
    [
        ("field_id", pa.string()),
        ("slide_id", pa.string()),
        ("name", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("model_id", pa.string()),
        ("filter_id", pa.string()),
        ("mode", pa.string()),
        ("precision", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("count", pa.int32()),
        ("estimated_bacilli", pa.int32()),
        ("candidates", pa.int32()),
        ("in_domain", pa.bool_()),
        ("readable", pa.bool_()),
        ("quality_reasons", pa.string()),
        ("scale_factor", pa.float64()),
        ("scale_source", pa.string()),
        ("inference_ms", pa.float64()),
        ("total_ms", pa.float64()),
        ("result", pa.string()),
        ("mask_png", pa.string()),
        ("objects_png", pa.string()),
        ("worker", pa.string()),
        ("finished_at", pa.float64()),
    ]
)
FIELDS_DIR, SLIDES_DIR, MASKS_DIR, SUMMARY_JSON = "fields", "slides", "masks", "summary.json"


class Output:
    """The output folder: a local path or a URI pyarrow's filesystems open (shared by every worker)."""

    def __init__(self, location: str) -> None:
        self.location = location
        if is_uri(location):
            self.fs, self.base = fs.FileSystem.from_uri(location)
        else:
            self.fs, self.base = fs.LocalFileSystem(), str(Path(location).resolve())

    def path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    def write(self, relative: str, data: bytes) -> str:
        """Write ``data`` under a temporary name, then rename it: readers never see half a file."""
        final = self.path(relative)
        folder, name = final.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.partial"
        with self.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        self.fs.move(temporary, final)
        return final

    def files(self, relative: str, suffix: str) -> list[str]:
        info = self.fs.get_file_info(fs.FileSelector(self.path(relative), allow_not_found=True))
        return sorted(
            i.path
            for i in info
            if i.type == fs.FileType.File and i.base_name.endswith(suffix) and not i.base_name.startswith(".")
        )


@dataclass(frozen=True)
class BatchPlan:
    """What a run does (the workers receive it whole).

    Attributes:
        config: the segmenter each worker loads (its providers: CUDA first with a GPU, else the CPU only).
        mode: exact or fast.
        output: the output folder's location.
        max_pixels: largest image read.
        object_threshold: filter score to keep a candidate (None: the filter's own).
        microns_per_pixel: the fields' pixel size (None: each image's metadata, else the field's scale estimated
            and, within a slide, pooled with its other fields').
        masks: also write each field's masks as PNG.
        scale_fields: fields of each slide read first, on their own estimate, before the rest are read with the
            slide's pooled evidence (0: every field on its own).
    """

    config: SegmenterConfig
    mode: Mode
    output: str
    max_pixels: int
    object_threshold: float | None = None
    microns_per_pixel: float | None = None
    masks: bool = False
    scale_fields: int = 8

    @property
    def options(self) -> FieldOptions:
        return FieldOptions(
            object_threshold=self.object_threshold, mode=self.mode, microns_per_pixel=self.microns_per_pixel
        )


def _slug(field: FieldInput) -> str:
    stem = field.name.rsplit(".", 1)[0]
    return f"{field.slide_id or '_'}/{stem}-{uuid.uuid5(uuid.NAMESPACE_URL, field.field_id).hex[:8]}"


class FieldSegmenter:
    """A Ray Data callable class: one segmenter per actor, loaded once; one Parquet file per batch."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.segmenter = load_segmenter(plan.config)
        self.output = Output(plan.output)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _one(self, field: FieldInput, evidence: SlideScaleEvidence | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        row: dict[str, Any] = {"field_id": field.field_id, "slide_id": field.slide_id, "name": field.name}
        options = self.plan.options if evidence is None else replace(self.plan.options, slide_scale=evidence)
        try:
            result = segment_field(
                self.segmenter, read_field(field.field_id), max_pixels=self.plan.max_pixels, options=options
            )
            if self.plan.masks:
                slug = _slug(field)
                for kind, png in mask_pngs(result.segmentation).items():
                    row[f"{kind}_png"] = self.output.write(f"{MASKS_DIR}/{slug}_{kind}.png", png)
            analyzed = result.analyzed(time.perf_counter() - started, include_rejected=True)
        except Exception as exc:  # a field that fails is recorded and the batch goes on
            return row | {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        return row | {
            "status": "done",
            "model_id": analyzed.model_id,
            "filter_id": analyzed.filter_id,
            "mode": analyzed.mode,
            "precision": analyzed.precision,
            "width": analyzed.image.width,
            "height": analyzed.image.height,
            "count": analyzed.count,
            "estimated_bacilli": analyzed.estimated_bacilli,
            "candidates": analyzed.candidates,
            "in_domain": analyzed.domain.in_domain if analyzed.domain is not None else None,
            "readable": analyzed.quality.readable if analyzed.quality is not None else None,
            "quality_reasons": "; ".join(analyzed.quality.reasons) if analyzed.quality is not None else None,
            "scale_factor": analyzed.scale.factor if analyzed.scale is not None else None,
            "scale_source": analyzed.scale.source if analyzed.scale is not None else None,
            "inference_ms": analyzed.timings.inference_ms,
            "total_ms": analyzed.timings.total_ms,
            "result": analyzed.model_dump_json(),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        rows = []
        evidence = batch.get("slide_evidence", np.full(len(batch["field_id"]), "", dtype=object))
        shared: dict[str, SlideScaleEvidence] = {}  # one slide's fields in this batch also learn from each other
        for field_id, slide_id, name, known in zip(
            batch["field_id"], batch["slide_id"], batch["name"], evidence, strict=True
        ):
            pooled = None
            if known:
                pooled = shared.setdefault(str(slide_id), evidence_from_json(str(known)))
            row = self._one(FieldInput(str(field_id), str(slide_id) if slide_id else None, str(name)), pooled)
            rows.append(row | {"worker": self.worker, "finished_at": time.time()})
        table = pa.Table.from_pylist(rows, schema=FIELD_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.output.write(f"{FIELDS_DIR}/part-{uuid.uuid4().hex}.parquet", sink.getvalue().to_pybytes())
        return {
            "field_id": np.array([r["field_id"] for r in rows], dtype=object),
            "status": np.array([r["status"] for r in rows], dtype=object),
            "worker": np.array([self.worker] * len(rows), dtype=object),
            "batch_seconds": np.full(len(rows), (time.perf_counter() - started) / max(1, len(rows))),
        }


def read_rows(output: Output, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Every row written under ``fields/`` so far (files that do not read are skipped, with a warning)."""
    rows: list[dict[str, Any]] = []
    for path in output.files(FIELDS_DIR, ".parquet"):
        try:
            rows += pq.read_table(path, columns=columns, filesystem=output.fs).to_pylist()
        except (OSError, pa.ArrowInvalid) as exc:
            log.warning("%s: unreadable, ignored (%s)", path, exc)
    return rows


def latest(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest row of each field."""
    by_field: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = by_field.get(row["field_id"])
        if kept is None or row["finished_at"] >= kept["finished_at"]:
            by_field[row["field_id"]] = row
    return by_field


def write_slides(
    output: Output,
    fields: list[FieldInput],
    rows: dict[str, dict[str, Any]],
    evidence: Mapping[str, ModelEvidence | None] | None = None,
) -> int:
    """Grade and decide every slide of ``fields`` from the latest rows into ``slides/<id>.json`` (``evidence``: the
    model's, by id); returns how many."""
    by_slide: dict[str, list[FieldInput]] = defaultdict(list)
    for f in fields:
        if f.slide_id is not None:
            by_slide[f.slide_id].append(f)
    for slide_id, members in sorted(by_slide.items()):
        read, failed = [], 0
        for f in members:
            row = rows.get(f.field_id)
            if row is None or row["status"] != "done":
                failed += 1
                continue
            read.append(slide_field(f.name, AnalyzedField.model_validate_json(row["result"]), row["finished_at"]))
        created = min((c.added_at for c in read), default=time.time())
        more = (f"{failed} fields could not be read and were not counted",) if failed else ()
        report = slide_report(Slide(slide_id, created, tuple(read)), more, evidence)
        output.write(f"{SLIDES_DIR}/{slide_id}.json", (report.model_dump_json(indent=1) + "\n").encode())
    return len(by_slide)


@dataclass
class RunSummary:
    fields: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    slides: int = 0
    workers: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_json(self, plan: BatchPlan, model_id: str, worker_count: int) -> dict[str, Any]:
        return {
            "fields": self.fields,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "slides": self.slides,
            "seconds": round(self.seconds, 2),
            "fields_per_second": round((self.done + self.failed) / self.seconds, 4) if self.seconds else None,
            "model_id": model_id,
            "mode": plan.mode.value,
            "workers": worker_count,
            "per_worker": [
                {
                    "worker": name,
                    "fields": int(w["fields"]),
                    "busy_seconds": round(w["seconds"], 2),
                    "fields_per_second": round(w["fields"] / w["seconds"], 4) if w["seconds"] else None,
                }
                for name, w in sorted(self.workers.items())
            ],
            "output": plan.output,
        }


def evidence_to_json(estimates: list[tuple[float, int]], empty_probes: int) -> str:
    """A slide's pooled scale evidence as the second pass's items carry it."""
    return json.dumps({"estimates": [list(e) for e in estimates], "empty_probes": empty_probes})


def evidence_from_json(text: str) -> SlideScaleEvidence:
    raw = json.loads(text)
    return SlideScaleEvidence([(float(f), int(n)) for f, n in raw["estimates"]], int(raw["empty_probes"]))


def slide_evidence(rows: Mapping[str, dict[str, Any]], model_id: str, mode: Mode) -> dict[str, str]:
    """Each slide's scale evidence from its fields done by this model in this mode (their own estimates and empty
    probes), as JSON by slide id."""
    estimates: dict[str, list[tuple[float, int]]] = defaultdict(list)
    empty: dict[str, int] = defaultdict(int)
    for row in rows.values():
        if row.get("status") != "done" or not row.get("slide_id") or row.get("model_id") != model_id:
            continue
        if row.get("mode") != mode.value or not row.get("result"):
            continue
        raw = json.loads(row["result"]).get("scale")
        if not raw:
            continue
        scale = ScaleOut.model_validate(raw)
        own = scale_estimate(scale)
        estimates[row["slide_id"]] += [own] if own is not None else []
        empty[row["slide_id"]] += int(scale.empty_probe)
    return {slide: evidence_to_json(estimates[slide], empty[slide]) for slide in set(estimates) | set(empty)}


def first_pass(todo: list[FieldInput], done_before: Mapping[str, int], per_slide: int) -> list[FieldInput]:
    """The fields read on their own estimate: those without a slide, and the first ``per_slide`` of each slide less
    the fields it has done before."""
    taken: dict[str, int] = defaultdict(int)
    first = []
    for f in todo:
        if f.slide_id is None or taken[f.slide_id] + done_before.get(f.slide_id, 0) < per_slide:
            first.append(f)
            if f.slide_id is not None:
                taken[f.slide_id] += 1
    return first


def run_batch(
    fields: list[FieldInput],
    plan: BatchPlan,
    model_id: str,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float = 0,
    batch_fields: int = 4,
    force: bool = False,
) -> dict[str, Any]:
    """Segment ``fields`` on the Ray cluster this process is connected to; returns the summary (also written to
    ``summary.json``). Fields already written ``done`` by this model in this mode are skipped unless ``force``."""
    import ray.data

    output = Output(plan.output)
    summary = RunSummary(fields=len(fields))
    started = time.perf_counter()
    earlier = latest(read_rows(output, ["field_id", "status", "model_id", "mode", "finished_at"]))
    done_before = {
        f
        for f, row in earlier.items()
        if row["status"] == "done" and row["model_id"] == model_id and row["mode"] == plan.mode.value
    }
    todo = [f for f in fields if force or f.field_id not in done_before]
    summary.skipped = len(fields) - len(todo)
    log.info("%d fields: %d to segment, %d done before (skipped)", len(fields), len(todo), summary.skipped)

    def segment(batch_of: list[FieldInput], evidence: Mapping[str, str]) -> None:
        items = [
            {
                "field_id": f.field_id,
                "slide_id": f.slide_id or "",
                "name": f.name,
                "slide_evidence": evidence.get(f.slide_id or "", ""),
            }
            for f in batch_of
        ]
        # a short list is spread over every worker (smaller batches); a long one goes in batches of batch_fields
        per_batch = max(1, min(batch_fields, math.ceil(len(items) / workers)))
        dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_batch))
        results = dataset.map_batches(
            FieldSegmenter,
            fn_constructor_kwargs={"plan": plan},
            batch_size=per_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
        )
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for status, worker, seconds in zip(batch["status"], batch["worker"], batch["batch_seconds"], strict=True):
                summary.done += status == "done"
                summary.failed += status == "failed"
                w = summary.workers.setdefault(str(worker), {"fields": 0, "seconds": 0.0})
                w["fields"] += 1
                w["seconds"] += float(seconds)

    if todo:
        pooling = plan.microns_per_pixel is None and plan.scale_fields > 0
        first = first_pass(todo, _done_by_slide(fields, done_before), plan.scale_fields) if pooling else todo
        if first:
            segment(first, {})
        read_first = {f.field_id for f in first}
        rest = [f for f in todo if f.field_id not in read_first]
        if rest:  # the rest of each slide with what its done fields estimated
            evidence = slide_evidence(latest(read_rows(output)), model_id, plan.mode)
            log.info("%d fields read with their slide's scale evidence (%d slides)", len(rest), len(evidence))
            segment(rest, evidence)
    domain = DomainModel.load(plan.config.domain_path) if plan.config.domain_path is not None else None
    summary.slides = write_slides(output, fields, latest(read_rows(output)), {model_id: ModelEvidence.of(domain)})
    summary.seconds = time.perf_counter() - started
    body = summary.as_json(plan, model_id, workers)
    output.write(SUMMARY_JSON, (json.dumps(body, indent=1) + "\n").encode())
    return body


def _done_by_slide(fields: list[FieldInput], done: set[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for f in fields:
        if f.slide_id is not None and f.field_id in done:
            counts[f.slide_id] += 1
    return counts


def cluster_resources() -> dict[str, float]:
    """The connected cluster's resources (CPU, GPU, …)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return resources


def worker_config(config: SegmenterConfig, cpus_per_worker: float, gpus_per_worker: float) -> SegmenterConfig:
    """The segmenter a worker loads: its threads are its CPUs; CUDA first only when it was given a GPU."""
    providers = config.providers if gpus_per_worker else ("CPUExecutionProvider",)
    return replace(config, providers=providers, intra_op_threads=max(1, int(cpus_per_worker)))
