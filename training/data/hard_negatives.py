"""Pools of hard background pixels: what the paper's net confuses with bacilli when trained on random negatives.

Random background centres are almost all empty smear, so a net trained on them learns "not background" rather
than "red rod" and fires on dark debris, purple cells and blue specks. These pools point the sampler at them:

* ``ring``: background 3-10 px from a bacillus (sharpens the rod's edge);
* ``dark``: the darkest 1% of the field (debris, dirt, out-of-focus clumps);
* ``blue``: pixels markedly bluer than the field (b* 12 below its median: methylene-blue cells and specks);
* ``artifact``: pixels inside ``artifacts`` boxes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from training.data.annotations import BoxLabel, FieldAnnotation
from training.data.box_masks import PixelClass
from training.data.colour import srgb_to_lab

POOL_NAMES = ("ring", "dark", "blue", "artifact")


def negative_pools(
    image: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], annotation: FieldAnnotation
) -> dict[str, npt.NDArray[np.bool_]]:
    """The hard-negative pixel pools of one field (module docstring), each a ``[y, x]`` bool mask."""
    bacillus = labels == PixelClass.BACILLUS
    ring = ndi.binary_dilation(bacillus, iterations=10) & ~ndi.binary_dilation(bacillus, iterations=2)
    lab = srgb_to_lab(ndi.gaussian_filter(image.astype(np.float32), sigma=(1, 1, 0)))
    dark = lab[..., 0] < np.percentile(lab[::4, ::4, 0], 1)
    blue = lab[..., 2] < np.median(lab[::4, ::4, 2]) - 12
    artifact = np.zeros_like(bacillus)
    for box in annotation.boxes_with(BoxLabel.ARTIFACT):
        artifact[box.slices] = True
    return {"ring": ring, "dark": dark, "blue": blue, "artifact": artifact}
