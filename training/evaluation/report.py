"""What ``python -m training evaluate`` writes for people: a Markdown report, precision-recall curves, a gallery.

Gallery colours (also stated in ``report.md``): found box green, missed box red, true-positive object outlined
cyan, false-positive object outlined yellow, ignored object (inside an unclassified box) outlined white, candidate
rejected by the object filter outlined magenta; ``unclassified red structures`` boxes blue and ``artifacts``
boxes grey, thin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from training.data.annotations import BoxLabel
from training.data.overlays import outline
from training.evaluation.metrics import ObjectMatch, Outcome
from training.evaluation.report_schema import CropReport, EvaluationReport, MethodReport
from training.evaluation.truth import FieldTruth

FOUND, MISSED, REJECTED = (0, 200, 0), (255, 0, 0), (255, 0, 255)
OUTCOME_COLOURS = {
    Outcome.TRUE_POSITIVE: (0, 255, 255),
    Outcome.FALSE_POSITIVE: (255, 230, 0),
    Outcome.IGNORED: (255, 255, 255),
}
OTHER_BOXES = {BoxLabel.UNCLASSIFIED: (40, 120, 255), BoxLabel.ARTIFACT: (150, 150, 150)}
LEGEND = (
    "Gallery colours: found box green, missed box red; objects outlined cyan (true positive), yellow (false "
    "positive), white (ignored: inside an unclassified box), magenta (rejected by the object filter); unclassified "
    "boxes blue, artifact boxes grey."
)
CROP_PX, ZOOM, MAX_TILES = 64, 3, 60


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


# ---------------------------------------------------------------------------------------------------------------
# Gallery


def _marked(
    image: npt.NDArray[np.uint8], match: ObjectMatch, rejected: npt.NDArray[np.bool_] | None = None
) -> Image.Image:
    shown = image.copy()
    if rejected is not None:
        shown[outline(rejected, 2)] = REJECTED
    for outcome, colour in OUTCOME_COLOURS.items():
        shown[outline(match.mask_of(outcome), 2)] = colour
    picture = Image.fromarray(shown)
    draw = ImageDraw.Draw(picture)
    for box, found in zip(match.bacillus_boxes, match.found, strict=True):
        draw.rectangle(
            [box.x - 3, box.y - 3, box.x + box.width + 2, box.y + box.height + 2],
            outline=FOUND if found else MISSED,
            width=3 if found else 5,
        )
    return picture


def tile(picture: Image.Image, cy: int, cx: int, caption: str) -> Image.Image:
    """A zoomed square of ``picture`` around ``(cy, cx)``, captioned (a gallery tile)."""
    half = CROP_PX // 2
    tile = picture.crop((cx - half, cy - half, cx + half, cy + half)).resize(
        (CROP_PX * ZOOM, CROP_PX * ZOOM), Image.Resampling.NEAREST
    )
    ImageDraw.Draw(tile).text((4, 2), caption, fill=(255, 255, 255))
    return tile


@dataclass
class GalleryField:
    """Zoomed tiles of one field's false positives and missed boxes, for the gallery's sheets."""

    field_id: str
    false_positives: list[Image.Image] = field(default_factory=list)
    missed: list[Image.Image] = field(default_factory=list)


def draw_gallery_field(
    truth: FieldTruth, match: ObjectMatch, folder: Path, rejected: npt.NDArray[np.bool_] | None = None
) -> GalleryField:
    """Write ``folder/<field>.jpg`` (the whole field, half size, marked) and return zoomed tiles of its false
    positives and missed boxes for :func:`finish_gallery`; ``rejected`` marks the object filter's rejections."""
    folder.mkdir(parents=True, exist_ok=True)
    picture = _marked(truth.image, match, rejected)
    draw = ImageDraw.Draw(picture)
    for box in truth.boxes:
        if box.label in OTHER_BOXES:
            draw.rectangle(
                [box.x, box.y, box.x + box.width - 1, box.y + box.height - 1], outline=OTHER_BOXES[box.label], width=2
            )
    picture.resize((picture.width // 2, picture.height // 2), Image.Resampling.BOX).save(
        folder / f"{truth.field_id}.jpg", quality=85
    )
    tiles = GalleryField(truth.field_id)
    objects = ndi.find_objects(match.components)
    for label, found in enumerate(objects, start=1):
        if found is not None and match.outcomes[label] == Outcome.FALSE_POSITIVE:
            rows, cols = found
            cy, cx = (rows.start + rows.stop) // 2, (cols.start + cols.stop) // 2
            tiles.false_positives.append(tile(picture, cy, cx, f"{truth.field_id} FP"))
    for box, was_found in zip(match.bacillus_boxes, match.found, strict=True):
        if not was_found:
            tiles.missed.append(
                tile(picture, box.y + box.height // 2, box.x + box.width // 2, f"{truth.field_id} missed")
            )
    return tiles


def _sheet(tiles: list[Image.Image], per_row: int = 10) -> Image.Image:
    side = CROP_PX * ZOOM
    rows = max(1, math.ceil(len(tiles) / per_row))
    sheet = Image.new("RGB", (per_row * (side + 4), rows * (side + 4)), (24, 24, 24))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % per_row) * (side + 4), (i // per_row) * (side + 4)))
    return sheet


def write_sheet(tiles: list[Image.Image], path: Path) -> None:
    """Tiles side by side in ``path`` (JPEG), at most :data:`MAX_TILES` spread evenly over the list."""
    if len(tiles) > MAX_TILES:
        tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, MAX_TILES).round().astype(int)]
    path.parent.mkdir(parents=True, exist_ok=True)
    _sheet(tiles).save(path, quality=90)


def finish_gallery(items: list[GalleryField], folder: Path) -> None:
    """Write ``false_positives.jpg`` and ``missed.jpg`` (zoomed tiles, at most 60 each, spread over the fields)."""
    for kind in ("false_positives", "missed"):
        tiles = [t for item in items for t in (item.false_positives if kind == "false_positives" else item.missed)]
        write_sheet(tiles, folder / f"{kind}.jpg")


# ---------------------------------------------------------------------------------------------------------------
# Curves


def write_pr_curve(report: EvaluationReport, path: Path) -> None:
    """Precision against recall over the threshold sweep, pixel level and bacillus level, one line per method,
    the operating point of each marked."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for method in report["methods"]:
        sweep = method["sweep"]
        levels = ((sweep["pixel"], method["pixel"]), (sweep["bacillus"], method["bacillus"]))
        for ax, (swept, point) in zip(axes, levels, strict=True):
            recall = [m["recall"] for m in swept]
            precision = [m["precision"] for m in swept]
            (line,) = ax.plot(recall, precision, marker=".", label=method["name"])
            ax.plot(
                point["recall"],
                point["precision"],
                marker="o",
                markersize=9,
                color=line.get_color(),
                markeredgecolor="black",
            )
    for ax, title in zip(axes, ("pixel level", "bacillus level (objects)"), strict=True):
        ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1.02), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower left")
    figure.suptitle(
        f"{report['subset']} fields ({len(report['fields'])}): precision-recall over the threshold "
        "(big dot = operating point)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def method_table(methods: list[MethodReport]) -> list[str]:
    lines = [
        "| method | threshold | pixel acc. | pixel R | pixel P | pixel F1 | bacillus R | bacillus P | bacillus F1 "
        "| TP | FP | mean abs. count error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        px, b = m["pixel"], m["bacillus"]
        model_id = m.get("model_id")
        lines.append(
            f"| {m['name']}{f' ({model_id})' if model_id else ''} | {m['threshold']:g} "
            f"| {_pct(px['accuracy'])} | {_pct(px['recall'])} | {_pct(px['precision'])} | {_pct(px['f1'])} "
            f"| {_pct(b['recall'])} | {_pct(b['precision'])} | {_pct(b['f1'])} "
            f"| {int(b['true_positives'])} | {int(b['false_positives'])} | {m['mean_abs_count_error']:.1f} |"
        )
    return lines


def _crop_section(crops: CropReport) -> list[str]:
    lines = [
        "",
        f"## The same model patch by patch ({len(crops['regions_y0_x0_h_w'])} crops of "
        f"{crops['side_px']}×{crops['side_px']} px, one per field)",
        "",
        "| way | pixel acc. | pixel R | pixel P | pixel F1 | bacillus R | bacillus P | bacillus F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ways = (
        ("dense network, engine tiles", crops["dense_engine"]),
        ("patch by patch (patch CNN)", crops["patch_by_patch"]),
    )
    for name, r in ways:
        px, b = r["pixel"], r["bacillus"]
        lines.append(
            f"| {name} | {_pct(px['accuracy'])} | {_pct(px['recall'])} | {_pct(px['precision'])} "
            f"| {_pct(px['f1'])} | {_pct(b['recall'])} | {_pct(b['precision'])} | {_pct(b['f1'])} |"
        )
    return [
        *lines,
        "",
        f"Largest |P difference| {crops['max_abs_difference']:.2e}; mask pixels that differ: "
        f"{crops['mask_pixels_differing']}; identical metrics: {crops['identical_metrics']}. "
        f"Patch by patch took {crops['patch_by_patch_seconds']} s "
        f"({crops['patch_by_patch_seconds_per_megapixel']} s per megapixel).",
    ]


def write_markdown(report: EvaluationReport, path: Path) -> None:
    """``report.md``: the methods side by side, the patch-by-patch check, the per-field counts, the pictures."""
    methods = report["methods"]
    lines = [
        f"# Evaluation on {'all' if report['subset'] == 'all' else 'the ' + report['subset']} fields of "
        f"`{Path(report['data']).name}`",
        "",
        f"Fields ({len(report['fields'])}): {', '.join(report['fields'])}.  ",
        f"Ground truth: {report['ground_truth']}.  ",
        f"Bacillus-level rules: {report['object_rules_text']}",
        "",
        "## Methods side by side (percent)",
        "",
        *method_table(methods),
        "",
    ]
    for m in methods:
        fit = m.get("fit")
        if fit is not None:
            lines.append(
                f"Colour baseline: bacillus where R − G > {m['threshold']:g}, fitted on "
                f"{'the ' if fit['fitted_on'] == 'train split' else ''}{fit['fitted_on']} "
                f"({fit['fields']} fields) for the best pixel F1 there ({_pct(fit['f1'])}%)."
            )
    crops = report["patch_by_patch_crops"]
    if crops:
        lines += _crop_section(crops)
    lines += [
        "",
        f"## Per field: {methods[0]['name']}",
        "",
        "| field | boxes | counted | count error | found | TP | FP | bacillus P | pixel F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fid, f in methods[0]["per_field"].items():
        b = f["bacillus"]
        lines.append(
            f"| {fid} | {f['boxes']} | {f['counted']} | {f['count_error']:+d} | {int(b['found'])} "
            f"| {int(b['true_positives'])} | {int(b['false_positives'])} | {_pct(b['precision'])} "
            f"| {_pct(f['pixel']['f1'])} |"
        )
    for m in methods:
        estimated = m.get("estimated_bacilli_per_field")
        if estimated is None:
            continue
        lines += [
            "",
            f"## Per field: {m['name']} (threshold {m['threshold']:g})",
            "",
            "| field | boxes | kept objects | count error | estimated bacilli | found | TP | FP | bacillus P |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for fid, f in m["per_field"].items():
            b = f["bacillus"]
            lines.append(
                f"| {fid} | {f['boxes']} | {f['counted']} | {f['count_error']:+d} | {estimated.get(fid, '')} "
                f"| {int(b['found'])} | {int(b['true_positives'])} | {int(b['false_positives'])} "
                f"| {_pct(b['precision'])} |"
            )
    lines += [
        "",
        "## Pictures",
        "",
        "![precision-recall](pr_curve.png)",
        "",
        f"Gallery (`gallery/`, {report['gallery_method'] or 'not written'}): one marked picture per field at half "
        f"size, and `false_positives.jpg` / `missed.jpg` with zoomed tiles. {LEGEND}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
