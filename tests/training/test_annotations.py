"""Readers of the three annotation formats: round trips and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.annotations import (
    AnnotationError,
    Box,
    BoxLabel,
    parse_label_map,
    read_mask_png,
    read_voc_xml,
    read_znsm_csv,
    use_labels,
    write_mask_png,
    write_voc_xml,
    write_znsm_csv,
)

IMAGE = Path("7.jpg")
SIZE = (320, 240)
BOXES = (
    Box(BoxLabel.SINGLE_BACILLUS, 10, 20, 30, 15),
    Box(BoxLabel.BACILLI_CLUSTER, 100, 50, 40, 40),
    Box(BoxLabel.UNCLASSIFIED, 200, 100, 12, 12),
    Box(BoxLabel.ARTIFACT, 0, 0, 5, 5),
)
HEADER = "Label,x_st_pt,y_st_pt,box_width,box_height,Image_name,Image_width,Image_height\n"


def test_znsm_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "7_annot.csv"
    write_znsm_csv(path, IMAGE.name, SIZE, BOXES)
    annotation = read_znsm_csv(path, IMAGE, SIZE)
    assert annotation.boxes == BOXES
    assert annotation.mask is None
    assert annotation.field_id == "7"


def test_znsm_csv_reads_the_shared_format(tmp_path: Path) -> None:
    path = tmp_path / "7_annot.csv"
    path.write_text(HEADER + "single bacillus,1844,321,131,90,7.jpg,2592,1944\n", encoding="utf-8")
    (box,) = read_znsm_csv(path, IMAGE, (2592, 1944)).boxes
    assert box == Box(BoxLabel.SINGLE_BACILLUS, 1844, 321, 131, 90)
    assert box.slices == (slice(321, 411), slice(1844, 1975))


def test_boxes_partly_outside_the_image_are_clipped(tmp_path: Path) -> None:
    path = tmp_path / "7_annot.csv"
    path.write_text(HEADER + "single bacillus,300,230,40,40,7.jpg,320,240\n", encoding="utf-8")
    (box,) = read_znsm_csv(path, IMAGE, SIZE).boxes
    assert (box.x, box.y, box.width, box.height) == (300, 230, 20, 10)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # a CSV of something else
        ("name,x,y\nfoo,1,2\n", "missing column"),
        # coordinates that are not integers
        (HEADER + "single bacillus,ten,20,30,15,7.jpg,320,240\n", "expected integers"),
        # the image named in the file is another one
        (HEADER + "single bacillus,10,20,30,15,8.jpg,320,240\n", "annotates image '8.jpg'"),
        # the declared size is not the image's
        (HEADER + "single bacillus,10,20,30,15,7.jpg,640,480\n", "declares a 640×480 image"),
        # a label we do not know
        (HEADER + "mitochondrion,10,20,30,15,7.jpg,320,240\n", "unknown label 'mitochondrion'"),
        # a box wholly outside the image
        (HEADER + "single bacillus,400,20,30,15,7.jpg,320,240\n", "lies outside"),
        # an empty box
        (HEADER + "single bacillus,10,20,0,15,7.jpg,320,240\n", "non-positive size"),
    ],
)
def test_znsm_csv_errors_name_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "7_annot.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AnnotationError, match=expected) as info:
        read_znsm_csv(path, IMAGE, SIZE)
    assert str(path) in str(info.value)


def test_znsm_csv_binary_garbage_is_an_annotation_error(tmp_path: Path) -> None:
    path = tmp_path / "7_annot.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)))
    with pytest.raises(AnnotationError, match=r"7_annot\.csv"):
        read_znsm_csv(path, IMAGE, SIZE)


def test_voc_xml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "7.xml"
    write_voc_xml(path, IMAGE.name, SIZE, BOXES)
    assert read_voc_xml(path, IMAGE, SIZE).boxes == BOXES


def test_voc_xml_makerere_style_label_tag(tmp_path: Path) -> None:
    """Makerere's files carry the class in <label>, with 1-based inclusive corners."""
    path = tmp_path / "7.xml"
    path.write_text(
        "<annotation><filename>7.jpg</filename>"
        "<object><label>TB</label><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>35</ymax>"
        "</bndbox></object></annotation>",
        encoding="utf-8",
    )
    (box,) = read_voc_xml(path, IMAGE, SIZE).boxes
    assert box == Box(BoxLabel.SINGLE_BACILLUS, 10, 20, 30, 15)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<annotation><object>", "malformed XML"),
        ("<html><body/></html>", "root element is <html>"),
        ("<annotation><object><name>TB</name></object></annotation>", "has no <bndbox>"),
        ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "has no <name>"),
        (
            "<annotation><object><name>TB</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>3</xmax>"
            "<ymax>4</ymax></bndbox></object></annotation>",
            "not numeric",
        ),
        (
            "<annotation><size><width>10</width><height>10</height></size></annotation>",
            "declares a 10×10 image",
        ),
        (
            "<annotation><object><name>yeast</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>"
            "<ymax>4</ymax></bndbox></object></annotation>",
            "unknown label 'yeast'",
        ),
    ],
)
def test_voc_xml_errors_name_the_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "7.xml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(AnnotationError, match=expected) as info:
        read_voc_xml(path, IMAGE, SIZE)
    assert str(path) in str(info.value)


def test_mask_png_round_trip(tmp_path: Path) -> None:
    mask = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    mask[50:60, 70:100] = True
    path = tmp_path / "7.png"
    write_mask_png(path, mask)
    annotation = read_mask_png(path, IMAGE, SIZE)
    assert annotation.mask is not None
    np.testing.assert_array_equal(annotation.mask, mask)
    assert annotation.boxes == ()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L"])
def test_mask_png_any_nonzero_colour_is_bacillus(tmp_path: Path, mode: str) -> None:
    rgb = np.zeros((SIZE[1], SIZE[0], 3), dtype=np.uint8)
    rgb[5:9, 5:9] = (200, 0, 0)
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        image.putalpha(255)  # opaque everywhere: alpha must not make every pixel bacillus
    elif mode in ("P", "L"):
        image = image.convert(mode)
    image.save(tmp_path / "7.png")
    mask = read_mask_png(tmp_path / "7.png", IMAGE, SIZE).mask
    assert mask is not None
    assert mask.sum() == 16 and mask[5:9, 5:9].all()


def test_mask_png_errors(tmp_path: Path) -> None:
    write_mask_png(tmp_path / "small.png", np.zeros((10, 10), dtype=bool))
    with pytest.raises(AnnotationError, match="mask is 10×10"):
        read_mask_png(tmp_path / "small.png", IMAGE, SIZE)
    (tmp_path / "text.png").write_text("not a png", encoding="utf-8")
    with pytest.raises(AnnotationError, match="cannot read mask"):
        read_mask_png(tmp_path / "text.png", IMAGE, SIZE)


def _voc_with(path: Path, *names: str) -> Path:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{11 + 40 * i}</xmin><ymin>21</ymin><xmax>{40 + 40 * i}</xmax>"
        "<ymax>35</ymax></bndbox></object>"
        for i, n in enumerate(names)
    )
    path.write_text(f"<annotation><filename>7.jpg</filename>{objects}</annotation>", encoding="utf-8")
    return path


def test_public_sets_label_names_are_read_and_others_are_mapped(tmp_path: Path) -> None:
    path = _voc_with(tmp_path / "7.xml", "TBbacillus", "debris")
    with pytest.raises(AnnotationError, match=r"unknown label 'debris'.*--labels bacillus=debris") as info:
        read_voc_xml(path, IMAGE, SIZE)
    assert str(path) in str(info.value) and "tbbacillus" in str(info.value)  # the known names, Makerere's too
    with use_labels(parse_label_map("artifact=Debris")):
        labels = [b.label for b in read_voc_xml(path, IMAGE, SIZE).boxes]
    assert labels == [BoxLabel.SINGLE_BACILLUS, BoxLabel.ARTIFACT]
    with pytest.raises(AnnotationError):  # the map holds only where it is used
        read_voc_xml(path, IMAGE, SIZE)
    as_file = tmp_path / "labels.txt"
    as_file.write_text("# our label = theirs\nartifact = debris\nbacillus=AFB+\n", encoding="utf-8")
    assert parse_label_map(str(as_file)) == {"debris": BoxLabel.ARTIFACT, "afb+": BoxLabel.SINGLE_BACILLUS}
    as_json = tmp_path / "labels.json"
    as_json.write_text('{"debris": "artifacts"}', encoding="utf-8")
    assert parse_label_map(str(as_json)) == {"debris": BoxLabel.ARTIFACT}
    with pytest.raises(ValueError, match="'yeast' is not one of our labels"):
        parse_label_map("yeast=debris")
    with pytest.raises(ValueError, match="expected OURS=THEIRS"):
        parse_label_map("debris")


def test_the_training_commands_take_a_label_map(tmp_path: Path) -> None:
    from training.cli import main
    from training.data.dataset import AnnotationKind
    from training.data.synthetic import synthetic_field, write_dataset

    data = write_dataset(tmp_path / "lab", [synthetic_field(i, 96, 128) for i in range(4)], AnnotationKind.VOC_XML)
    for xml in data.rglob("*.xml"):
        xml.write_text(xml.read_text().replace("single bacillus", "TB-rod"), encoding="utf-8")
    split = ["split", "--data", str(data), "-o", str(tmp_path / "split.json"), "--test-fraction", "0.5"]
    assert main(split) == 2  # unknown label TB-rod
    assert main([*split, "--labels", "bacillus=TB-rod"]) == 0
