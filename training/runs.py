"""Run folders: what ``train`` writes, and the steps that turn a run into a shippable model.

A run folder holds ``model.keras`` (the patch CNN), ``train_log.json`` and ``curves.png``; ``export_run``
adds ``model.onnx`` (the dense network with metadata) and ``calibrate_run`` makes a new run folder from an
existing one with Platt calibration folded into the weights.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import keras
import numpy as np
from scipy.special import expit

from service.engine.model import OnnxModel
from training.box_masks import MaskDerivation, PixelClass, label_map
from training.calibration import expected_calibration_error, fit_platt, fold_into_last_conv, logit
from training.dataset import discover_fields, read_annotation, read_rgb
from training.evaluate import cached_heatmap
from training.export import export_onnx  # imports training.to_fcn: DilatedMaxPool2D is registered
from training.recipes import get_recipe
from training.sampling import field_rng
from training.split import DatasetSplit

log = logging.getLogger(__name__)


def read_log(run: Path) -> dict[str, object]:
    return json.loads((run / "train_log.json").read_text(encoding="utf-8"))


def export_run(run: Path, out: Path | None = None) -> Path:
    """Export ``run/model.keras`` to ``run/model.onnx`` (or ``out``) with metadata from its training log."""
    record = read_log(run)
    model = keras.models.load_model(run / "model.keras")
    recipe = record["recipe"]["name"]  # type: ignore[index]
    metrics = {"patch_" + k: round(float(v), 5) for k, v in record["validation_metrics"].items()}  # type: ignore[union-attr]
    metrics["best_epoch"] = record["best_epoch"]  # type: ignore[assignment]
    if "calibration" in record:
        metrics["calibration"] = record["calibration"]  # type: ignore[assignment]
    data = Path(str(record["data"])).name
    training_data = (
        f"{data}: fields {' '.join(record['train_fields'])} (train), "  # type: ignore[arg-type]
        f"{' '.join(record['validation_fields'])} (validation); split {Path(str(record['split'])).name}"
    )
    path = out or run / "model.onnx"
    export_onnx(model, path, recipe=recipe, training_data=training_data, validation_metrics=metrics)
    log.info("exported %s", path)
    return path


def calibrate_run(
    run: Path, out: Path, data: Path, split_path: Path, background_share: float = 0.05, seed: int = 0
) -> dict[str, float]:
    """Fit Platt calibration on the validation fields' pixels and write a calibrated run folder to ``out``.

    All bacillus pixels and a seeded ``background_share`` of background pixels (weighted back up) of the
    validation fields are used; IGNORE pixels are not.
    """
    onnx_path = run / "model.onnx"
    if not onnx_path.is_file():
        export_run(run)
    model = OnnxModel(onnx_path, providers=("CPUExecutionProvider",))
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    zs, ys, ws = [], [], []
    for fid in split.validation:
        annotation, image = read_annotation(fields[fid]), read_rgb(fields[fid].image)
        labels = label_map(annotation, image, MaskDerivation()).ravel()
        heatmap, _ = cached_heatmap(model, fid, image)
        rng = field_rng(seed, fid)
        bacillus = labels == PixelClass.BACILLUS
        keep = bacillus | ((labels == PixelClass.BACKGROUND) & (rng.random(labels.size) < background_share))
        zs.append(logit(heatmap.ravel()[keep]))
        ys.append(bacillus[keep])
        ws.append(np.where(bacillus[keep], 1.0, 1.0 / background_share))
    z, y, w = np.concatenate(zs), np.concatenate(ys), np.concatenate(ws)
    fit = fit_platt(z, y, w)
    summary = {
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
    record["recipe"] = {
        **record["recipe"],
        "name": "calibrated",
        "calibrate": True,  # type: ignore[dict-item]
        "summary": get_recipe("calibrated").summary,
    }
    record["calibrated_from"] = str(run)
    record["calibration"] = {k: round(v, 6) for k, v in summary.items()}
    (out / "train_log.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
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
