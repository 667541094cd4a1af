"""Field normalisation: every field mapped to one reference background before the network and the object filter.

Micrographs from different microscopes differ in illumination, white balance and stain intensity. The bright,
unstained part of a smear (glass, thin mucus) is the one thing every field has, so it is the reference: each
field's background is estimated robustly (a high percentile of each channel over a regular grid of its pixels)
and the field is mapped so that its background becomes the model's reference background.

Methods (``method`` in the model's ``input_normalisation`` metadata):

* ``background-gain``: a per-channel gain, ``out = rgb · reference / background``. In optical density
  (``OD = −ln(I / I₀)``) this is the exact change of the blank ``I₀`` from the field's background to the reference:
  the stain's optical density is left as it was.
* ``background-od``: the same, and the stain's optical density scaled so that the field's median stained-pixel
  density (pixels whose summed OD exceeds ``stained_od``) becomes ``reference_density`` (the factor bounded to
  ``[1 / max_density_gain, max_density_gain]``): pale stains are darkened, heavy ones lightened.

The estimate uses the whole field, once: a mosaic of tiles of a normalised field equals whole-field inference
exactly, at any tile size. A model without the metadata key is fed the field as it is. The one implementation is
this module: the service (:class:`service.engine.segmenter.Segmenter`) and training (patch sampling, calibration,
the object filter, the evaluation) both call it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from service.engine.errors import ModelContractError

VERSION = 1
Method = Literal["background-gain", "background-od"]
METHODS: dict[str, Method] = {"background-gain": "background-gain", "background-od": "background-od"}
# below this the background estimate is not glass but stain or a black frame: not a field to brighten 20-fold
MIN_BACKGROUND = 16.0


@dataclass(frozen=True)
class InputNormalisation:
    """How a field is normalised before the network (the model file's ``input_normalisation`` key).

    Attributes:
        method: ``background-gain`` or ``background-od`` (module docstring).
        reference: the background RGB (0..255) fields are mapped to.
        percentile: the per-channel percentile that estimates a field's background.
        sample_step: the estimate reads every ``sample_step``-th pixel in each direction.
        reference_density: ``background-od`` only: the median summed OD of stained pixels after normalisation.
        stained_od: ``background-od`` only: summed OD above which a pixel counts as stained.
        max_density_gain: ``background-od`` only: the largest factor the stain density is scaled by.
        version: the version of this definition.
    """

    method: Method
    reference: tuple[float, float, float]
    percentile: float = 90.0
    sample_step: int = 4
    reference_density: float = 0.0
    stained_od: float = 0.3
    max_density_gain: float = 2.0
    version: int = VERSION

    def background(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """The field's background RGB: the ``percentile`` of each channel over a grid of its pixels."""
        grid = rgb[:: self.sample_step, :: self.sample_step].reshape(-1, 3)
        if grid.size == 0:
            return np.asarray(self.reference, dtype=np.float32)
        estimate = np.percentile(grid, self.percentile, axis=0).astype(np.float32)
        return np.maximum(estimate, np.float32(MIN_BACKGROUND))

    def stain_density(self, rgb: npt.NDArray[np.uint8], background: npt.NDArray[np.float32]) -> float | None:
        """Median summed optical density of the stained pixels (on the estimate's grid); None when none are."""
        grid = rgb[:: self.sample_step, :: self.sample_step].reshape(-1, 3).astype(np.float32)
        od = -np.log(np.clip(np.maximum(grid, 1.0) / background, 1e-3, 1.0)).sum(axis=1)
        stained = od[od > self.stained_od]
        return float(np.median(stained)) if stained.size else None

    def apply(
        self, rgb: npt.NDArray[np.uint8], background: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.uint8]:
        """The normalised field, uint8 RGB of the same shape.

        Args:
            rgb: ``[y, x, 3]`` uint8 field.
            background: the background to map from; None estimates it from ``rgb`` (pass one for a crop or a
                patch of a larger field, estimated on that field).
        """
        bg = self.background(rgb) if background is None else np.asarray(background, dtype=np.float32)
        reference = np.asarray(self.reference, dtype=np.float32)
        if self.method == "background-gain":
            out = rgb.astype(np.float32) * (reference / bg)
        else:
            transmission = np.clip(np.maximum(rgb.astype(np.float32), 1.0) / bg, 1e-3, 1.0)
            density = self.stain_density(rgb, bg) if background is None else None
            gain = 1.0
            if density and self.reference_density > 0:
                gain = float(
                    np.clip(self.reference_density / density, 1 / self.max_density_gain, self.max_density_gain)
                )
            out = reference * np.power(transmission, np.float32(gain))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str, source: str) -> InputNormalisation:
        """Parse the metadata value.

        Raises:
            ModelContractError: not JSON, an unknown version or method, or a bad parameter, naming ``source``.
        """
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelContractError(f"{source}: input_normalisation is not JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise ModelContractError(f"{source}: input_normalisation must be a JSON object")
        if value.get("version") != VERSION:
            raise ModelContractError(
                f"{source}: input_normalisation version {value.get('version')!r}; this service reads {VERSION}"
            )
        method = METHODS.get(str(value.get("method")))
        if method is None:
            raise ModelContractError(
                f"{source}: input_normalisation method {value.get('method')!r}; known: {', '.join(METHODS)}"
            )
        try:
            reference = tuple(float(v) for v in value["reference"])
            norm = InputNormalisation(
                method=method,
                reference=(reference[0], reference[1], reference[2]),
                percentile=float(value.get("percentile", 90.0)),
                sample_step=int(value.get("sample_step", 4)),
                reference_density=float(value.get("reference_density", 0.0)),
                stained_od=float(value.get("stained_od", 0.3)),
                max_density_gain=float(value.get("max_density_gain", 2.0)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelContractError(f"{source}: input_normalisation has a bad parameter ({exc!r})") from exc
        if (
            len(reference) != 3
            or not all(0 < v <= 255 for v in reference)
            or not 50 <= norm.percentile <= 100
            or norm.sample_step < 1
            or norm.max_density_gain < 1
        ):
            raise ModelContractError(f"{source}: input_normalisation parameters out of range: {text}")
        return norm
