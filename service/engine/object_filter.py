"""The object-level filter: which candidates are bacilli, and how many bacilli a candidate holds.

The paper's precision was 31% because every red speck became a detection; its future work was an object-level
classifier. Ours is a scikit-learn classifier trained on the measured candidates of the training fields
(``python -m training objects``) and shipped as ONNX (``object_filter.onnx`` in its model folder), so the service
runs it in ONNX Runtime without scikit-learn. Its metadata (:data:`REQUIRED_KEYS`) names the features in order, the
default score threshold, the dense model whose candidates it was trained on, and the area of one bacillus.

Bacilli in a cluster: touching rods form one candidate; it holds ``max(1, round(area / single_bacillus_area_px))``
bacilli, where ``single_bacillus_area_px`` is the median area of the training candidates that matched exactly
one single-bacillus box. A lone rod therefore counts 1 unless it is at least 1.5 times the typical area.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.engine.candidates import FEATURES
from service.engine.errors import ModelContractError

FORMAT = "tbseg-object-filter/1"
REQUIRED_KEYS = (
    "format",
    "filter_id",
    "features",
    "threshold",
    "dense_model_id",
    "candidate_threshold",
    "min_object_px",
    "single_bacillus_area_px",
)


@dataclass(frozen=True)
class FilterMeta:
    """What the filter's ONNX metadata says (see the module docstring)."""

    filter_id: str
    features: tuple[str, ...]
    threshold: float
    dense_model_id: str
    candidate_threshold: float
    min_object_px: int
    single_bacillus_area_px: float
    raw: dict[str, str]

    @property
    def summary(self) -> dict[str, object]:
        """What clients are told about it (``GET /v1/model``)."""
        keep = ("filter_id", "classifier", "threshold", "dense_model_id", "single_bacillus_area_px", "trained_on")
        out: dict[str, object] = {k: self.raw[k] for k in keep if k in self.raw}
        for key in ("cross_validation", "library"):
            if key in self.raw:
                out[key] = json.loads(self.raw[key])
        return out


class ObjectFilter:
    """The object classifier in ONNX Runtime (CPU: a few hundred candidates per field take milliseconds).

    Raises:
        ModelContractError: missing or unreadable file, missing metadata, or features this engine does not
            compute.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelContractError(f"{path}: object filter file not found")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ModelContractError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise ModelContractError(f"{path}: object filter metadata lacks {', '.join(missing)}")
        if props["format"] != FORMAT:
            raise ModelContractError(f"{path}: format {props['format']!r}, this engine reads {FORMAT!r}")
        features = tuple(props["features"].split(","))
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ModelContractError(f"{path}: the engine does not compute the features {', '.join(unknown)}")
        self.meta = FilterMeta(
            filter_id=props["filter_id"],
            features=features,
            threshold=float(props["threshold"]),
            dense_model_id=props["dense_model_id"],
            candidate_threshold=float(props["candidate_threshold"]),
            min_object_px=int(props["min_object_px"]),
            single_bacillus_area_px=float(props["single_bacillus_area_px"]),
            raw=props,
        )
        self._columns = [FEATURES.index(f) for f in features]
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self._probability_output = "probabilities" if "probabilities" in outputs else outputs[-1]
        self.path = path

    def scores(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """P(bacillus) of each candidate, from its ``[n, len(FEATURES)]`` measurements."""
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        x = np.ascontiguousarray(features[:, self._columns], dtype=np.float32)
        (probabilities,) = self.session.run([self._probability_output], {self.input_name: x})
        return np.asarray(probabilities, dtype=np.float32)[:, 1]

    def cut(self, requested: float | None = None) -> float:
        """The score a candidate needs to be kept: ``requested`` when given, else the filter's own threshold.

        The one place the default object threshold is decided (service, batch command, evaluation)."""
        return self.meta.threshold if requested is None else float(requested)

    def estimated_count(self, area_px: float) -> int:
        """Bacilli in a kept candidate of this area (module docstring)."""
        return max(1, int(np.floor(area_px / self.meta.single_bacillus_area_px + 0.5)))
