"""An ONNX model of the dense bacillus network and the contract its metadata declares."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.engine.errors import InferenceFailed, ModelContractError
from service.engine.normalisation import InputNormalisation

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("receptive_field", "halo", "input_layout", "input_scale", "classes")
Padding = Literal["reflect", "symmetric", "edge"]
PADDINGS: dict[str, Padding] = {"reflect": "reflect", "symmetric": "symmetric", "edge": "edge"}
POSITIVE_CLASS = "bacillus"
# cuDNN refuses tensors of 2**31 elements or more (CUDNN_STATUS_NOT_SUPPORTED). The largest activation of the
# paper's network is conv3's, 512 channels per output pixel of a tile: on the CUDA provider a tile (times the
# tiles per call) must stay below that. Measured on an H200 with the shipped model: 2010 px tiles ran, 2048 failed.
CUDNN_MAX_ELEMENTS = 2**31 - 1
WIDEST_LAYER_CHANNELS = 512


@dataclass(frozen=True)
class ModelMeta:
    """What the model file says about itself (ONNX metadata properties).

    Attributes:
        model_id: a name for this exact model (recipe and weight digest).
        receptive_field_px: side of the square input window one output pixel depends on.
        halo_px: pixels of context needed on each side of a tile: ``receptive_field_px // 2``.
        input_layout: ``NHWC``.
        input_scale: factor applied to 0..255 RGB before the network.
        input_padding: numpy ``np.pad`` mode used at the field's border (``reflect``).
        classes: output channel names, in order.
        raw: every metadata property as stored.
        normalisation: how each field is normalised before the network (``input_normalisation``); None feeds
            fields as they are.
    """

    model_id: str
    receptive_field_px: int
    halo_px: int
    input_layout: str
    input_scale: float
    input_padding: Padding
    classes: tuple[str, ...]
    raw: dict[str, str]
    normalisation: InputNormalisation | None = None

    @property
    def positive_index(self) -> int:
        return self.classes.index(POSITIVE_CLASS)

    @property
    def validation_metrics(self) -> dict[str, object]:
        try:
            value = json.loads(self.raw.get("validation_metrics", "{}"))
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    @staticmethod
    def from_properties(props: dict[str, str], source: str) -> ModelMeta:
        """Parse and check the metadata properties.

        Raises:
            ModelContractError: a required key is missing or a value does not make sense, naming both.
        """
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise ModelContractError(f"{source}: metadata lacks {', '.join(missing)}")
        try:
            receptive_field = int(props["receptive_field"])
            halo = int(props["halo"])
            scale = float(Fraction(props["input_scale"].strip()))
        except (ValueError, ZeroDivisionError) as exc:
            raise ModelContractError(f"{source}: bad numeric metadata ({exc})") from exc
        classes = tuple(c.strip() for c in props["classes"].split(","))
        if receptive_field < 1 or receptive_field % 2 == 0 or halo != receptive_field // 2:
            raise ModelContractError(
                f"{source}: receptive_field {receptive_field} and halo {halo} disagree (halo must be rf // 2)"
            )
        if props["input_layout"] != "NHWC":
            raise ModelContractError(f"{source}: input_layout {props['input_layout']!r}; only NHWC is supported")
        if POSITIVE_CLASS not in classes:
            raise ModelContractError(f"{source}: classes {classes} has no {POSITIVE_CLASS!r}")
        padding = PADDINGS.get(props.get("input_padding", "reflect"))
        if padding is None:
            raise ModelContractError(f"{source}: input_padding {props['input_padding']!r} is not a known padding")
        return ModelMeta(
            model_id=props.get("model_id", Path(source).stem),
            receptive_field_px=receptive_field,
            halo_px=halo,
            input_layout=props["input_layout"],
            input_scale=scale,
            input_padding=padding,
            classes=classes,
            raw=dict(props),
            normalisation=(
                InputNormalisation.from_json(props["input_normalisation"], source)
                if "input_normalisation" in props
                else None
            ),
        )


def _preload_pip_cuda() -> None:
    """Load CUDA/cuDNN from the ``nvidia-*`` pip packages when they are installed (``pip install .[gpu]``).

    A CUDA base image has them on the library path already and has no such packages: nothing to do there.
    """
    if importlib.util.find_spec("nvidia") is None or not hasattr(ort, "preload_dlls"):
        return
    try:
        ort.preload_dlls()
    except Exception as exc:  # an incomplete set of pip CUDA libraries: the session will say what is missing
        log.warning("could not preload the pip CUDA libraries: %s", exc)


class OnnxModel:
    """An ONNX Runtime session over the dense network, with its metadata.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers in order of preference; those this onnxruntime build lacks are dropped
            (logged once), and the CPU provider is always last.
        intra_op_threads: threads per operator; 0 lets ONNX Runtime choose (all cores).
        spinning: whether the session's threads spin for work after a call (ONNX Runtime's default). Sessions
            called in alternation many times per field (fast mode's cascade) turn it off: a pool that spins takes
            the cores from the next session's call (measured on 2 cores: the cascade's head at 49 against 93 GMAC/s).
    """

    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = ("CUDAExecutionProvider", "CPUExecutionProvider"),
        intra_op_threads: int = 0,
        spinning: bool = True,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelContractError(f"{path}: model file not found")
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available]
        dropped = [p for p in providers if p not in available]
        if dropped:
            log.warning(
                "execution providers not available in this onnxruntime, using %s instead of %s",
                wanted or ["CPUExecutionProvider"],
                list(providers),
            )
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")
        if "CUDAExecutionProvider" in wanted:
            _preload_pip_cuda()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ModelContractError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        self.meta = ModelMeta.from_properties(self.session.get_modelmeta().custom_metadata_map, str(path))
        self.input_name = self.session.get_inputs()[0].name
        self.providers = tuple(self.session.get_providers())
        self.path = path
        if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in self.providers:
            log.warning(
                "CUDA was asked for but could not be used (driver, CUDA 13 or cuDNN 9 missing?); running on %s",
                ", ".join(self.providers),
            )

    def largest_tile_px(self, batch_tiles: int = 1) -> int | None:
        """The largest tile side the provider in use runs with ``batch_tiles`` tiles per call, or None without a
        limit (the CPU provider): on CUDA, cuDNN's limit on a tensor's elements (:data:`CUDNN_MAX_ELEMENTS`)."""
        if self.providers[0] != "CUDAExecutionProvider":
            return None
        return math.isqrt(CUDNN_MAX_ELEMENTS // (WIDEST_LAYER_CHANNELS * max(1, batch_tiles)))

    def run(self, batch_nhwc: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities ``[n, h − 2·halo, w − 2·halo, classes]`` of a scaled, padded ``[n, h, w, 3]`` batch.

        Raises:
            InferenceFailed: ONNX Runtime failed on the batch (naming the provider and the batch's shape).
        """
        try:
            (output,) = self.session.run(None, {self.input_name: batch_nhwc})
        except Exception as exc:  # onnxruntime raises its own exception types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InferenceFailed(
                f"{self.path.name} on {self.providers[0]} failed on a batch of shape {list(batch_nhwc.shape)}: "
                f"{first_line[:400]}"
            ) from exc
        return np.asarray(output, dtype=np.float32)
