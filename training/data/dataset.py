"""Finding the fields of a data set folder and pairing each micrograph with its annotation file.

Layouts read (file stems pair an image with its annotation):

* ``ROOT/images/<stem>.<img>`` with ``ROOT/annotations/<stem>_annot.csv`` (ZNSM-iDB),
  ``ROOT/annotations/<stem>.xml`` (Pascal VOC) or ``ROOT/annotations/<stem>.png`` / ``ROOT/masks/<stem>.png``
  (pixel masks, nonzero = bacillus);
* a flat folder ``ROOT/<stem>.<img>`` with ``ROOT/<stem>.xml`` or ``ROOT/<stem>_annot.csv`` beside it (masks
  must then sit in ``ROOT/masks/``, since a PNG beside the images would be read as an image);
* point annotations ``<stem>.csv`` with columns ``x,y,label`` (one row per marked object; header only for a
  field with none), in ``annotations/`` or beside the images.

One data set folder holds one annotation format: a folder mixing them is refused, naming a file of each.

Image suffixes: .jpg .jpeg .png .tif .tiff (what the service reads). Documentation files (.md, .txt, .json,
.yaml) and hidden files are ignored. Anything else, an annotation without an image, an image without an
annotation, or an image with two annotations is a :class:`~training.data.annotations.AnnotationError` naming
the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.engine.image_io import ImageRejected, decode_image
from training.data.annotations import (
    AnnotationError,
    FieldAnnotation,
    read_mask_png,
    read_points_csv,
    read_voc_xml,
    read_znsm_csv,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})
MAX_FIELD_PIXELS = 400_000_000  # training reads whole slides' fields: far above any microscope camera
IGNORED_SUFFIXES = frozenset({".md", ".txt", ".json", ".yaml", ".yml", ".rst"})
ZNSM_SUFFIX = "_annot.csv"


class AnnotationKind(StrEnum):
    """The annotation formats :mod:`training.data.annotations` reads."""

    ZNSM_CSV = "znsm-csv"
    VOC_XML = "voc-xml"
    MASK_PNG = "mask-png"
    POINTS_CSV = "points-csv"


_READERS: dict[AnnotationKind, Callable[[Path, Path, tuple[int, int]], FieldAnnotation]] = {
    AnnotationKind.ZNSM_CSV: read_znsm_csv,
    AnnotationKind.VOC_XML: read_voc_xml,
    AnnotationKind.MASK_PNG: read_mask_png,
    AnnotationKind.POINTS_CSV: read_points_csv,
}


@dataclass(frozen=True)
class FieldFiles:
    """A micrograph and the one annotation file that goes with it."""

    image: Path
    annotation: Path
    kind: AnnotationKind

    @property
    def field_id(self) -> str:
        return self.image.stem


def field_sort_key(field_id: str) -> tuple[bool, int, str]:
    """Sort key putting numeric ids first, in numeric order (ZNSM-iDB ids are numbers: 2 before 10)."""
    return (not field_id.isdigit(), int(field_id) if field_id.isdigit() else 0, field_id)


def _annotation_key(path: Path, in_image_dir: bool) -> tuple[str, AnnotationKind] | None:
    """``(stem, kind)`` when ``path`` is an annotation file by name, else None."""
    name = path.name
    if name.lower().endswith(ZNSM_SUFFIX):
        return name[: -len(ZNSM_SUFFIX)], AnnotationKind.ZNSM_CSV
    if path.suffix.lower() == ".xml":
        return path.stem, AnnotationKind.VOC_XML
    if path.suffix.lower() == ".csv":
        return path.stem, AnnotationKind.POINTS_CSV
    if path.suffix.lower() == ".png" and not in_image_dir:
        return path.stem, AnnotationKind.MASK_PNG
    return None


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def discover_fields(root: Path) -> list[FieldFiles]:
    """Pair every micrograph under ``root`` with its annotation file (layouts in the module docstring).

    Returns:
        the fields, sorted by field id (numerically where ids are numbers, as ZNSM-iDB's are).

    Raises:
        AnnotationError: a folder that does not exist or holds no images, an unknown file, an annotation
            without an image, an image without an annotation, or an image with more than one.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(root, "data set folder does not exist")
    image_dir = root / "images" if (root / "images").is_dir() else root
    annotation_dirs = [d for d in (root / "annotations", root / "masks") if d.is_dir()]
    if image_dir == root:
        annotation_dirs.insert(0, root)

    images: dict[str, Path] = {}
    annotations: dict[str, list[tuple[Path, AnnotationKind]]] = {}
    for folder in dict.fromkeys([image_dir, *annotation_dirs]):  # ordered and without repeats
        for path in _visible_files(folder):
            suffix = path.suffix.lower()
            key = _annotation_key(path, in_image_dir=folder == image_dir)
            if key is not None:
                annotations.setdefault(key[0], []).append((path, key[1]))
            elif folder == image_dir and suffix in IMAGE_SUFFIXES:
                if path.stem in images:
                    raise AnnotationError(path, f"two images share the stem {path.stem!r}: {images[path.stem]}")
                images[path.stem] = path
            elif suffix in IGNORED_SUFFIXES:
                continue
            else:
                raise AnnotationError(
                    path,
                    "unknown file: expected an image (" + ", ".join(sorted(IMAGE_SUFFIXES)) + "), "
                    f"<stem>{ZNSM_SUFFIX}, <stem>.xml, <stem>.csv points, or a <stem>.png mask in annotations/ or "
                    "masks/",
                )
    for stem, found in annotations.items():
        if stem not in images:
            raise AnnotationError(found[0][0], f"annotation has no image named {stem}.* in {image_dir}")
    if not images:
        raise AnnotationError(image_dir, "no images found")
    fields = []
    for stem, image in images.items():
        found = annotations.get(stem, [])
        if not found:
            raise AnnotationError(
                image,
                f"image has no annotation (looked for {stem}{ZNSM_SUFFIX}, {stem}.xml or a {stem}.png mask "
                f"in {', '.join(str(d) for d in annotation_dirs) or root})",
            )
        if len(found) > 1:
            raise AnnotationError(image, "image has more than one annotation: " + ", ".join(str(p) for p, _ in found))
        fields.append(FieldFiles(image, found[0][0], found[0][1]))
    kinds: dict[AnnotationKind, FieldFiles] = {}
    for files in fields:
        kinds.setdefault(files.kind, files)
    if len(kinds) > 1:
        examples = "; ".join(f"{kind.value}: {files.annotation}" for kind, files in kinds.items())
        raise AnnotationError(root, f"the folder mixes annotation formats ({examples}): keep one format per data set")
    return sorted(fields, key=lambda f: field_sort_key(f.field_id))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header.

    Raises:
        AnnotationError: the file is not an image Pillow can read.
    """
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError) as exc:
        raise AnnotationError(path, f"cannot read image ({exc})") from exc


def read_annotation(files: FieldFiles) -> FieldAnnotation:
    """Read one field's annotation, checked against its image's size."""
    return _READERS[files.kind](files.annotation, files.image, image_size(files.image))


def load_dataset(root: Path) -> list[FieldAnnotation]:
    """Discover and read every field of a data set folder (see :func:`discover_fields`)."""
    return [read_annotation(files) for files in discover_fields(root)]


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """Read a micrograph as an ``[y, x, 3]`` uint8 RGB array with the service's decoder
    (:func:`service.engine.image_io.decode_image`), so a field is the same array in training and in serving
    (grey, palette, RGBA and 16-bit converted as the service converts them).

    Raises:
        AnnotationError: the file cannot be read or is not an image the service reads.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AnnotationError(path, f"cannot read image ({exc})") from exc
    try:
        return decode_image(data, max_pixels=MAX_FIELD_PIXELS).rgb
    except ImageRejected as exc:
        raise AnnotationError(path, f"cannot decode image ({exc})") from exc
