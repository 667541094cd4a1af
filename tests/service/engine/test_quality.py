"""The field quality check (service.engine.quality): measurements, verdicts with reasons, and bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.engine.errors import ModelContractError
from service.engine.image_io import decode_image
from service.engine.quality import QualityModel, measure_field
from tests.conftest import red_rod_field
from training.data.degrade import exposure, gaussian_blur
from training.paths import SHIPPED_DIR

SHIPPED = QualityModel.load(SHIPPED_DIR / "quality.json")


def smear_like(size: int = 400, seed: int = 0) -> np.ndarray:
    """A pale field with blue counterstained blobs of a few sizes and some thin red rods, sharp edges and a little
    camera noise: what the quality check takes a ZN field to look like."""
    rng = np.random.default_rng(seed)
    field = np.empty((size, size, 3), dtype=np.float32)
    field[:] = (228, 224, 226)
    y, x = np.mgrid[0:size, 0:size]
    for _ in range(40):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(4, 25)
        field[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = (110, 140, 200)
    for k in range(6):
        field = np.minimum(field, red_rod_field((30 + 55 * k, 40 + 40 * k), 40, (size, size)).astype(np.float32))
    field += rng.normal(0, 2.0, field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


def test_the_shipped_limits_read_and_describe_every_check() -> None:
    assert SHIPPED.model_id == "tbseg-calibrated-a716bdc9dbfc"
    assert SHIPPED.limits["focus"].low is not None and "validation fields" in SHIPPED.source
    assert {"focus", "dynamic_range", "stained_share", "background_share"} <= set(SHIPPED.limits)


def test_a_sharp_smear_is_readable_and_its_blurred_copy_is_out_of_focus_saying_why() -> None:
    field = smear_like()
    sharp = SHIPPED.check(field)
    assert sharp.readable, sharp.reasons
    blurred = SHIPPED.check(gaussian_blur(field, 10.0))
    assert not blurred.readable and not blurred.checks["focus"].ok
    assert blurred.reasons[-1].startswith("out of focus: sharpness ") and "readable fields are ≥" in blurred.reasons[-1]
    assert measure_field(gaussian_blur(field, 4.0))["focus"] < measure_field(field)["focus"]


def test_a_lamp_too_bright_or_too_dim_is_badly_exposed() -> None:
    field = smear_like()
    for gain in (0.2, 3.0):
        check = SHIPPED.check(exposure(field, gain))
        assert not check.readable and not check.checks["exposure"].ok, (gain, check.reasons)
        assert any(r.startswith("badly exposed") for r in check.reasons)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((200, 300, 3), 128, np.uint8),
        np.zeros((500, 500, 3), np.uint8),
        np.full((500, 500, 3), 255, np.uint8),
        np.full((3, 800, 3), 200, np.uint8),
    ],
    ids=["1x1", "constant grey", "all black", "all white", "3 px tall"],
)
def test_bad_input_gets_a_verdict_with_a_reason_never_an_error(image: np.ndarray) -> None:
    check = SHIPPED.check(image)
    assert not check.readable and check.reasons
    assert all(isinstance(r, str) and ": " in r for r in check.reasons)


def test_a_16_bit_tiff_using_3_percent_of_its_range_is_unreadable_not_an_error() -> None:
    wide = (np.random.default_rng(1).random((300, 400)) * 0.03 * 65535).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="TIFF")
    decoded = decode_image(buffer.getvalue(), 10**7)
    check = SHIPPED.check(decoded.rgb)
    assert not check.readable and any("exposed" in r for r in check.reasons)


def test_a_clean_sparse_field_is_readable_without_a_focus_verdict_and_bare_glass_is_not() -> None:
    sparse = np.clip(np.random.default_rng(2).normal(230, 2, (400, 400, 3)), 0, 255).astype(np.uint8)
    sparse[100:112, 50:90] = (120, 150, 205)  # one small blue cell on a clean field: 0.3% of its pixels
    check = SHIPPED.check(sparse)
    assert check.readable, check.reasons
    assert not check.checks["focus"].measured and check.checks["focus"].ok
    glass = np.full((400, 400, 3), 230, np.uint8)
    bare = SHIPPED.check(glass)
    assert not bare.readable and not bare.checks["stain"].ok


def test_a_quality_file_is_written_read_and_checked(tmp_path: Path) -> None:
    SHIPPED.write(tmp_path / "quality.json")
    assert QualityModel.load(tmp_path / "quality.json") == SHIPPED
    (tmp_path / "bad.json").write_text(
        '{"format": "tbseg-quality/1", "model_id": "m", "source": "", "rule": "", '
        '"limits": {"colourfulness": {"low": 1, "high": null}}}'
    )
    with pytest.raises(ModelContractError, match="does not take: colourfulness"):
        QualityModel.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "tbseg-domain/1"}')
    with pytest.raises(ModelContractError, match="expected tbseg-quality/1"):
        QualityModel.load(tmp_path / "other.json")


def test_a_real_field_is_readable_and_its_defocused_copy_is_not(znsm_ms2: Path) -> None:
    from training.data.dataset import read_rgb

    rgb = read_rgb(znsm_ms2 / "images" / "13.jpg")
    assert SHIPPED.check(rgb).readable
    blurred = SHIPPED.check(gaussian_blur(rgb, 12.0))
    assert not blurred.readable and blurred.reasons[-1].startswith("out of focus")
