"""Command line of the service: ``serve`` (HTTP) and ``segment`` (local batches through the same engine).

    python -m service serve [--host H] [--port P]
    python -m service segment FILES_OR_DIRS... -o OUTDIR [--heatmap] [--overlay] [--slide] [--force]

``segment`` writes, per field, ``<stem>_mask.png`` (the paper's mask, 0/255), ``<stem>_objects.png`` (the kept
bacilli only, 0/255) and ``<stem>_objects.json`` (the ``/v1/analyze`` answer with the rejected candidates),
optionally ``<stem>_heatmap.png`` and ``<stem>_overlay.png``; every file is written atomically (temporary name,
then rename), fields whose outputs all exist are skipped, and ``summary.csv`` lists every field with its counts.
With ``--slide`` the fields are graded as one slide (WHO/IUATLD) into ``slide.json``. Settings come from
``TBSEG_*`` environment variables, as for the service.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from service.engine.errors import EngineError
from service.engine.segmenter import Segmenter
from service.grading import grade_slide
from service.image_io import ImageRejected, decode_image, encode_png
from service.render import heatmap_png_array, mask_png_array, overlay
from service.settings import Settings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
OUTPUT_SUFFIXES = ("_mask.png", "_objects.png", "_objects.json", "_heatmap.png", "_overlay.png")
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
    batch.add_argument("--object-threshold", type=float, help="object filter score to keep a candidate")
    batch.add_argument("--force", action="store_true", help="redo fields whose outputs exist")
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


def segment_one(
    segmenter: Segmenter,
    settings: Settings,
    image: Path,
    out: Path,
    heatmap: bool,
    overlay_too: bool,
    object_threshold: float | None = None,
) -> dict[str, object]:
    """Segment one file and write its outputs; returns its summary row."""
    decoded = decode_image(image.read_bytes(), settings.max_pixels)
    result = segmenter.segment(decoded.rgb, find_objects=True, object_threshold=object_threshold)
    stem = image.stem
    write_atomically(out / f"{stem}_mask.png", encode_png(mask_png_array(result.mask)))
    write_atomically(out / f"{stem}_objects.png", encode_png(mask_png_array(result.objects)))
    if heatmap:
        write_atomically(out / f"{stem}_heatmap.png", encode_png(heatmap_png_array(result.heatmap)))
    if overlay_too:
        write_atomically(out / f"{stem}_overlay.png", encode_png(overlay(decoded.rgb, result.objects)))
    objects = {
        "file": str(image),
        "model_id": segmenter.model.meta.model_id,
        "image": {"width": decoded.width, "height": decoded.height, "format": decoded.format},
        "threshold": segmenter.threshold,
        "min_object_px": segmenter.min_object_px,
        "filter_id": segmenter.object_filter.meta.filter_id if segmenter.object_filter else None,
        "object_threshold": result.object_threshold,
        "inference_seconds": round(result.infer_seconds, 3),
        "bacillus_pixel_fraction": round(result.bacillus_fraction, 6),
        "candidates": len(result.bacilli) + len(result.rejected),
        "count": len(result.bacilli),
        "estimated_bacilli": result.estimated_bacilli,
        "bacilli": [b.summary() for b in result.bacilli],
        "rejected": [b.summary() for b in result.rejected],
    }
    write_atomically(out / f"{stem}_objects.json", (json.dumps(objects, indent=1) + "\n").encode())
    return {
        "file": str(image),
        "status": "done",
        "width": decoded.width,
        "height": decoded.height,
        "count": len(result.bacilli),
        "estimated_bacilli": result.estimated_bacilli,
        "rejected": len(result.rejected),
        "bacillus_fraction": round(result.bacillus_fraction, 6),
        "inference_seconds": round(result.infer_seconds, 3),
        "detail": "",
    }


def _row_from_existing(image: Path, objects_json: Path) -> dict[str, object]:
    done = json.loads(objects_json.read_text(encoding="utf-8"))
    return {
        "file": str(image),
        "status": "skipped (done before)",
        "width": done["image"]["width"],
        "height": done["image"]["height"],
        "count": done["count"],
        "estimated_bacilli": done.get("estimated_bacilli", done["count"]),
        "rejected": len(done.get("rejected", [])),
        "bacillus_fraction": done["bacillus_pixel_fraction"],
        "inference_seconds": done["inference_seconds"],
        "detail": "",
    }


def run_segment(args: argparse.Namespace, settings: Settings) -> int:
    from service.api.app import load_segmenter

    images = find_images(args.inputs)
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:
            log.error(
                "%s and %s would write the same outputs (same name): segment them separately", stems[image.stem], image
            )
            return 2
        stems[image.stem] = image
    args.out.mkdir(parents=True, exist_ok=True)
    segmenter = load_segmenter(settings)
    rows, failures, started = [], 0, time.perf_counter()
    for image in tqdm(images, desc="segment", unit="field", file=sys.stderr):
        wanted = _outputs(args.out, image.stem, args.heatmap, args.overlay)
        if not args.force and all(p.is_file() for p in wanted):
            rows.append(_row_from_existing(image, wanted[1]))
            continue
        try:
            rows.append(
                segment_one(segmenter, settings, image, args.out, args.heatmap, args.overlay, args.object_threshold)
            )
        except (ImageRejected, EngineError, OSError) as exc:
            failures += 1
            log.error("%s: %s", image, exc)
            rows.append({"file": str(image), "status": "error", "detail": str(exc)})
    summary = args.out / "summary.csv"
    temporary = summary.with_name(".summary.csv.partial")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(summary)
    total = sum(int(r.get("count") or 0) for r in rows)  # type: ignore[call-overload]
    if args.slide:
        write_slide(args.out / "slide.json", rows, failures, segmenter)
    log.info(
        "%d fields (%d failed), %d bacilli in all, %.1f s; summary in %s",
        len(rows),
        failures,
        total,
        time.perf_counter() - started,
        summary,
    )
    return 1 if failures else 0


def write_slide(path: Path, rows: list[dict[str, object]], failures: int, segmenter: Segmenter) -> None:
    """Grade the fields segmented (or found done before) as one slide; failed fields are not counted."""
    counted = [r for r in rows if r.get("status") != "error"]
    afb = [int(r["estimated_bacilli"]) for r in counted]  # type: ignore[call-overload]
    body: dict[str, object] = {
        "fields": [{"file": r["file"], "afb": a, "objects": r["count"]} for r, a in zip(counted, afb, strict=True)],
        "failed_fields": failures,
        "model_id": segmenter.model.meta.model_id,
        "filter_id": segmenter.object_filter.meta.filter_id if segmenter.object_filter else None,
    }
    if afb:
        grade = grade_slide(afb)
        body |= {k: v for k, v in asdict(grade).items() if k != "grade"} | {"grade": grade.grade.value}
        if failures:
            body["needs_review"] = True
            body["reasons"] = [*grade.reasons, f"{failures} fields could not be read and were not counted"]
        log.info(
            "slide: %s, %d AFB in %d fields%s",
            grade.report,
            grade.total_afb,
            grade.fields_examined,
            " (needs review: " + "; ".join(body["reasons"]) + ")" if body["needs_review"] else "",
        )  # type: ignore[arg-type]
    else:
        body |= {"grade": None, "needs_review": True, "reasons": ["no field could be read"]}
    write_atomically(path, (json.dumps(body, indent=1) + "\n").encode())


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.api.app import check_pair, create_app
    from service.engine.model import OnnxModel
    from service.engine.object_filter import ObjectFilter

    # Preflight: a missing, corrupt or mislabelled model (or object filter) stops here with one clear line, before
    # uvicorn starts.
    model = OnnxModel(settings.model_path, providers=("CPUExecutionProvider",))
    if settings.object_filter_path is not None:
        check_pair(model, ObjectFilter(settings.object_filter_path))
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
        return run_segment(args, settings)
    except (FileNotFoundError, EngineError) as exc:
        log.error("cannot start: %s", exc)
        return 2
