"""Command line of the service: ``serve`` (HTTP), ``segment`` (local batches through the same engine) and
``models`` (what the models directory holds).

    python -m service serve [--host H] [--port P]
    python -m service segment FILES_OR_DIRS... -o OUTDIR [--model ID] [--heatmap] [--overlay] [--slide]
        [--slide-id ID] [--force]
    python -m service models

``segment`` writes, per field, ``<stem>_mask.png`` (the paper's mask, 0/255), ``<stem>_objects.png`` (the kept
bacilli only, 0/255) and ``<stem>_objects.json`` (the ``/v1/analyze`` answer with the rejected candidates and the
file's path), optionally ``<stem>_heatmap.png`` and ``<stem>_overlay.png``; every file is written atomically
(temporary name, then rename), fields whose outputs all exist (and whose ``_objects.json`` reads) are skipped, and
``summary.csv`` lists every field with its counts. With ``--slide`` the fields are graded as one slide
(WHO/IUATLD) into ``slide.json``, in the schema of ``GET /v1/slides/{id}``. Settings come from ``TBSEG_*``
environment variables, as for the service.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from service.engine.errors import EngineError
from service.engine.image_io import ImageRejected, encode_png
from service.engine.loading import load_segmenter
from service.engine.model_folder import ModelFolder, default_model_id, scan_models
from service.engine.segmenter import Mode, Segmenter
from service.field_result import AnalyzedField, segment_field
from service.render import heatmap_png_array, mask_png_array, overlay
from service.settings import Settings
from service.slide_report import slide_report
from service.slides import SLIDE_ID, FieldCount, Slide

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
    "detail",
)


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
    batch.add_argument("--model", default="", help="model_id of a folder in TBSEG_MODELS_DIR (default: the default)")
    batch.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        help="exact, or fast (the model's fast networks) (default: TBSEG_MODE, exact where the model has no fast ones)",
    )
    batch.add_argument("--force", action="store_true", help="redo fields whose outputs exist")
    commands.add_parser("models", help="list the model folders of TBSEG_MODELS_DIR (id, recipe, filter, default)")
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


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path``, then rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    temporary.replace(path)


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
            }
        return row


def segment_one(
    segmenter: Segmenter,
    max_pixels: int,
    image: Path,
    out: Path,
    heatmap: bool,
    overlay_too: bool,
    object_threshold: float | None = None,
    mode: Mode = Mode.EXACT,
) -> BatchRow:
    """Segment one file in ``mode`` and write its outputs; returns its row."""
    started = time.perf_counter()
    result = segment_field(segmenter, image.read_bytes(), max_pixels, True, object_threshold, mode)
    seg, stem = result.segmentation, image.stem
    write_atomically(out / f"{stem}_mask.png", encode_png(mask_png_array(seg.mask)))
    write_atomically(out / f"{stem}_objects.png", encode_png(mask_png_array(seg.objects)))
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


def write_slide(path: Path, slide_id: str, rows: Sequence[BatchRow], started_at: float) -> None:
    """Grade the fields segmented (or found done before) as one slide into ``path``, in the schema of
    ``GET /v1/slides/{id}``; fields that failed are not counted and make the slide need review."""
    counts = [FieldCount.of(r.file.name, r.result, r.added_at) for r in rows if r.result is not None]
    failures = sum(r.result is None for r in rows)
    more = (f"{failures} fields could not be read and were not counted",) if failures else ()
    report = slide_report(Slide(slide_id, started_at, tuple(counts)), more)
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
    folders = scan_models(settings.models_dir, settings.require_filter)
    chosen = args.model or default_model_id(settings.models_dir, folders, settings.default_model)
    folder = next((f for f in folders if f.model_id == chosen), None)
    if folder is None:
        log.error("--model %s: no such model in %s (models: %s)", chosen, settings.models_dir, _ids(folders))
        return 2
    segmenter = load_segmenter(settings.segmenter_config(folder))
    if args.mode is not None and Mode(args.mode) not in segmenter.modes:
        log.error("--mode %s: model %s has no fast networks (python -m training fast writes them)", args.mode, chosen)
        return 2
    mode = Mode(args.mode) if args.mode is not None else settings.mode
    mode = mode if mode in segmenter.modes else Mode.EXACT
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
            continue
        try:
            rows.append(
                segment_one(
                    segmenter,
                    settings.max_pixels,
                    image,
                    args.out,
                    args.heatmap,
                    args.overlay,
                    args.object_threshold,
                    mode,
                )
            )
        except (ImageRejected, EngineError, OSError) as exc:
            log.error("%s: %s", image, exc)
            rows.append(BatchRow(image, "error", detail=str(exc)))
    summary = args.out / "summary.csv"
    temporary = summary.with_name(".summary.csv.partial")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(r.csv_row() for r in rows)
    temporary.replace(summary)
    if args.slide or args.slide_id is not None:
        write_slide(args.out / "slide.json", args.slide_id or default_slide_id(args.out), rows, started_at)
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


def _ids(folders: Sequence[ModelFolder]) -> str:
    return ", ".join(f.model_id for f in folders)


def run_models(settings: Settings) -> int:
    """Print the models directory's models, one line each (the default marked with *)."""
    folders = scan_models(settings.models_dir, settings.require_filter)
    default = default_model_id(settings.models_dir, folders, settings.default_model)
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
        return run_segment(args, settings)
    except (FileNotFoundError, EngineError) as exc:
        log.error("cannot start: %s", exc)
        return 2
