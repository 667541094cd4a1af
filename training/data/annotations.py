"""Annotation formats for bacillus micrographs, read into one model.

Three formats are read:

* ZNSM-iDB box CSVs (``<id>_annot.csv``): one row per box,
  ``Label,x_st_pt,y_st_pt,box_width,box_height,Image_name,Image_width,Image_height``.
* Pascal VOC XML (``<stem>.xml``), as the Makerere phone-camera set uses: ``<object>`` elements whose class
  is in ``<name>`` (VOC) or ``<label>`` (Makerere), with 1-based inclusive ``<bndbox>`` corners.
* Pixel masks (``<stem>.png``): nonzero = bacillus.

Boxes are held in 0-based pixel coordinates, half-open: a box covers columns ``x .. x+width-1``.
Every reader raises :class:`AnnotationError` naming the file for anything it cannot trust.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image


class AnnotationError(ValueError):
    """An annotation file is missing, malformed or inconsistent with its image; the message names the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BoxLabel(StrEnum):
    """What a box marks. Values are the ZNSM-iDB label strings."""

    SINGLE_BACILLUS = "single bacillus"
    BACILLI_CLUSTER = "bacilli cluster"
    UNCLASSIFIED = "unclassified red structures"
    ARTIFACT = "artifacts"

    @property
    def is_bacillus(self) -> bool:
        """True for the labels whose pixels are derived as bacillus (single rods and clusters)."""
        return self in (BoxLabel.SINGLE_BACILLUS, BoxLabel.BACILLI_CLUSTER)


# Spellings met in public TB data sets, mapped onto our four labels (compared lower-cased, trimmed).
_LABEL_ALIASES: dict[str, BoxLabel] = {
    "single bacillus": BoxLabel.SINGLE_BACILLUS,
    "bacillus": BoxLabel.SINGLE_BACILLUS,
    "bacilli": BoxLabel.SINGLE_BACILLUS,
    "tb": BoxLabel.SINGLE_BACILLUS,
    "afb": BoxLabel.SINGLE_BACILLUS,
    "bacilli cluster": BoxLabel.BACILLI_CLUSTER,
    "cluster": BoxLabel.BACILLI_CLUSTER,
    "unclassified red structures": BoxLabel.UNCLASSIFIED,
    "unclassified": BoxLabel.UNCLASSIFIED,
    "doubtful": BoxLabel.UNCLASSIFIED,
    "artifacts": BoxLabel.ARTIFACT,
    "artifact": BoxLabel.ARTIFACT,
    "artefact": BoxLabel.ARTIFACT,
    # public sets' own names
    "tbbacillus": BoxLabel.SINGLE_BACILLUS,  # Makerere AI lab's phone-camera ZN set (Pascal VOC)
    "tb bacillus": BoxLabel.SINGLE_BACILLUS,
    "mtb": BoxLabel.SINGLE_BACILLUS,
    "mycobacterium tuberculosis": BoxLabel.SINGLE_BACILLUS,
}
_EXTRA_LABELS: ContextVar[Mapping[str, BoxLabel] | None] = ContextVar("extra_labels", default=None)


def parse_label_map(text: str) -> dict[str, BoxLabel]:
    """A label map from ``--labels``: ``OURS=THEIRS`` pairs separated by commas (``bacillus=TBbacillus,artifact=
    debris``), or the path of a file holding such pairs one per line (``#`` comments) or a JSON object
    ``{"THEIRS": "OURS"}``. ``OURS`` is any spelling of our four labels; ``THEIRS`` the name in the files.

    Raises:
        ValueError: a pair without ``=``, or ``OURS`` not one of our labels (naming it and the known spellings).
    """
    path = Path(text)
    pairs: list[tuple[str, str]]
    if path.is_file():
        body = path.read_text(encoding="utf-8")
        if body.lstrip().startswith("{"):
            pairs = [(str(ours), str(theirs)) for theirs, ours in json.loads(body).items()]
        else:
            lines = [line.split("#", 1)[0].strip() for line in body.splitlines()]
            pairs = [tuple(line.split("=", 1)) for line in lines if line]  # type: ignore[misc]
    else:
        pairs = [tuple(item.split("=", 1)) for item in text.split(",") if item.strip()]  # type: ignore[misc]
    mapping = {}
    for pair in pairs:
        if len(pair) != 2 or not pair[0].strip() or not pair[1].strip():
            raise ValueError(f"--labels {text!r}: expected OURS=THEIRS pairs (e.g. bacillus=TBbacillus)")
        ours, theirs = pair[0].strip().lower(), pair[1].strip().lower()
        if ours not in _LABEL_ALIASES:
            known = ", ".join(sorted(_LABEL_ALIASES))
            raise ValueError(f"--labels: {pair[0].strip()!r} is not one of our labels (known: {known})")
        mapping[theirs] = _LABEL_ALIASES[ours]
    return mapping


@contextmanager
def use_labels(mapping: Mapping[str, BoxLabel]) -> Iterator[None]:
    """Read annotations with ``mapping`` (their name, lower-cased → our label) besides the known names."""
    token = _EXTRA_LABELS.set({k.strip().lower(): v for k, v in mapping.items()})
    try:
        yield
    finally:
        _EXTRA_LABELS.reset(token)


def parse_label(text: str, path: Path) -> BoxLabel:
    """Map a label string from an annotation file onto :class:`BoxLabel`: the names of :func:`use_labels`' map,
    then the known spellings (ours and public sets').

    Raises:
        AnnotationError: the label is not one we know, naming the file and the accepted spellings.
    """
    key = text.strip().lower()
    extra = _EXTRA_LABELS.get() or {}
    label = extra.get(key) or _LABEL_ALIASES.get(key)
    if label is None:
        known = ", ".join(sorted({*_LABEL_ALIASES, *extra}))
        raise AnnotationError(
            path, f"unknown label {text!r} (known labels: {known}; map others with --labels bacillus={text.strip()})"
        )
    return label


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in 0-based pixel coordinates; covers ``[x, x+width) × [y, y+height)``."""

    label: BoxLabel
    x: int
    y: int
    width: int
    height: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices selecting the box in a ``[y, x]`` array."""
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    def clipped(self, image_width: int, image_height: int) -> Box | None:
        """The part of the box inside the image, or None when nothing of it is."""
        x0, y0 = max(self.x, 0), max(self.y, 0)
        x1, y1 = min(self.x + self.width, image_width), min(self.y + self.height, image_height)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(self.label, x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class FieldAnnotation:
    """What is known about one field (micrograph): boxes, or an exact mask, never both.

    Attributes:
        image_path: the micrograph.
        image_size: ``(width, height)`` in pixels, as read from the image file.
        boxes: boxes in image coordinates, already clipped to the image.
        mask: exact bacillus mask ``[y, x]`` (bool) when the data set provides one, else None.
        source: the annotation file the boxes or mask came from.
    """

    image_path: Path
    image_size: tuple[int, int]
    boxes: tuple[Box, ...]
    mask: npt.NDArray[np.bool_] | None
    source: Path

    @property
    def field_id(self) -> str:
        """The image's file stem, used as the field's name in splits and outputs."""
        return self.image_path.stem

    def boxes_with(self, *labels: BoxLabel) -> tuple[Box, ...]:
        """The boxes carrying any of ``labels``."""
        return tuple(b for b in self.boxes if b.label in labels)


def _clip_all(path: Path, boxes: list[Box], image_size: tuple[int, int]) -> tuple[Box, ...]:
    """Clip boxes to the image; a box wholly outside it means the file does not belong to this image."""
    width, height = image_size
    kept = []
    for box in boxes:
        clipped = box.clipped(width, height)
        if clipped is None:
            raise AnnotationError(
                path,
                f"box {box.label.value!r} at x={box.x} y={box.y} w={box.width} h={box.height} "
                f"lies outside the {width}×{height} image",
            )
        kept.append(clipped)
    return tuple(kept)


def _positive_box(path: Path, where: str, label: BoxLabel, x: int, y: int, w: int, h: int) -> Box:
    if w <= 0 or h <= 0:
        raise AnnotationError(path, f"{where}: box has non-positive size {w}×{h}")
    return Box(label, x, y, w, h)


ZNSM_COLUMNS = (
    "Label",
    "x_st_pt",
    "y_st_pt",
    "box_width",
    "box_height",
    "Image_name",
    "Image_width",
    "Image_height",
)


def read_znsm_csv(path: Path, image_path: Path, image_size: tuple[int, int]) -> FieldAnnotation:
    """Read a ZNSM-iDB ``<id>_annot.csv`` box file for the image at ``image_path``.

    Args:
        path: the CSV file.
        image_path: the micrograph it annotates.
        image_size: ``(width, height)`` of that micrograph, used to check the file's declared size.

    Raises:
        AnnotationError: missing columns, non-integer values, a size or image name that does not match the
            image, an unknown label, or a box outside the image.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in ZNSM_COLUMNS if c not in header]
            if missing:
                raise AnnotationError(path, f"not a ZNSM-iDB box CSV: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"not a text CSV file ({exc.reason})") from exc
    boxes = []
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        try:
            x, y, w, h, declared_w, declared_h = (
                int(str(row[c]).strip())
                for c in ("x_st_pt", "y_st_pt", "box_width", "box_height", "Image_width", "Image_height")
            )
        except (TypeError, ValueError) as exc:
            raise AnnotationError(path, f"{where}: expected integers ({exc})") from exc
        if (declared_w, declared_h) != image_size:
            raise AnnotationError(
                path,
                f"{where}: declares a {declared_w}×{declared_h} image but {image_path.name} is "
                f"{image_size[0]}×{image_size[1]}",
            )
        name = str(row["Image_name"]).strip()
        if Path(name).stem != image_path.stem:
            raise AnnotationError(path, f"{where}: annotates image {name!r}, not {image_path.name!r}")
        boxes.append(_positive_box(path, where, parse_label(str(row["Label"]), path), x, y, w, h))
    return FieldAnnotation(image_path, image_size, _clip_all(path, boxes, image_size), None, path)


def read_voc_xml(path: Path, image_path: Path, image_size: tuple[int, int]) -> FieldAnnotation:
    """Read a Pascal VOC XML box file (``<name>`` or Makerere's ``<label>`` for the class).

    VOC corners are 1-based and inclusive; they are converted to our 0-based half-open boxes.

    Raises:
        AnnotationError: malformed XML, an object without class or box, non-numeric corners, a declared
            ``<size>`` that does not match the image, an unknown label, or a box outside the image.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(path, f"malformed XML ({exc})") from exc
    if root.tag != "annotation":
        raise AnnotationError(path, f"not a Pascal VOC file: root element is <{root.tag}>, not <annotation>")
    size = root.find("size")
    if size is not None:
        try:
            declared = (int(float(size.findtext("width", ""))), int(float(size.findtext("height", ""))))
        except ValueError as exc:
            raise AnnotationError(path, f"<size> is not numeric ({exc})") from exc
        # Some tools write 0×0 when they did not know the size; only a real, different size is an error.
        if declared != (0, 0) and declared != image_size:
            raise AnnotationError(
                path,
                f"declares a {declared[0]}×{declared[1]} image but {image_path.name} is "
                f"{image_size[0]}×{image_size[1]}",
            )
    boxes = []
    for number, obj in enumerate(root.iter("object"), start=1):
        where = f"object {number}"
        name = obj.findtext("name") or obj.findtext("label")
        if not name:
            raise AnnotationError(path, f"{where}: has no <name> (or <label>)")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(path, f"{where}: has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (
                round(float(bndbox.findtext(tag, ""))) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as exc:
            raise AnnotationError(path, f"{where}: <bndbox> corners are not numeric ({exc})") from exc
        boxes.append(
            _positive_box(path, where, parse_label(name, path), xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1)
        )
    return FieldAnnotation(image_path, image_size, _clip_all(path, boxes, image_size), None, path)


def read_mask_png(path: Path, image_path: Path, image_size: tuple[int, int]) -> FieldAnnotation:
    """Read a pixel mask (nonzero = bacillus) for the image at ``image_path``.

    Raises:
        AnnotationError: unreadable file, or a mask whose size differs from the image's.
    """
    try:
        with Image.open(path) as img:
            img.load()
            mask_img = img
    except (OSError, SyntaxError) as exc:
        raise AnnotationError(path, f"cannot read mask image ({exc})") from exc
    if mask_img.size != image_size:
        raise AnnotationError(
            path,
            f"mask is {mask_img.size[0]}×{mask_img.size[1]} but {image_path.name} is {image_size[0]}×{image_size[1]}",
        )
    # palette masks: judge by colour, as a person looking at them would
    shown: Image.Image = mask_img.convert("RGB") if mask_img.mode == "P" else mask_img
    array = np.asarray(shown)
    mask: npt.NDArray[np.bool_]
    if array.ndim == 3:  # colour masks: any nonzero colour channel; an alpha channel says nothing
        array = array[..., :1] if shown.mode == "LA" else array[..., :3]
        mask = np.asarray(array.any(axis=-1), dtype=bool)
    else:
        mask = np.asarray(array != 0, dtype=bool)
    return FieldAnnotation(image_path, image_size, (), mask, path)


POINT_COLUMNS = ("x", "y", "label")
POINT_BOX_PX = 16  # a point becomes a box of this side centred on it: about one rod's length


def point_box(label: BoxLabel, x: int, y: int, side: int = POINT_BOX_PX) -> Box:
    """The box a point annotation stands for: ``side`` px square, centred on the point."""
    return Box(label, x - side // 2, y - side // 2, side, side)


def read_points_csv(path: Path, image_path: Path, image_size: tuple[int, int]) -> FieldAnnotation:
    """Read a point-annotation CSV ``<stem>.csv`` with the columns ``x,y,label`` (0-based pixel of the object's
    centre, and a label :func:`parse_label` knows), as many labs mark bacilli.

    Each point becomes a :data:`POINT_BOX_PX` box centred on it (clipped to the image), so bacillus pixels are
    derived from colour around it as for boxes (:mod:`training.data.box_masks`) and the evaluation's box rules
    apply unchanged. An image with no bacillus has a file with the header only.

    Raises:
        AnnotationError: missing columns, a coordinate that is not a number, a point outside the image, or an
            unknown label, naming the file and the line.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            missing = [c for c in POINT_COLUMNS if c not in header]
            if missing:
                raise AnnotationError(path, f"not a points CSV (x,y,label): missing column(s) {', '.join(missing)}")
            rows = [{k.strip().lower(): v for k, v in row.items() if k is not None} for row in reader]
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"not a text CSV file ({exc.reason})") from exc
    width, height = image_size
    boxes = []
    for line, row in enumerate(rows, start=2):
        try:
            x, y = (round(float(str(row[c]).strip())) for c in ("x", "y"))
        except (TypeError, ValueError) as exc:
            raise AnnotationError(path, f"line {line}: x and y must be numbers ({exc})") from exc
        if not (0 <= x < width and 0 <= y < height):
            raise AnnotationError(
                path, f"line {line}: point x={x} y={y} lies outside the {width}×{height} image {image_path.name}"
            )
        boxes.append(point_box(parse_label(str(row["label"]), path), x, y))
    return FieldAnnotation(image_path, image_size, _clip_all(path, boxes, image_size), None, path)


def write_points_csv(path: Path, boxes: tuple[Box, ...]) -> None:
    """Write each box's centre as a point (the format :func:`read_points_csv` reads)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(POINT_COLUMNS)
        for b in boxes:
            writer.writerow([b.x + b.width // 2, b.y + b.height // 2, b.label.value])


def write_znsm_csv(path: Path, image_name: str, image_size: tuple[int, int], boxes: tuple[Box, ...]) -> None:
    """Write boxes as a ZNSM-iDB ``<id>_annot.csv`` (the inverse of :func:`read_znsm_csv`)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ZNSM_COLUMNS)
        for b in boxes:
            writer.writerow([b.label.value, b.x, b.y, b.width, b.height, image_name, *image_size])


def write_voc_xml(path: Path, image_name: str, image_size: tuple[int, int], boxes: tuple[Box, ...]) -> None:
    """Write boxes as Pascal VOC XML, 1-based inclusive corners (the inverse of :func:`read_voc_xml`)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image_size[0]), ("height", image_size[1]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for b in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = b.label.value
        bndbox = ET.SubElement(obj, "bndbox")
        corners = (("xmin", b.x + 1), ("ymin", b.y + 1), ("xmax", b.x + b.width), ("ymax", b.y + b.height))
        for tag, value in corners:
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_mask_png(path: Path, mask: npt.NDArray[np.bool_]) -> None:
    """Write a bool mask as a 0/255 greyscale PNG (the inverse of :func:`read_mask_png`)."""
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path)
