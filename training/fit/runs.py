"""Run folders: what ``train`` writes, and the steps that turn a run into a shippable model.

A run folder holds ``model.keras`` (the patch CNN), ``train_log.json`` and ``curves.png``; ``export_run``
adds ``model.onnx`` (the dense network with metadata) and ``calibrate_run`` makes a new run folder from an
existing one with Platt calibration folded into the weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt
from scipy.special import expit

from service.engine.model import OnnxModel
from service.engine.segmenter import Segmenter
from training.data.annotations import BoxLabel, point_box
from training.data.box_masks import MaskDerivation, PixelClass, derive_bacillus_mask, label_map
from training.data.dataset import FieldFiles, discover_fields, read_annotation, read_rgb
from training.data.sampling import field_rng
from training.data.split import DatasetSplit
from training.data.ufam import UfamSet, patch_centre, photographed, read_positives, read_ufam
from training.evaluation.heatmap_cache import cached_heatmap
from training.fit.recipes import get_recipe
from training.fit.train_log import Calibration, read_log, write_log
from training.model.calibration import expected_calibration_error, fit_platt, fold_into_last_conv, logit
from training.model.export import export_onnx  # imports training.model.to_fcn: DilatedMaxPool2D is registered
from training.paths import DEFAULT_CACHE

log = logging.getLogger(__name__)


def export_run(run: Path, out: Path | None = None) -> Path:
    """Export ``run/model.keras`` to ``run/model.onnx`` (or ``out``) with metadata from its training log."""
    record = read_log(run)
    model = keras.models.load_model(run / "model.keras")
    recipe = record["recipe"]["name"]
    metrics: dict[str, object] = {"patch_" + k: round(float(v), 5) for k, v in record["validation_metrics"].items()}
    metrics["best_epoch"] = record["best_epoch"]
    if "calibration" in record:
        metrics["calibration"] = record["calibration"]
    data = Path(record["data"]).name
    training_data = (
        f"{data}: fields {' '.join(record['train_fields'])} (train), "
        f"{' '.join(record['validation_fields'])} (validation); split {Path(record['split']).name}"
    )
    if "ufam" in record:
        ufam = record["ufam"]
        training_data += (
            f"; {Path(ufam['data']).name}: slides {' '.join(ufam['train_slides'])} (train), "
            f"{' '.join(ufam['validation_slides'])} (validation); split {Path(ufam['split']).name}"
        )
    extra = {"input_normalisation": record["input_normalisation"]} if "input_normalisation" in record else None
    path = out or run / "model.onnx"
    export_onnx(model, path, recipe=recipe, training_data=training_data, validation_metrics=metrics, extra=extra)
    log.info("exported %s", path)
    return path


def ufam_pixels(
    model: OnnxModel, part: UfamSet, background_share: float, seed: int, cache: Path = DEFAULT_CACHE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Logits and labels of the pixels of a part of the UFAM set (e.g. its validation slides) for calibration.

    Bacillus pixels: in each positive patch, those derived from the stain's colour around the expert's point (a
    :data:`~training.data.annotations.POINT_BOX_PX` box, as for a points CSV), else the 2 × 2 centre pixels.
    Background pixels: a seeded ``background_share`` of each negative field's pixels, off the interpolated rows.
    """
    segmenter = Segmenter(model)
    images, backgrounds = read_positives(part, model.meta.normalisation)
    zs, ys = [], []
    for p in part.positives:
        rgb = images[p.patch_id]
        cy, cx = patch_centre(rgb)
        mask, _ = derive_bacillus_mask(rgb, (point_box(BoxLabel.SINGLE_BACILLUS, cx, cy),))
        if not mask.any():
            mask[cy - 1 : cy + 1, cx - 1 : cx + 1] = True
        heatmap = segmenter.heatmap(rgb, backgrounds.get(p.field))
        zs.append(logit(heatmap[mask]))
        ys.append(np.ones(int(mask.sum()), dtype=bool))
    for f in part.negatives:
        rgb = read_rgb(f.path)
        heatmap, _ = cached_heatmap(model, f.field_id, rgb, cache)
        rng = field_rng(seed, f.field_id)
        keep = (rng.random(heatmap.shape) < background_share) & photographed(heatmap.shape)
        zs.append(logit(heatmap[keep]))
        ys.append(np.zeros(int(keep.sum()), dtype=bool))
    return np.concatenate(zs), np.concatenate(ys)


def field_pixels(
    model: OnnxModel, fields: list[FieldFiles], background_share: float, seed: int, cache: Path = DEFAULT_CACHE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Logits, labels and weights of annotated fields' pixels for calibration: every bacillus pixel, and a seeded
    ``background_share`` of the background pixels weighted by its inverse (so the fields' real bacillus share is
    kept); IGNORE pixels are left out. Heatmaps come through the engine (normalised as the model declares)."""
    zs, ys, ws = [], [], []
    for files in fields:
        annotation, image = read_annotation(files), read_rgb(files.image)
        labels = label_map(annotation, image, MaskDerivation()).ravel()
        heatmap, _ = cached_heatmap(model, files.field_id, image, cache)
        rng = field_rng(seed, files.field_id)
        bacillus = labels == PixelClass.BACILLUS
        keep = bacillus | ((labels == PixelClass.BACKGROUND) & (rng.random(labels.size) < background_share))
        zs.append(logit(heatmap.ravel()[keep]))
        ys.append(bacillus[keep])
        ws.append(np.where(bacillus[keep], 1.0, 1.0 / background_share))
    return np.concatenate(zs), np.concatenate(ys), np.concatenate(ws)


def calibrate_run(
    run: Path,
    out: Path,
    data: Path,
    split_path: Path,
    background_share: float = 0.05,
    seed: int = 0,
    ufam: Path | None = None,
    ufam_split: Path | None = None,
    cache: Path = DEFAULT_CACHE,
) -> Calibration:
    """Fit Platt calibration on the validation fields' pixels and write a calibrated run folder to ``out``.

    Heatmaps come through the engine, so a model that declares a field normalisation is calibrated on normalised
    fields. All bacillus pixels and a seeded ``background_share`` of background pixels (weighted back up) of the
    ZNSM validation fields are used; IGNORE pixels are not. With ``ufam`` the UFAM validation slides' pixels
    (:func:`ufam_pixels`) join them, weighted so that each lab carries the same total weight in each class: a
    calibration to one lab's stain alone pushes a paler lab's bacilli under the cut.
    """
    onnx_path = run / "model.onnx"
    if not onnx_path.is_file():
        export_run(run)
    model = OnnxModel(onnx_path, providers=("CPUExecutionProvider",))
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    z, y, w = field_pixels(model, [fields[fid] for fid in split.validation], background_share, seed, cache)
    if ufam is not None:
        if ufam_split is None:
            raise ValueError("calibrating on UFAM needs its split by slide")
        part = read_ufam(ufam).of_slides(DatasetSplit.load(ufam_split).validation)
        uz, uy = ufam_pixels(model, part, background_share, seed, cache)
        uw = np.where(uy, w[y].sum() / max(int(uy.sum()), 1), w[~y].sum() / max(int((~uy).sum()), 1))
        z, y, w = np.concatenate([z, uz]), np.concatenate([y, uy]), np.concatenate([w, uw])
    fit = fit_platt(z, y, w)
    summary: Calibration = {
        "scale": fit.scale,
        "shift": fit.shift,
        "validation_pixel_nll_before": fit.nll_before,
        "validation_pixel_nll_after": fit.nll_after,
        "validation_pixel_ece_before": expected_calibration_error(expit(z), y, w),
        "validation_pixel_ece_after": expected_calibration_error(expit(fit.scale * z + fit.shift), y, w),
    }
    calibrated = fold_into_last_conv(keras.models.load_model(run / "model.keras"), fit)
    out.mkdir(parents=True, exist_ok=True)
    calibrated.save(out / "model.keras")
    record = read_log(run)
    base = record["recipe"]["name"]
    # the paper line's calibrated run keeps its name ("calibrated"); any other recipe gets a suffix
    name = "calibrated" if base == "augmented" else f"{base}-calibrated"
    described = get_recipe("calibrated").summary if base == "augmented" else f"{record['recipe']['summary']} + Platt"
    record["recipe"] = {**record["recipe"], "name": name, "calibrate": True, "summary": described}
    record["calibrated_from"] = str(run)
    record["calibrated_on"] = "ZNSM validation fields" + (
        f" + {ufam.name} validation slides ({' '.join(DatasetSplit.load(ufam_split).validation)}), "
        "labs weighted equally"
        if ufam is not None and ufam_split is not None
        else ""
    )
    record["calibration"] = {
        "scale": round(fit.scale, 6),
        "shift": round(fit.shift, 6),
        "validation_pixel_nll_before": round(fit.nll_before, 6),
        "validation_pixel_nll_after": round(fit.nll_after, 6),
        "validation_pixel_ece_before": round(summary["validation_pixel_ece_before"], 6),
        "validation_pixel_ece_after": round(summary["validation_pixel_ece_after"], 6),
    }
    write_log(out, record)
    if (run / "curves.png").is_file():
        shutil.copy(run / "curves.png", out / "curves.png")
    log.info(
        "calibration: P = σ(%.4f·z %+.4f); validation pixel NLL %.4f → %.4f, ECE %.4f → %.4f",
        fit.scale,
        fit.shift,
        fit.nll_before,
        fit.nll_after,
        summary["validation_pixel_ece_before"],
        summary["validation_pixel_ece_after"],
    )
    return summary
