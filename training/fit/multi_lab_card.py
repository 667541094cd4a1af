"""Shipping a multi-lab run: copy it (and its object filter) into ``models/`` and write its card, by lab.

Unlike :func:`training.fit.shipping.ship`, which picks the run with the best test F1 among the paper line's recipes,
the run is named by whoever ships it (``python -m training ship --run RUN --reason TEXT``), and the reason (a
choice on validation figures) is written into the card: nothing here looks at a test split to decide.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from training.evaluation.labs import LabReport, lab_table
from training.evaluation.report_schema import EvaluationReport
from training.fit.shipping import CARD, SHIPPED_FILTER, SHIPPED_KERAS, SHIPPED_ONNX, _filter_section, _pct, _sha256
from training.fit.train_log import read_log
from training.model.export import read_metadata

log = logging.getLogger(__name__)

RUN_FILTER = "object_filter.onnx"


def _report(path: Path) -> EvaluationReport:
    report: EvaluationReport = json.loads(path.read_text(encoding="utf-8"))
    return report


def _lab_rows(report: EvaluationReport) -> list[LabReport]:
    by_lab = report.get("by_lab") or {}
    rows: list[LabReport] = by_lab.get("ufam", []) if isinstance(by_lab, dict) else []
    return rows


def write_multi_lab_card(
    run: Path, models: Path, evaluation: EvaluationReport, more_rows: list[LabReport], reason: str
) -> str:
    """The Markdown card of the multi-lab model in ``models``."""
    record = read_log(run)
    meta = read_metadata(models / SHIPPED_ONNX)
    recipe, wall = record["recipe"], record["wall_seconds"]
    znsm_patches = record["patches"]["train"] - (ufam["train_patches"] if (ufam := record.get("ufam")) else 0)
    norm = json.loads(meta["input_normalisation"]) if "input_normalisation" in meta else None
    methods = {m["name"]: m for m in evaluation["methods"]}
    filtered = next((m for m in evaluation["methods"] if m.get("filter_id")), None)
    raw = methods.get(next(iter(methods))) if methods else None
    lines = [
        f"# Model card: `{meta['model_id']}`",
        "",
        "The default model of the service: the paper's patch CNN (45×45×3 → P(background), P(bacillus)) trained on "
        "two labs' microscopes (ZNSM-iDB and UFAM DDS1) with every field normalised to one background, and its dense "
        "(strided-kernel) network exported to ONNX, which labels every pixel of a tile at once with results identical "
        "to patch-by-patch scanning (tested to 1e-5 in `tests/training/test_equivalence.py`).",
        "",
        f"Why this run: {reason}",
        "",
        "| file | what | sha256 |",
        "| --- | --- | --- |",
        f"| `{SHIPPED_KERAS}` | Keras 3 patch CNN (input: the normalised field's RGB/255, 45×45×3) | "
        f"`{_sha256(models / SHIPPED_KERAS)[:16]}…` |",
        f"| `{SHIPPED_ONNX}` | dense network, ONNX opset 17, NHWC float32, dynamic H×W | "
        f"`{_sha256(models / SHIPPED_ONNX)[:16]}…` |",
        f"| `{SHIPPED_FILTER}` | object filter (random forest in ONNX) for this model's candidates | "
        f"`{_sha256(models / SHIPPED_FILTER)[:16]}…` |",
        "",
        "ONNX metadata (read by the service): " + ", ".join(f"`{k}`" for k in sorted(meta)) + ".",
        f"Receptive field {meta['receptive_field']} px, halo {meta['halo']} px, input scale 1/255, mirror "
        f"(`{meta['input_padding']}`) padding at the field border, classes `{meta['classes']}`, built from commit "
        f"`{meta['created_from']}`.",
    ]
    if norm:
        lines += [
            "",
            f"Field normalisation (`input_normalisation`, `docs/model-format.md`): `{norm['method']}`, each field's "
            f"background (the {norm['percentile']:g}th percentile of each channel) mapped to RGB "
            f"({', '.join(f'{v:.1f}' for v in norm['reference'])}), the median background of the ZNSM training "
            "fields; applied by the service before the network and before the object filter's colour measurements.",
        ]
    lines += [
        "",
        "## Data",
        "",
        "- ZNSM-iDB (Shah et al. 2017, J. Med. Imag. 4(2) 027503), microscope MS-2, set 2: 35 fields, 2592×1944, "
        "expert boxes; bacillus pixels derived from the boxes. Split by field (`training/splits/znsm-ms2.json`): "
        f"train {', '.join(record['train_fields'])}; validation {', '.join(record['validation_fields'])}; "
        f"test {', '.join(evaluation['fields'])}.",
    ]
    if ufam:
        test_slides = ", ".join(_lab_rows(evaluation)[0]["slides"]) if _lab_rows(evaluation) else "?"
        lines.append(
            "- UFAM TBImages DDS1 (Costa et al., doi:10.25452/figshare.plus.27209667.v1): another microscope and "
            "camera, paler stain; negative fields (1000×990, no bacillus) and 40×40 patches centred on expert points. "
            f"Split by slide (`training/splits/ufam-dds1.json`): train {', '.join(ufam['train_slides'])}; validation "
            f"{', '.join(ufam['validation_slides'])}; test {test_slides}"
            f". Slides S09–S15 are held by others for evaluation we do not see."
        )
    lines += [
        "",
        "## Recipe and training",
        "",
        f"Recipe `{recipe['name']}`: {recipe.get('summary') or ''}.",
        f"{recipe['positives_per_field']} bacillus + {recipe['negatives_per_field']} background patches per ZNSM "
        f"field (hard-negative shares {recipe['hard_negative_shares'] or 'none'})"
        + (
            f"; {recipe.get('ufam_positive_draws')} patches per UFAM positive and "
            f"{recipe.get('ufam_negatives_per_field')} per UFAM negative field (half among its reddest pixels): "
            f"{ufam['train_patches']} UFAM training patches beside {znsm_patches} "
            "ZNSM ones"
            if ufam
            else ""
        )
        + ". Lab augmentation (`training/fit/lab_augment.py`): zoom 0.7–1.45, any rotation, flips, stain density "
        "0.6–1.5 and hue ±15% in optical density, illumination gain and gradient, blur, noise, JPEG 30–90. "
        f"SGD from learning rate {recipe['learning_rate']} (decay {recipe['decay_per_epoch']} per epoch), batch "
        f"{recipe['batch_size']}, {record['epochs_run']} epochs"
        + (
            f", started from `{record['initialised_from']['path']}` (sha256 "
            f"`{record['initialised_from']['sha256'][:16]}…`, the paper line's calibrated ZNSM model)"
            if "initialised_from" in record
            else ""
        )
        + f"; epoch {record['best_epoch']} kept (lowest validation loss on both labs' validation patches: "
        f"{float(record['validation_metrics']['loss']):.4f}, accuracy "
        f"{100 * float(record['validation_metrics']['accuracy']):.2f}%).",
        f"Wall time on {record['machine']['cpus']} CPU cores: {wall['sampling']} s sampling, {wall['training']} s "
        f"training ({record['machine']['platform']}, TensorFlow {record['machine']['tensorflow']}).",
    ]
    if "calibration" in record:
        c = record["calibration"]
        lines += [
            "",
            f"Calibrated on the ZNSM validation fields' pixels (Platt, folded into conv4; UFAM has points, not pixel "
            f"labels): P = σ({c['scale']:.3f}·z {c['shift']:+.3f}); pixel NLL {c['validation_pixel_nll_before']:.4f} "
            f"→ {c['validation_pixel_nll_after']:.4f}, ECE {c['validation_pixel_ece_before']:.4f} → "
            f"{c['validation_pixel_ece_after']:.4f}.",
        ]
    lines += ["", "## Results by lab (test slides and fields, never used to train, calibrate or choose)", ""]
    if raw and filtered:
        rb, fb = raw["bacillus"], filtered["bacillus"]
        lines += [
            f"ZNSM-iDB test split ({len(evaluation['fields'])} fields): bacillus-level recall / precision / F1 "
            f"{_pct(rb['recall'])} / {_pct(rb['precision'])} / {_pct(rb['f1'])}% without the filter, "
            f"{_pct(fb['recall'])} / {_pct(fb['precision'])} / {_pct(fb['f1'])}% with it; mean absolute count "
            f"error per field {raw['mean_abs_count_error']:.1f} → {filtered['mean_abs_count_error']:.1f}.",
            "",
        ]
    rows = _lab_rows(evaluation) + more_rows
    if rows:
        lines += [
            "UFAM DDS1 test slides: recall at the experts' points (a kept bacillus within 3 px of the point), false "
            "bacilli per negative field, and the grade a 100-field negative slide would get (Poisson, 95% range). "
            "Rows below the first two are the leave-one-lab-out and earlier models on the same slides:",
            "",
            *lab_table(rows),
        ]
    lines += _filter_section(models, None)
    lines += [
        "",
        "## Known limits",
        "",
        "- Two labs' microscopes. Other microscopes, phone cameras and magnifications remain untested here; the lab "
        "augmentation and the normalisation widen, but do not replace, real variety. Fine-tuning on a lab's own "
        "fields is the next step (issue 13).",
        "- UFAM positives are 40×40 crops: judged at the centre with mirrored context, and their background for the "
        "normalisation is estimated on the crops of their field pooled; whole fields would be judged better.",
        "- UFAM test: 2 slides (479 points, 8 negative fields); ZNSM test: 10 fields. A negative-field rate from 8 "
        "fields is a rough figure: its Poisson range is shown.",
        "- Ground-truth pixels are derived from loose boxes; calibration uses ZNSM pixels only.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make install",
        ".venv/bin/python -m training train --recipe augmented -o runs/augmented",
        ".venv/bin/python -m training calibrate --run runs/augmented -o runs/calibrated",
        ".venv/bin/python -m training split --data ../shared/data/ufam-dds1 -o /tmp/ufam.json  # = training/splits/",
        ".venv/bin/python -m training train --recipe multi-lab --init runs/calibrated/model.keras -o runs/multi-lab",
        ".venv/bin/python -m training calibrate --run runs/multi-lab -o runs/multi-lab-calibrated",
        ".venv/bin/python -m training export --run runs/multi-lab-calibrated",
        ".venv/bin/python -m training objects --model runs/multi-lab-calibrated/model.onnx \\",
        "    --ufam ../shared/data/ufam-dds1 -o runs/multi-lab-calibrated/object_filter.onnx",
        ".venv/bin/python -m training evaluate --model runs/multi-lab-calibrated/model.onnx \\",
        "    --object-filter runs/multi-lab-calibrated/object_filter.onnx -o runs/multi-lab-calibrated/eval-test",
        ".venv/bin/python -m training ship --run runs/multi-lab-calibrated --reason '...' \\",
        "    --evaluation runs/multi-lab-calibrated/eval-test/report.json --lab-rows runs/labs-test/report.json",
        "```",
        "",
    ]
    return "\n".join(lines)


def ship_run(run: Path, models: Path, evaluation_json: Path, lab_rows: list[Path], reason: str) -> Path:
    """Copy ``run``'s patch CNN, dense model and object filter into ``models`` and write the card."""
    for name in ("model.keras", "model.onnx", RUN_FILTER):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name}: a run to ship needs model.keras, model.onnx and {RUN_FILTER}")
    if not reason.strip():
        raise ValueError("say why this run is shipped (--reason), from validation figures")
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "model.keras", models / SHIPPED_KERAS)
    shutil.copy(run / "model.onnx", models / SHIPPED_ONNX)
    shutil.copy(run / RUN_FILTER, models / SHIPPED_FILTER)
    evaluation = _report(evaluation_json)
    more = [row for path in lab_rows for row in _lab_rows(_report(path))]
    shipped_ids = {r["model_id"] for r in _lab_rows(evaluation)}
    more = [r for r in more if r["model_id"] not in shipped_ids]
    (models / CARD).write_text(write_multi_lab_card(run, models, evaluation, more, reason), encoding="utf-8")
    log.info("shipped %s into %s", run, models)
    return run
