"""The fields of a batch: where they are, which slide each belongs to, and their bytes.

An input is a folder searched recursively for images (.png .jpg .jpeg .tif .tiff), or a list file (any other
file): one path or URI per line, blank lines and ``#`` comments ignored. Paths are local (or on a filesystem every
worker mounts at the same place); URIs are whatever ``pyarrow.fs.FileSystem.from_uri`` opens (``file://``,
``s3://``, ``gs://``, ``hdfs://``…). With ``slides_from_folders`` a field's slide is the folder it lies in, its id
made of that folder's name (letters, digits, ``.``, ``_``, ``-``; at most 64).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from service.slides.model import SLIDE_ID

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})


class InputError(ValueError):
    """An input that cannot be listed; the message names it."""


@dataclass(frozen=True)
class FieldInput:
    """One field to segment.

    Attributes:
        field_id: its absolute path or URI (the key results are written and resumed by).
        slide_id: the slide it belongs to, or None.
        name: its file name.
    """

    field_id: str
    slide_id: str | None
    name: str


def is_uri(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def slide_of(field_id: str) -> str:
    """A slide id from the name of the folder a field lies in."""
    folder = PurePosixPath(field_id.split("://", 1)[-1]).parent.name
    slide = re.sub(r"[^A-Za-z0-9._-]+", "-", folder).strip("-._")[:64]
    if not SLIDE_ID.match(slide):
        raise InputError(f"{field_id}: its folder {folder!r} makes no slide id (letters, digits, '.', '_' or '-')")
    return slide


def _from_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text list of paths or URIs ({exc.reason})") from exc
    ids = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_uri(entry):
            local = Path(entry) if Path(entry).is_absolute() else path.parent / entry
            if not local.is_file():
                raise InputError(f"{path}: line {number}: {entry}: no such file")
            entry = str(local.resolve())
        ids.append(entry)
    return ids


def list_inputs(source: Path, slides_from_folders: bool = False) -> list[FieldInput]:
    """The fields of ``source`` (a folder or a list file), in a stable order.

    Raises:
        InputError: a missing source, an empty one, a listed file that does not exist, or (with
            ``slides_from_folders``) a folder name that makes no slide id.
    """
    if source.is_dir():
        ids = sorted(str(p.resolve()) for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        ids = _from_list(source)
    else:
        raise InputError(f"{source}: no such folder or list file")
    if not ids:
        raise InputError(f"{source}: no field images (.png .jpg .jpeg .tif .tiff) in it")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InputError(f"{source}: {i} is listed more than once")
        seen.add(i)
    return [
        FieldInput(i, slide_of(i) if slides_from_folders else None, PurePosixPath(i.split("://", 1)[-1]).name)
        for i in ids
    ]


def read_field(field_id: str) -> bytes:
    """A field's bytes, from a local path or through pyarrow's filesystems for a URI."""
    if not is_uri(field_id):
        return Path(field_id).read_bytes()
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(field_id)
    with filesystem.open_input_stream(path) as stream:
        return bytes(stream.read())
