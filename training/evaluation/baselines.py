"""A colour-threshold baseline in the spirit of Costa Filho et al. (2012): red minus green, one global cut.

Ziehl-Neelsen stains acid-fast bacilli carbol-fuchsin red on a methylene-blue background, so the red channel
minus the green one is high on bacilli and low almost everywhere else. The baseline labels a pixel bacillus
when ``R − G > threshold``; the single threshold is the one that maximises pixel F1 over the training fields
(chosen from exact per-value histograms, so every integer threshold is tried).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.data.box_masks import PixelClass

VALUES = np.arange(-255, 256)  # every value R − G can take


def red_minus_green(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """``R − G`` per pixel of a ``[y, x, 3]`` uint8 RGB image, in [−255, 255]."""
    return image[..., 0].astype(np.float32) - image[..., 1].astype(np.float32)


@dataclass(frozen=True)
class ThresholdFit:
    """The chosen cut and how it did on the fields it was chosen on."""

    threshold: float
    precision: float
    recall: float
    f1: float
    fields: int


def value_histograms(
    score: npt.NDArray[np.float32], labels: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Counts of bacillus and of background pixels at each value of :data:`VALUES` (IGNORE left out)."""
    index = np.clip(np.rint(score).astype(np.int64) + 255, 0, len(VALUES) - 1)
    bacillus = np.bincount(index[labels == PixelClass.BACILLUS], minlength=len(VALUES))
    background = np.bincount(index[labels == PixelClass.BACKGROUND], minlength=len(VALUES))
    return bacillus, background


def fit_threshold(histograms: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]) -> ThresholdFit:
    """The cut ``score > t`` maximising pixel F1 over the summed per-field histograms."""
    bacillus, background, fields = np.zeros(len(VALUES), np.int64), np.zeros(len(VALUES), np.int64), 0
    for b, g in histograms:
        bacillus, background, fields = bacillus + b, background + g, fields + 1
    # predicted = score > VALUES[i]: the pixels with values above index i
    tp = bacillus[::-1].cumsum()[::-1] - bacillus
    fp = background[::-1].cumsum()[::-1] - background
    positives = bacillus.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = tp / max(int(positives), 1)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    return ThresholdFit(float(VALUES[best]), float(precision[best]), float(recall[best]), float(f1[best]), fields)
