"""The tiled mosaic equals one whole-field pass of the real ONNX model, with no seams, at any field size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.engine.errors import InferenceFailed, InvalidImage, ModelContractError
from service.engine.model import ModelMeta, OnnxModel
from service.engine.segmenter import Segmenter
from training.data.synthetic import synthetic_field


@pytest.fixture(scope="module")
def model(random_dense_onnx: Path) -> OnnxModel:
    return OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))


def whole_pass(model: OnnxModel, image: np.ndarray) -> np.ndarray:
    """The reference: mirror-pad the whole field once and run it through the model in one call."""
    halo = model.meta.halo_px
    padded = np.pad(image, ((halo, halo), (halo, halo), (0, 0)), mode=model.meta.input_padding)
    return model.run((padded.astype(np.float32) * np.float32(model.meta.input_scale))[None])[0, ..., 1]


def tiled(model: OnnxModel, image: np.ndarray, tile_px: int, batch_tiles: int = 1) -> np.ndarray:
    return Segmenter(model, tile_px=tile_px, batch_tiles=batch_tiles).heatmap(image)


def test_metadata_is_read(model: OnnxModel) -> None:
    assert (model.meta.halo_px, model.meta.receptive_field_px, model.meta.positive_index) == (22, 45, 1)
    assert model.meta.input_scale == pytest.approx(1 / 255)
    assert model.providers[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("height", "width", "tile_px", "batch_tiles"),
    [
        (131, 157, 64, 1),  # several tiles, last row and column overhang
        (131, 157, 50, 3),  # batches of tiles, the last batch short
        (96, 128, 32, 4),  # tiles dividing the field exactly
        (70, 201, 512, 1),  # a field smaller than one tile
        (40, 23, 16, 2),  # narrower than the 45 px receptive field
        (1, 1, 512, 1),  # a single pixel
        (3, 90, 7, 5),  # a strip
    ],
)
def test_mosaic_equals_whole_field(model: OnnxModel, height: int, width: int, tile_px: int, batch_tiles: int) -> None:
    image = synthetic_field(5, height=max(height, 64), width=max(width, 64)).image[:height, :width]
    expected = whole_pass(model, image)
    got = tiled(model, image, tile_px, batch_tiles)
    assert got.shape == (height, width)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got > 0.5, expected > 0.5)


def test_not_an_rgb_image(model: OnnxModel) -> None:
    with pytest.raises(InvalidImage, match="uint8"):
        tiled(model, np.zeros((10, 10, 3), dtype=np.float32), 8)
    with pytest.raises(InvalidImage, match=r"\(10, 10\)"):
        tiled(model, np.zeros((10, 10), dtype=np.uint8), 8)


def test_missing_or_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="not found"):
        OnnxModel(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelContractError, match="cannot load"):
        OnnxModel(tmp_path / "bad.onnx")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"halo": "21"}, "disagree"),
        ({"input_layout": "NCHW"}, "NHWC"),
        ({"classes": "a,b"}, "bacillus"),
        ({"input_scale": "x"}, "numeric"),
    ],
)
def test_metadata_contract_is_checked(change: dict[str, str], message: str) -> None:
    props = {
        "receptive_field": "45",
        "halo": "22",
        "input_layout": "NHWC",
        "input_scale": "1/255",
        "classes": "background,bacillus",
    }
    assert ModelMeta.from_properties(props, "m.onnx").input_scale == pytest.approx(1 / 255)
    with pytest.raises(ModelContractError, match=message):
        ModelMeta.from_properties({**props, **change}, "m.onnx")
    with pytest.raises(ModelContractError, match="lacks halo"):
        ModelMeta.from_properties({k: v for k, v in props.items() if k != "halo"}, "m.onnx")


def test_an_onnx_runtime_failure_names_the_provider_and_the_batch(model: OnnxModel) -> None:
    with pytest.raises(InferenceFailed, match=r"on CPUExecutionProvider failed on a batch of shape \[1, 50, 50, 4\]"):
        model.run(np.zeros((1, 50, 50, 4), dtype=np.float32))  # four channels: not an RGB batch


def test_tiles_are_limited_on_cuda_only(random_dense_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The CPU provider has no limit. On CUDA the largest activation (conv3: 512 channels per output pixel) must
    stay under cuDNN's 2**31 elements, so a tile is at most 2047 px (1448 with two tiles per call); the segmenter
    reduces a larger one and warns. The rule is checked here on its numbers; bench/cuda_check.py ran it on a GPU."""
    cpu = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    assert cpu.largest_tile_px() is None and Segmenter(cpu, tile_px=4096).tile_px == 4096
    as_on_cuda = OnnxModel(random_dense_onnx, providers=("CPUExecutionProvider",))
    as_on_cuda.providers = ("CUDAExecutionProvider", "CPUExecutionProvider")  # what a CUDA session reports
    assert as_on_cuda.largest_tile_px(1) == 2047 and 512 * 2047**2 < 2**31 <= 512 * 2048**2
    assert as_on_cuda.largest_tile_px(2) == 1448 and 2 * 512 * 1448**2 < 2**31 <= 2 * 512 * 1449**2
    with caplog.at_level("WARNING"):
        assert Segmenter(as_on_cuda, tile_px=4096).tile_px == 2047
        assert Segmenter(as_on_cuda, tile_px=1024).tile_px == 1024
    assert sum("cuDNN" in r.getMessage() for r in caplog.records) == 1
