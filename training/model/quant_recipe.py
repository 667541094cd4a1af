"""What an int8 copy keeps in float (a light module: the CLI reads its default without loading ONNX)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuantRecipe:
    """How a network is quantised beyond the fixed settings (QDQ, int8 weights per channel, uint8 activations per
    tensor, min-max ranges, softmax in float).

    Attributes:
        float_convs: convolutions kept in float, by their patch CNN layer (``conv1`` … ``conv4``): their inputs are
            dequantised and their outputs quantised again for the next layer.
    """

    float_convs: tuple[str, ...] = ()

    def describe(self) -> str:
        """The nodes kept in float, in words (the card and ``fast_variants.json``)."""
        return ", ".join(("Softmax", *self.float_convs))


DEFAULT_RECIPE = QuantRecipe(float_convs=("conv1",))
