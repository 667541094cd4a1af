"""A slide's exports: per-field counts as CSV, a field's objects as QuPath GeoJSON, the reviewed objects as
annotations that ``python -m training finetune`` reads, and a printable HTML report.

Everything here is built from the slide record (:mod:`service.slides.model`) and its report
(:mod:`service.slides.report`), so the web page and a script export the same files.

The annotations follow the training data layer's formats (``training/data/annotations.py``): a points CSV
``x,y,label`` per field (0-based centre; header only for a field with no bacillus, i.e. a negative field) or Pascal
VOC XML (1-based inclusive corners), under ``annotations/``, with the field images under ``images/`` while their
jobs keep them. Only fields whose objects are kept are exported; an object counts as a bacillus after review
(:attr:`~service.slides.model.SlideObject.counted`).
"""

from __future__ import annotations

import csv
import html
import io
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import PurePath

from service.engine.geojson import CLASS_COLOUR, CLASS_NAME, REJECTED_COLOUR, REJECTED_NAME
from service.slides.model import ObjectSource, Slide, SlideField, SlideObject
from service.slides.report import SlideFieldOut, SlideReport

BACILLUS_LABEL = "single bacillus"  # a label training's parse_label reads
CLUMP_LABEL = "bacilli cluster"
ADDED_NAME = "Bacillus (added in review)"
ADDED_COLOUR = (30, 144, 255)
CSV_COLUMNS = (
    "index",
    "name",
    "width",
    "height",
    "model_id",
    "mode",
    "objects",
    "afb",
    "reviewed_afb",
    "objects_reviewed",
)


class AnnotationFormat(StrEnum):
    POINTS = "points"
    VOC = "voc"


def _cell(value: object) -> object:
    """A text cell a spreadsheet will not run as a formula (a file named '=HYPERLINK(…)' stays text)."""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value


def counts_csv(report: SlideReport) -> str:
    """One row per field: its automatic and reviewed counts."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in report.fields:
        writer.writerow([_cell(getattr(f, c)) for c in CSV_COLUMNS])
    return buffer.getvalue()


def _label(field: SlideField, o: SlideObject) -> str:
    return CLUMP_LABEL if field.afb_of(o) > 1 else BACILLUS_LABEL


def _geometry(o: SlideObject) -> dict[str, object]:
    if o.outline is None:
        return {"type": "Point", "coordinates": [o.x, o.y]}
    return {"type": "Polygon", "coordinates": [[list(p) for p in o.outline]]}


def field_geojson(slide: Slide, index: int) -> dict[str, object]:
    """A field's objects as QuPath detections (pixel coordinates, origin top-left): each classed as what it is
    after review (bacillus, rejected candidate, or a bacillus added in review), with its review in properties."""
    field = slide.fields[index]
    features = []
    for o in field.objects:
        if o.source is ObjectSource.ADDED:
            name, colour = ADDED_NAME, ADDED_COLOUR
        elif o.counted:
            name, colour = CLASS_NAME, CLASS_COLOUR
        else:
            name, colour = REJECTED_NAME, REJECTED_COLOUR
        features.append(
            {
                "type": "Feature",
                "id": f"object-{o.number}",
                "geometry": _geometry(o),
                "properties": {
                    "objectType": "detection",
                    "name": f"object {o.number}",
                    "classification": {"name": name, "color": list(colour)},
                    "origin": o.source.value,
                    "decision": o.decision.value if o.decision else None,
                    "reviewer": o.reviewer,
                    "reviewed_at": o.reviewed_at,
                    "measurements": {
                        "Estimated bacilli": float(field.afb_of(o)),
                        **({"Object score": o.score} if o.score is not None else {}),
                    },
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "slide_id": slide.slide_id,
            "field": index,
            "name": field.name,
            "model_id": field.model_id,
            "filter_id": field.filter_id,
            "mode": field.mode,
        },
    }


def points_csv(field: SlideField) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("x", "y", "label"))
    for o in field.objects:
        if o.counted:
            x = min(max(round(o.x), 0), field.width - 1)
            y = min(max(round(o.y), 0), field.height - 1)
            writer.writerow((x, y, _label(field, o)))
    return buffer.getvalue()


def voc_xml(field: SlideField, image_name: str) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", field.width), ("height", field.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for o in field.objects:
        if not o.counted:
            continue
        x, y, w, h = o.bbox
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, field.width), min(y + h, field.height)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = _label(field, o)
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


ImageOf = Callable[[int], tuple[bytes, str] | None]


def _stems(slide: Slide) -> list[str]:
    """A unique file stem per field, from the name it was sent with."""
    stems: list[str] = []
    for i, f in enumerate(slide.fields):
        stem = PurePath(f.name).stem.replace("/", "_") or f"field-{i}"
        stems.append(stem if stem not in stems else f"{stem}-{i}")
    return stems


def annotations_zip(slide: Slide, fmt: AnnotationFormat, image_of: ImageOf) -> bytes:
    """The reviewed objects of every reviewable field as a data folder ``finetune --data`` reads:
    ``images/<stem>.<ext>`` (while held; ``image_of(index)`` gives its bytes and extension) and
    ``annotations/<stem>.csv`` or ``.xml``, with a README saying what is missing."""
    buffer = io.BytesIO()
    missing: list[str] = []
    written = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, (field, stem) in enumerate(zip(slide.fields, _stems(slide), strict=True)):
            if not field.reviewable:
                continue
            image = image_of(i)
            if image is None:
                missing.append(field.name)
            else:
                archive.writestr(f"images/{stem}.{image[1]}", image[0])
            if fmt is AnnotationFormat.POINTS:
                archive.writestr(f"annotations/{stem}.csv", points_csv(field))
            else:
                archive.writestr(f"annotations/{stem}.xml", voc_xml(field, f"{stem}.{image[1] if image else 'png'}"))
            written += 1
        note = [
            f"Slide {slide.slide_id}: {written} field(s), the objects counted after review as {fmt.value} annotations.",
            "Fine-tune a lab model on them: python -m training finetune --data <this folder> --out models/<name>",
        ]
        if missing:
            note.append(
                "These fields' images are no longer kept by the service (their jobs expired); put the lab's own "
                "copies in images/ under the same names: " + ", ".join(missing)
            )
        archive.writestr("README.txt", "\n".join(note) + "\n")
    return buffer.getvalue()


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) if t else "—"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _counted(f: SlideFieldOut) -> str:
    """Whether a field counts towards the fields examined, and why not."""
    if f.duplicate_of is not None:
        return f"no: repeats field {f.duplicate_of + 1}"
    if f.readable is False:
        return "no: " + (f.quality_reasons[0] if f.quality_reasons else "unreadable")
    return "yes"


def report_html(report: SlideReport) -> str:
    """A printable slide report: slide id, the decision with its reasons and evidence, fields examined, AFB per
    field (automatic and reviewed), grades, model and mode, who reviewed and signed."""
    e = html.escape
    review = report.review
    signature = review.signature
    rows = "\n".join(
        f"<tr><td>{f.index + 1}</td><td>{e(f.name)}</td><td>{f.afb}</td><td>{f.reviewed_afb}</td>"
        f"<td>{f.objects_reviewed}</td><td>{e(_counted(f))}</td></tr>"
        for f in report.fields
    )
    signed = (
        f"Signed by <b>{e(signature.signed_by)}</b> on {_when(signature.signed_at)} "
        f"(grade then: {e(signature.report or '—')})"
        + ("" if signature.current else " — <b>the review changed after this signature</b>")
        if signature
        else "Not signed"
    )
    reasons = "".join(f"<li>{e(r)}</li>" for r in review.reasons) or "<li>none</li>"
    why = "".join(f"<li>{e(r)}</li>" for r in report.decision_reasons)
    evidence = report.decision_evidence
    lab = f" · lab profile {e(evidence.lab_profile)}" if evidence.lab_profile else ""
    rates = "".join(
        f"<li>{e(r.source)}: {r.false_bacilli} false bacilli in {r.fields} fields, at most {r.upper_95:.3g} per field "
        f"(95%){f', taken {r.factor:g}×' if r.factor != 1 else ''}</li>"
        for r in evidence.rates
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Slide {e(report.slide_id)}: ZN smear report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #111; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #999; padding: 2px 8px; text-align: right; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
.grade {{ font-size: 1.6em; font-weight: bold; }}
@media print {{ body {{ margin: 0; }} }}
</style></head><body>
<h1>Ziehl-Neelsen smear: slide {e(report.slide_id)}</h1>
<p class="grade">Automatic decision: {e(report.decision)}</p>
<ul>{why}</ul>
<p>Fields in the model's domain: {evidence.fields_in_domain}, out of it: {evidence.fields_out_of_domain}, not checked:
{evidence.fields_unchecked} · false bacilli these fields could hold: {_num(evidence.false_bacilli_ceiling)} · positive
above {_num(evidence.positive_above)} AFB{lab}</p>
<ul>{rates}</ul>
<p class="grade">Decision after review: {e(review.decision)}</p>
<ul>{"".join(f"<li>{e(r)}</li>" for r in review.decision_reasons)}</ul>
<p class="grade">Grade (reviewed): {e(review.report or "—")}</p>
<p>Automatic grade: {e(report.report or "—")} · fields examined: {report.fields_examined} ·
AFB (automatic / reviewed): {report.total_afb} / {review.total_afb}</p>
<p>Model: {e(", ".join(report.models) or "—")} · mode: {e(", ".join(report.modes) or "—")}</p>
<p>Reviewed by: {e(", ".join(review.reviewed_by) or "—")} · objects reviewed: {review.objects_reviewed}
(accepted {review.objects_accepted}, rejected {review.objects_rejected}, added {review.objects_added}) ·
last review: {_when(review.last_reviewed_at)}</p>
<p>{signed}</p>
<h2>Needs review</h2><ul>{reasons}</ul>
<h2>AFB per field</h2>
<table><thead><tr><th>#</th><th>field</th><th>AFB (automatic)</th><th>AFB (reviewed)</th><th>objects reviewed</th>
<th>counted</th></tr></thead><tbody>
{rows}
</tbody></table>
<p><small>Grades on the WHO/IUATLD scale. Printed {_when(time.time())}.</small></p>
</body></html>
"""
