"""What ``python -m training evaluate`` writes for people: a Markdown report, precision-recall curves, a gallery.

Gallery colours (also stated in ``report.md``): found box green, missed box red, true-positive object outlined
cyan, false-positive object outlined yellow, ignored object (inside an unclassified box) outlined white, candidate
rejected by the object filter outlined magenta; ``unclassified red structures`` boxes blue and ``artifacts``
boxes grey, thin.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from training.annotations import BoxLabel
from training.metrics import ObjectMatch, Outcome
from training.overlays import outline

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


def _pct(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return "n/a" if math.isnan(number) else f"{100 * number:.1f}"


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


def _tile(picture: Image.Image, cy: int, cx: int, caption: str) -> Image.Image:
    half = CROP_PX // 2
    tile = picture.crop((cx - half, cy - half, cx + half, cy + half)).resize(
        (CROP_PX * ZOOM, CROP_PX * ZOOM), Image.Resampling.NEAREST
    )
    ImageDraw.Draw(tile).text((4, 2), caption, fill=(255, 255, 255))
    return tile


def draw_gallery_field(
    truth: object, match: ObjectMatch, folder: Path, rejected: npt.NDArray[np.bool_] | None = None
) -> dict[str, object]:
    """Write ``folder/<field>.jpg`` (the whole field, half size, marked) and return zoomed tiles of its false
    positives and missed boxes for :func:`finish_gallery`; ``rejected`` marks the object filter's rejections."""
    from training.evaluate import FieldTruth

    assert isinstance(truth, FieldTruth)
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
    false_positives, missed = [], []
    objects = ndi.find_objects(match.components)
    for label, found in enumerate(objects, start=1):
        if found is not None and match.outcomes[label] == Outcome.FALSE_POSITIVE:
            rows, cols = found
            cy, cx = (rows.start + rows.stop) // 2, (cols.start + cols.stop) // 2
            false_positives.append(_tile(picture, cy, cx, f"{truth.field_id} FP"))
    for box, was_found in zip(match.bacillus_boxes, match.found, strict=True):
        if not was_found:
            missed.append(_tile(picture, box.y + box.height // 2, box.x + box.width // 2, f"{truth.field_id} missed"))
    return {"field": truth.field_id, "false_positives": false_positives, "missed": missed}


def _sheet(tiles: list[Image.Image], per_row: int = 10) -> Image.Image:
    side = CROP_PX * ZOOM
    rows = max(1, math.ceil(len(tiles) / per_row))
    sheet = Image.new("RGB", (per_row * (side + 4), rows * (side + 4)), (24, 24, 24))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % per_row) * (side + 4), (i // per_row) * (side + 4)))
    return sheet


def finish_gallery(items: list[dict[str, object]], folder: Path) -> None:
    """Write ``false_positives.jpg`` and ``missed.jpg`` (zoomed tiles, at most 60 each, spread over the fields)."""
    for kind in ("false_positives", "missed"):
        tiles = [t for item in items for t in item[kind]]  # type: ignore[attr-defined]
        if len(tiles) > MAX_TILES:
            tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, MAX_TILES).round().astype(int)]
        _sheet(tiles).save(folder / f"{kind}.jpg", quality=90)


# ---------------------------------------------------------------------------------------------------------------
# Curves


def write_pr_curve(report: dict[str, object], path: Path) -> None:
    """Precision against recall over the threshold sweep, pixel level and bacillus level, one line per method,
    the operating point of each marked."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for method in report["methods"]:  # type: ignore[attr-defined]
        sweep = method["sweep"]
        for ax, level in zip(axes, ("pixel", "bacillus"), strict=True):
            recall = [m["recall"] for m in sweep[level]]
            precision = [m["precision"] for m in sweep[level]]
            (line,) = ax.plot(recall, precision, marker=".", label=method["name"])
            ax.plot(
                method[level]["recall"],
                method[level]["precision"],
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
        f"{report['subset']} fields ({len(report['fields'])}): precision-recall over the threshold "  # type: ignore[arg-type]
        "(big dot = operating point)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def method_table(methods: list[dict[str, object]]) -> list[str]:
    lines = [
        "| method | threshold | pixel acc. | pixel R | pixel P | pixel F1 | bacillus R | bacillus P | bacillus F1 "
        "| TP | FP | mean abs. count error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        px, b = m["pixel"], m["bacillus"]
        lines.append(
            f"| {m['name']}{' (' + m['model_id'] + ')' if m.get('model_id') else ''} | {m['threshold']:g} "  # type: ignore[index]
            f"| {_pct(px['accuracy'])} | {_pct(px['recall'])} | {_pct(px['precision'])} | {_pct(px['f1'])} "  # type: ignore[index]
            f"| {_pct(b['recall'])} | {_pct(b['precision'])} | {_pct(b['f1'])} "  # type: ignore[index]
            f"| {int(b['true_positives'])} | {int(b['false_positives'])} | {m['mean_abs_count_error']:.1f} |"  # type: ignore[index]
        )
    return lines


def write_markdown(report: dict[str, object], path: Path) -> None:
    """``report.md``: the methods side by side, the patch-by-patch check, the per-field counts, the pictures."""
    methods: list[dict[str, object]] = report["methods"]  # type: ignore[assignment]
    lines = [
        f"# Evaluation on {'all' if report['subset'] == 'all' else 'the ' + str(report['subset'])} fields of "
        f"`{Path(str(report['data'])).name}`",
        "",
        f"Fields ({len(report['fields'])}): {', '.join(report['fields'])}.  ",  # type: ignore[arg-type]
        f"Ground truth: {report['ground_truth']}.  ",
        f"Bacillus-level rules: {report['object_rules_text']}",
        "",
        "## Methods side by side (percent)",
        "",
        *method_table(methods),
        "",
    ]
    for m in methods:
        if "fit" in m:
            fit = m["fit"]
            lines.append(
                f"Colour baseline: bacillus where R − G > {m['threshold']:g}, fitted on "
                f"{'the ' if fit['fitted_on'] == 'train split' else ''}{fit['fitted_on']} "  # type: ignore[index]
                f"({fit['fields']} fields) for the best pixel F1 there ({_pct(fit['f1'])}%)."  # type: ignore[index]
            )
    crops = report.get("patch_by_patch_crops")
    if crops:
        d, p = crops["dense_engine"], crops["patch_by_patch"]  # type: ignore[index]
        lines += [
            "",
            f"## The same model patch by patch ({len(crops['regions_y0_x0_h_w'])} crops of "  # type: ignore[index]
            f"{crops['side_px']}×{crops['side_px']} px, one per field)",  # type: ignore[index]
            "",
            "| way | pixel acc. | pixel R | pixel P | pixel F1 | bacillus R | bacillus P | bacillus F1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in (("dense network, engine tiles", d), ("patch by patch (patch CNN)", p)):
            px, b = r["pixel"], r["bacillus"]
            lines.append(
                f"| {name} | {_pct(px['accuracy'])} | {_pct(px['recall'])} | {_pct(px['precision'])} "
                f"| {_pct(px['f1'])} | {_pct(b['recall'])} | {_pct(b['precision'])} | {_pct(b['f1'])} |"
            )
        lines += [
            "",
            f"Largest |P difference| {crops['max_abs_difference']:.2e}; mask pixels that differ: "  # type: ignore[index]
            f"{crops['mask_pixels_differing']}; identical metrics: {crops['identical_metrics']}. "  # type: ignore[index]
            f"Patch by patch took {crops['patch_by_patch_seconds']} s "  # type: ignore[index]
            f"({crops['patch_by_patch_seconds_per_megapixel']} s per megapixel).",  # type: ignore[index]
        ]
    lines += [
        "",
        f"## Per field: {methods[0]['name']}",
        "",
        "| field | boxes | counted | count error | found | TP | FP | bacillus P | pixel F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fid, f in methods[0]["per_field"].items():  # type: ignore[attr-defined]
        b = f["bacillus"]
        lines.append(
            f"| {fid} | {f['boxes']} | {f['counted']} | {f['count_error']:+d} | {int(b['found'])} "
            f"| {int(b['true_positives'])} | {int(b['false_positives'])} | {_pct(b['precision'])} "
            f"| {_pct(f['pixel']['f1'])} |"
        )
    filtered = [m for m in methods if "estimated_bacilli_per_field" in m]
    for m in filtered:
        estimated: dict[str, int] = m["estimated_bacilli_per_field"]  # type: ignore[assignment]
        lines += [
            "",
            f"## Per field: {m['name']} (threshold {m['threshold']:g})",
            "",
            "| field | boxes | kept objects | count error | estimated bacilli | found | TP | FP | bacillus P |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for fid, f in m["per_field"].items():  # type: ignore[attr-defined]
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
        f"Gallery (`gallery/`, {report.get('gallery_method') or 'not written'}): one marked picture per field at half "
        f"size, and `false_positives.jpg` / `missed.jpg` with zoomed tiles. {LEGEND}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
