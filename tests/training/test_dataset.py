"""Discovering data set folders in every layout, and the errors for folders we cannot trust."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine.image_io import decode_image
from training.data.annotations import AnnotationError, BoxLabel, point_box
from training.data.dataset import AnnotationKind, discover_fields, load_dataset, read_annotation, read_rgb
from training.data.synthetic import SyntheticField, write_dataset


@pytest.mark.parametrize("kind", list(AnnotationKind))
def test_every_layout_reads_back(tmp_path: Path, synthetic_fields: list[SyntheticField], kind: AnnotationKind) -> None:
    write_dataset(tmp_path, synthetic_fields, kind)
    found = discover_fields(tmp_path)
    assert [f.field_id for f in found] == ["1", "2", "3"]
    assert {f.kind for f in found} == {kind}
    for files, field in zip(found, synthetic_fields, strict=True):
        annotation = read_annotation(files)
        np.testing.assert_array_equal(read_rgb(files.image), field.image)
        if kind is AnnotationKind.MASK_PNG:
            assert annotation.mask is not None
            np.testing.assert_array_equal(annotation.mask, field.mask)
        elif kind is AnnotationKind.POINTS_CSV:  # each box's centre, read back as a point box
            width, height = field.image.shape[1], field.image.shape[0]
            expected = tuple(point_box(b.label, b.x + b.width // 2, b.y + b.height // 2) for b in field.boxes)
            assert annotation.boxes == tuple(c for b in expected if (c := b.clipped(width, height)) is not None)
        else:
            assert annotation.boxes == field.boxes


def test_ids_sort_numerically(tmp_path: Path, synthetic_fields: list[SyntheticField]) -> None:
    renamed = [
        SyntheticField(i, f.image, f.mask, f.boxes) for i, f in zip(("10", "9", "x"), synthetic_fields, strict=True)
    ]
    write_dataset(tmp_path, renamed, AnnotationKind.ZNSM_CSV)
    assert [f.field_id for f in discover_fields(tmp_path)] == ["9", "10", "x"]


def test_documentation_files_are_ignored(tmp_path: Path, synthetic_fields: list[SyntheticField]) -> None:
    write_dataset(tmp_path, synthetic_fields[:1], AnnotationKind.ZNSM_CSV)
    (tmp_path / "SOURCE.md").write_text("# where this came from\n", encoding="utf-8")
    (tmp_path / "annotations" / "README.txt").write_text("notes\n", encoding="utf-8")
    assert len(load_dataset(tmp_path)) == 1


def _one_field(tmp_path: Path, synthetic_fields: list[SyntheticField]) -> Path:
    return write_dataset(tmp_path / "data", synthetic_fields[:1], AnnotationKind.ZNSM_CSV)


@pytest.mark.parametrize(
    ("damage", "expected", "named"),
    [
        # an image with no annotation
        (
            lambda root: (root / "annotations" / "1_annot.csv").unlink(),
            "image has no annotation",
            "images/1.png",
        ),
        # an annotation with no image
        (
            lambda root: (root / "images" / "1.png").rename(root / "images" / "2.png"),
            "has no image",
            "1_annot.csv",
        ),
        # the same field annotated twice
        (
            lambda root: shutil.copy(root / "annotations" / "1_annot.csv", root / "annotations" / "1.xml"),
            "more than one annotation",
            "images/1.png",
        ),
        # a file we do not know what to do with
        (lambda root: (root / "annotations" / "1.docx").write_bytes(b"PK"), "unknown file", "1.docx"),
        # two images sharing a stem
        (
            lambda root: shutil.copy(root / "images" / "1.png", root / "images" / "1.jpg"),
            "share the stem",
            "1.",
        ),
    ],
)
def test_inconsistent_folders_name_the_file(
    tmp_path: Path, synthetic_fields: list[SyntheticField], damage, expected: str, named: str
) -> None:
    root = _one_field(tmp_path, synthetic_fields)
    damage(root)
    with pytest.raises(AnnotationError, match=expected) as info:
        discover_fields(root)
    assert named in str(info.value)


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="does not exist"):
        discover_fields(tmp_path / "nowhere")
    with pytest.raises(AnnotationError, match="no images found"):
        discover_fields(tmp_path)


def test_undecodable_image_is_an_annotation_error(tmp_path: Path, synthetic_fields: list[SyntheticField]) -> None:
    root = _one_field(tmp_path, synthetic_fields)
    (root / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(AnnotationError, match="cannot read image") as info:
        load_dataset(root)
    assert "1.png" in str(info.value)


def test_read_rgb_converts_grey_16_bit_and_rgba(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(tmp_path / "wide.png")
    opaque = np.full((4, 5, 4), 9, dtype=np.uint8)
    opaque[..., 3] = 255
    Image.fromarray(opaque, mode="RGBA").save(tmp_path / "alpha.png")
    assert read_rgb(tmp_path / "wide.png").shape == (4, 5, 3)
    assert (read_rgb(tmp_path / "wide.png") == 255).all()
    assert (read_rgb(tmp_path / "alpha.png") == 9).all()


def test_training_reads_every_image_as_the_service_decodes_it(tmp_path: Path) -> None:
    """One image reader: 16-bit grey and colour TIFFs, translucent RGBA, palette and grey images are the same
    array in training as the service's decoder gives, pixel for pixel."""
    rng = np.random.default_rng(5)
    images = {
        "grey16.tif": Image.fromarray(rng.integers(0, 65536, (6, 7), dtype=np.uint16)),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (6, 7, 4), dtype=np.uint8), mode="RGBA"),
        "palette.png": Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).convert("P"),
        "grey.tif": Image.fromarray(rng.integers(0, 256, (6, 7), dtype=np.uint8)),
        "rgb16.tif": Image.fromarray(rng.integers(0, 65536, (6, 7), dtype=np.uint16)).convert("I"),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
        served = decode_image((tmp_path / name).read_bytes(), max_pixels=10_000).rgb
        np.testing.assert_array_equal(read_rgb(tmp_path / name), served, err_msg=name)
    translucent = read_rgb(tmp_path / "rgba.png")
    assert not (translucent == np.asarray(images["rgba.png"])[..., :3]).all()  # composited onto white, as served


def test_the_shared_data_set_reads_whole(znsm_ms2: Path) -> None:
    fields = load_dataset(znsm_ms2)
    assert len(fields) == 35
    assert {f.image_size for f in fields} == {(2592, 1944)}
    labels = [b.label for f in fields for b in f.boxes]
    assert labels.count(BoxLabel.SINGLE_BACILLUS) == 338
    assert labels.count(BoxLabel.BACILLI_CLUSTER) == 86
    assert labels.count(BoxLabel.UNCLASSIFIED) == 18
    assert labels.count(BoxLabel.ARTIFACT) == 18


def test_points_csv_errors_name_the_file_and_line(tmp_path: Path, synthetic_fields: list[SyntheticField]) -> None:
    root = write_dataset(tmp_path / "data", synthetic_fields[:1], AnnotationKind.POINTS_CSV)
    points = root / "annotations" / "1.csv"
    points.write_text("x,y,label\n10,12,bacillus\n500,20,bacillus\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"1\.csv: line 3: point x=500 y=20 lies outside the 320×240 image"):
        load_dataset(root)
    points.write_text("x,y,label\n10,twelve,bacillus\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"1\.csv: line 2: x and y must be numbers"):
        load_dataset(root)
    points.write_text("x,y\n10,12\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="missing column"):
        load_dataset(root)
    points.write_text("x,y,label\n", encoding="utf-8")  # a field with no bacillus
    assert load_dataset(root)[0].boxes == ()


def test_a_folder_mixing_formats_is_refused(tmp_path: Path, synthetic_fields: list[SyntheticField]) -> None:
    root = write_dataset(tmp_path / "data", synthetic_fields[:2], AnnotationKind.ZNSM_CSV)
    (root / "annotations" / "2_annot.csv").unlink()
    (root / "annotations" / "2.csv").write_text("x,y,label\n10,12,bacillus\n", encoding="utf-8")
    with pytest.raises(
        AnnotationError, match=r"mixes annotation formats \(znsm-csv: .*1_annot\.csv; points-csv: .*2\.csv\)"
    ):
        discover_fields(root)
