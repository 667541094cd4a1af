"""Command line of the service: ``serve`` (HTTP), ``segment`` (local batches through the same engine), ``models``
(what the models directory holds) and ``batch-ray`` (an archive on a Ray cluster).

    python -m service serve [--host H] [--port P]
    python -m service segment FILES_OR_DIRS... -o OUTDIR [--model ID] [--heatmap] [--overlay] [--slide]
        [--slide-id ID] [--force]
    python -m service models
    python -m service batch-ray INPUT -o OUTPUT [--address auto|ray://HOST:PORT] [--model ID] [--mode M]
        [--slides-from-folders] [--gpus-per-worker 0|1] [--workers N] [--masks] [--scale-fields N]

``segment`` writes, per field, ``<stem>_mask.png`` (the paper's mask, 0/255), ``<stem>_objects.png`` (the kept
bacilli only, 0/255) and ``<stem>_objects.json`` (the ``/v1/analyze`` answer with the rejected candidates and the
file's path), optionally ``<stem>_heatmap.png`` and ``<stem>_overlay.png``; every file is written atomically
(temporary name, then rename), fields whose outputs all exist (and whose ``_objects.json`` reads) are skipped, and
``summary.csv`` lists every field with its counts. With ``--slide`` the fields are graded as one slide
(WHO/IUATLD) into ``slide.json``, in the schema of ``GET /v1/slides/{id}``, and share their scale as a slide's fields
do through the service (:class:`service.engine.scale_estimate.SlideScaleEvidence`; the fields found done give
theirs). Settings come from ``TBSEG_*``
environment variables, as for the service. ``batch-ray`` runs the same engine over an archive on a Ray cluster
(:mod:`service.scale.ray_batch`; needs the ``ray`` extra).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from service.engine.errors import EngineError, ModeUnavailable
from service.engine.image_io import ImageRejected, encode_png
from service.engine.loading import load_segmenter
from service.engine.model_folder import ModelFolder, default_model_id, scan_models
from service.engine.modes import resolve_mode
from service.engine.scale_estimate import SlideScaleEvidence
from service.engine.segmenter import Mode, Segmenter
from service.engine.slide_decision import ModelEvidence
from service.field_result import AnalyzedField, FieldOptions, segment_field
from service.files import write_atomically
from service.model_registry import DEFAULT_MODEL_SETTING
from service.render import heatmap_png_array, mask_pngs, overlay
from service.settings import Settings
from service.slides.intake import scale_estimate, slide_field
from service.slides.model import SLIDE_ID, Slide
from service.slides.report import slide_report

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
SUMMARY_FIELDS = (
    "file",
    "status",
    "width",
    "height",
    "count",
    "estimated_bacilli",
    "rejected",
    "bacillus_fraction",
    "inference_seconds",
    "mode",
    "in_domain",
    "readable",
    "quality_reasons",
    "scale_factor",
    "scale_source",
    "detail",
)


MICRONS_HELP = "the fields' pixel size (µm): read at the model's scale (resampled) and measured in µm"


def _positive_float(text: str) -> float:
    """An argparse type: a positive finite number."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="start the HTTP service (settings: TBSEG_* variables)")
    serve.add_argument("--host", help="address to listen on (default: TBSEG_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: TBSEG_PORT or 8000)")
    batch = commands.add_parser("segment", help="segment image files or folders without HTTP")
    batch.add_argument("inputs", nargs="+", type=Path, help="image files, or folders searched recursively")
    batch.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    batch.add_argument("--heatmap", action="store_true", help="also write <stem>_heatmap.png")
    batch.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    batch.add_argument("--slide", action="store_true", help="grade the fields as one slide into slide.json")
    batch.add_argument("--slide-id", help="the slide's id in slide.json (implies --slide; default: OUTDIR's name)")
    batch.add_argument("--object-threshold", type=float, help="object filter score to keep a candidate")
    batch.add_argument(
        "--microns-per-pixel",
        type=_positive_float,
        help=MICRONS_HELP,
    )
    batch.add_argument("--model", default="", help="model_id of a folder in TBSEG_MODELS_DIR (default: the default)")
    batch.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        help="exact, or fast (the model's fast networks) (default: TBSEG_MODE, exact where the model has no fast ones)",
    )
    batch.add_argument("--force", action="store_true", help="redo fields whose outputs exist")
    commands.add_parser("models", help="list the model folders of TBSEG_MODELS_DIR (id, recipe, filter, default)")
    scale = commands.add_parser(
        "batch-ray", help="segment an archive on a Ray cluster: per-field Parquet, per-slide grades (ray extra)"
    )
    scale.add_argument(
        "input", type=Path, help="a folder of fields (searched recursively) or a list file of paths/URIs"
    )
    scale.add_argument("-o", "--out", required=True, help="output folder: a path or URI every worker reaches")
    scale.add_argument(
        "--address", help="the cluster: auto (the one started with ray start), ray://HOST:10001; default: a local Ray"
    )
    scale.add_argument("--model", default="", help="model_id of a folder in TBSEG_MODELS_DIR (default: the default)")
    scale.add_argument("--mode", choices=[m.value for m in Mode], help="exact or fast (default: TBSEG_MODE)")
    scale.add_argument("--slides-from-folders", action="store_true", help="a slide per folder: grade each")
    scale.add_argument("--gpus-per-worker", type=int, choices=(0, 1), default=0, help="1: each worker on a GPU (CUDA)")
    scale.add_argument("--workers", type=int, help="actors (default: the cluster's CPUs, or its GPUs with a GPU each)")
    scale.add_argument("--cpus-per-worker", type=int, help="CPUs (threads) per actor (default: CPUs ÷ workers)")
    scale.add_argument("--batch-fields", type=int, default=4, help="fields per batch, and per Parquet file (default 4)")
    scale.add_argument("--masks", action="store_true", help="also write each field's masks as PNG under masks/")
    scale.add_argument("--object-threshold", type=float, help="object filter score to keep a candidate")
    scale.add_argument(
        "--microns-per-pixel",
        type=_positive_float,
        help=MICRONS_HELP,
    )
    scale.add_argument(
        "--scale-fields",
        type=int,
        default=8,
        help="with no pixel size given, each slide's first N fields are read on their own scale estimate, then the "
        "rest with the slide's pooled evidence, as the service reads a slide (default: %(default)s; 0: each field "
        "alone)",
    )
    scale.add_argument("--force", action="store_true", help="redo fields written before")
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def find_images(inputs: Sequence[Path]) -> list[Path]:
    """Image files named directly or found under the folders named, sorted; raises on a missing path."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def _outputs(out: Path, stem: str, heatmap: bool, overlay_too: bool) -> list[Path]:
    wanted = [out / f"{stem}_mask.png", out / f"{stem}_objects.json", out / f"{stem}_objects.png"]
    if heatmap:
        wanted.append(out / f"{stem}_heatmap.png")
    if overlay_too:
        wanted.append(out / f"{stem}_overlay.png")
    return wanted


@dataclass(frozen=True)
class BatchRow:
    """One input file of a batch: its result (segmented now or read back), or why it failed."""

    file: Path
    status: str
    result: AnalyzedField | None = None
    detail: str = ""
    added_at: float = 0.0

    def csv_row(self) -> dict[str, object]:
        row: dict[str, object] = {"file": str(self.file), "status": self.status, "detail": self.detail}
        if self.result is not None:
            r = self.result
            row |= {
                "width": r.image.width,
                "height": r.image.height,
                "count": r.count,
                "estimated_bacilli": r.estimated_bacilli,
                "rejected": len(r.rejected or ()),
                "bacillus_fraction": r.bacillus_pixel_fraction,
                "inference_seconds": round(r.timings.inference_ms / 1000, 3),
                "mode": r.mode,
                "in_domain": "" if r.domain is None else r.domain.in_domain,
                "readable": "" if r.quality is None else r.quality.readable,
                "quality_reasons": "" if r.quality is None else "; ".join(r.quality.reasons),
                "scale_factor": "" if r.scale is None else r.scale.factor,
                "scale_source": "" if r.scale is None else r.scale.source,
            }
        return row


def segment_one(
    segmenter: Segmenter,
    image: Path,
    out: Path,
    *,
    max_pixels: int,
    options: FieldOptions,
    heatmap: bool = False,
    overlay_too: bool = False,
) -> BatchRow:
    """Segment one file as ``options`` ask and write its outputs; returns its row."""
    started = time.perf_counter()
    result = segment_field(segmenter, image.read_bytes(), max_pixels=max_pixels, options=options)
    seg, stem = result.segmentation, image.stem
    for kind, png in mask_pngs(seg).items():
        write_atomically(out / f"{stem}_{kind}.png", png)
    if heatmap:
        write_atomically(out / f"{stem}_heatmap.png", encode_png(heatmap_png_array(seg.heatmap)))
    if overlay_too:
        write_atomically(out / f"{stem}_overlay.png", encode_png(overlay(result.image.rgb, seg.objects)))
    analyzed = result.analyzed(time.perf_counter() - started, include_rejected=True)
    body = {"file": str(image), **analyzed.model_dump(mode="json")}
    write_atomically(out / f"{stem}_objects.json", (json.dumps(body, indent=1) + "\n").encode())
    return BatchRow(image, "done", analyzed, added_at=time.time())


def _done_before(image: Path, objects_json: Path, mode: Mode) -> BatchRow | None:
    """The row of a field whose outputs exist, from its ``_objects.json``; None when that file does not read as
    this version's result or was made in another mode (the field is then segmented again)."""
    try:
        analyzed = AnalyzedField.model_validate_json(objects_json.read_bytes())
    except (OSError, ValidationError):
        return None
    if analyzed.mode != mode.value:
        return None
    return BatchRow(image, "skipped (done before)", analyzed, added_at=objects_json.stat().st_mtime)


def default_slide_id(out: Path) -> str:
    """The output folder's name, made a valid slide id (letters, digits, '.', '_' and '-'; at most 64)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", out.resolve().name).strip("-._")[:64]
    return name if SLIDE_ID.match(name) else "slide"


def write_slide(
    path: Path, slide_id: str, rows: Sequence[BatchRow], started_at: float, evidence: ModelEvidence | None = None
) -> None:
    """Grade the fields segmented (or found done before) as one slide into ``path``, in the schema of
    ``GET /v1/slides/{id}``; fields that failed are not counted and make the slide need review."""
    fields = [slide_field(r.file.name, r.result, r.added_at) for r in rows if r.result is not None]
    failures = sum(r.result is None for r in rows)
    more = (f"{failures} fields could not be read and were not counted",) if failures else ()
    models = {f.model_id for f in fields}
    report = slide_report(Slide(slide_id, started_at, tuple(fields)), more, dict.fromkeys(models, evidence))
    write_atomically(path, (report.model_dump_json(indent=1) + "\n").encode())
    log.info(
        "slide: %s, %d AFB in %d fields (slide id %s)%s",
        report.report or "no field could be read",
        report.total_afb,
        report.fields_examined,
        slide_id,
        " (needs review: " + "; ".join(report.reasons) + ")" if report.needs_review else "",
    )


def run_segment(args: argparse.Namespace, settings: Settings) -> int:
    images = find_images(args.inputs)
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            log.error(
                "%s and %s would write the same outputs (same name): segment them separately", stems[image.stem], image
            )
            return 2
        stems[image.stem] = image
    if args.slide_id is not None and not SLIDE_ID.match(args.slide_id):
        log.error(
            "--slide-id %r: use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit", args.slide_id
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = _choose(settings, args.model, args.mode)
    if chosen is None:
        return 2
    folder, mode = chosen
    segmenter = load_segmenter(settings.segmenter_config(folder))
    options = FieldOptions(object_threshold=args.object_threshold, mode=mode, microns_per_pixel=args.microns_per_pixel)
    as_slide = args.slide or args.slide_id is not None
    evidence = SlideScaleEvidence() if as_slide else None
    if evidence is not None:  # one slide: its fields share their scale once three agree, as through the service
        options = replace(options, slide_scale=evidence)
    log.info("model %s (%s), %s mode", folder.model_id, folder.path, mode.value)
    rows: list[BatchRow] = []
    started_at, started = time.time(), time.perf_counter()
    for image in tqdm(images, desc="segment", unit="field", file=sys.stderr):
        wanted = _outputs(args.out, image.stem, args.heatmap, args.overlay)
        earlier = None
        if not args.force and all(p.is_file() for p in wanted):
            earlier = _done_before(image, wanted[1], mode)
        if earlier is not None:
            rows.append(earlier)
            if evidence is not None and earlier.result is not None and earlier.result.scale is not None:
                evidence.record(scale_estimate(earlier.result.scale), earlier.result.scale.empty_probe)
            continue
        try:
            rows.append(
                segment_one(
                    segmenter,
                    image,
                    args.out,
                    max_pixels=settings.max_pixels,
                    options=options,
                    heatmap=args.heatmap,
                    overlay_too=args.overlay,
                )
            )
        except (ImageRejected, EngineError, OSError) as exc:
            log.error("%s: %s", image, exc)
            rows.append(BatchRow(image, "error", detail=str(exc)))
    summary = args.out / "summary.csv"
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=SUMMARY_FIELDS, restval="")
    writer.writeheader()
    writer.writerows(r.csv_row() for r in rows)
    write_atomically(summary, table.getvalue().encode("utf-8"))
    if as_slide:
        slide_id = args.slide_id or default_slide_id(args.out)
        write_slide(args.out / "slide.json", slide_id, rows, started_at, ModelEvidence.of(segmenter.domain))
    failures = sum(r.result is None for r in rows)
    log.info(
        "%d fields (%d failed), %d bacilli in all, %.1f s; summary in %s",
        len(rows),
        failures,
        sum(r.result.count for r in rows if r.result is not None),
        time.perf_counter() - started,
        summary,
    )
    return 1 if failures else 0


def _choose(settings: Settings, model: str, mode_name: str | None) -> tuple[ModelFolder, Mode] | None:
    """The model folder and mode a batch asked for (the defaults when not), or None after logging why not."""
    folders = scan_models(settings.models_dir, settings.require_filter)
    chosen = model or _default_id(settings, folders)
    folder = next((f for f in folders if f.model_id == chosen), None)
    if folder is None:
        log.error("--model %s: no such model in %s (models: %s)", chosen, settings.models_dir, _ids(folders))
        return None
    asked = Mode(mode_name) if mode_name is not None else None
    try:
        return folder, resolve_mode(folder.model_id, folder.modes(settings.fast_precision), asked, settings.mode)
    except ModeUnavailable as exc:
        log.error("--mode %s: %s", mode_name, exc)
        return None


def _default_id(settings: Settings, folders: list[ModelFolder]) -> str:
    return default_model_id(settings.models_dir, folders, settings.default_model, DEFAULT_MODEL_SETTING)


def run_batch_ray(args: argparse.Namespace, settings: Settings) -> int:
    """``batch-ray``: the archive on a Ray cluster (:mod:`service.scale.ray_batch`); prints the JSON summary."""
    try:
        import ray

        from service.scale import ray_batch
        from service.scale.inputs import InputError, list_inputs
    except ImportError as exc:
        log.error("batch-ray needs the ray extra: pip install -c constraints.txt -e '.[ray]' (%s)", exc)
        return 2
    try:
        fields = list_inputs(args.input, args.slides_from_folders)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    chosen = _choose(settings, args.model, args.mode)
    if chosen is None:
        return 2
    folder, mode = chosen
    if not ray.is_initialized():
        ray.init(address=args.address, logging_level=logging.WARNING)
    resources = ray_batch.cluster_resources()
    gpus = args.gpus_per_worker
    if gpus and resources.get("GPU", 0) < 1:
        log.error("--gpus-per-worker 1: the cluster has no GPU (resources: %s)", resources)
        return 2
    workers = args.workers or max(1, int(resources.get("GPU", 0) if gpus else resources.get("CPU", 1)))
    cpus = args.cpus_per_worker or max(1, int(resources.get("CPU", 1)) // workers)
    plan = ray_batch.BatchPlan(
        config=ray_batch.worker_config(settings.segmenter_config(folder), cpus, gpus),
        mode=mode,
        output=args.out,
        max_pixels=settings.max_pixels,
        object_threshold=args.object_threshold,
        microns_per_pixel=args.microns_per_pixel,
        masks=args.masks,
        scale_fields=max(0, args.scale_fields),
    )
    log.info(
        "%s, %s mode: %d workers × %d CPU%s", folder.model_id, mode.value, workers, cpus, " + 1 GPU" if gpus else ""
    )
    summary = ray_batch.run_batch(fields, plan, folder.model_id, workers, cpus, gpus, args.batch_fields, args.force)
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 1 if summary["failed"] else 0


def _ids(folders: Sequence[ModelFolder]) -> str:
    return ", ".join(f.model_id for f in folders)


def run_models(settings: Settings) -> int:
    """Print the models directory's models, one line each (the default marked with *)."""
    folders = scan_models(settings.models_dir, settings.require_filter)
    default = _default_id(settings, folders)
    for f in folders:
        mark = "*" if f.model_id == default else " "
        sys.stdout.write(f"{mark} {f.model_id}  recipe={f.recipe or '-'}  filter={f.filter_id or 'none'}  {f.path}\n")
    return 0


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.model_registry import check_models

    # Preflight: a missing, corrupt or mislabelled model (or object filter), two folders with one id, or a default
    # that is not there stops here with one clear line, before uvicorn starts.
    check_models(settings)
    host, port = args.host or settings.host, args.port or settings.port
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.stderr.write(f"tbseg: invalid settings:\n{exc}\n")
        return 2
    configure_logging(settings.log_level)
    try:
        if args.command == "serve":
            return run_serve(args, settings)
        if args.command == "models":
            return run_models(settings)
        if args.command == "batch-ray":
            return run_batch_ray(args, settings)
        return run_segment(args, settings)
    except (FileNotFoundError, EngineError) as exc:
        log.error("cannot start: %s", exc)
        return 2
