"""Shipping a model: pick the best run by bacillus-level F1 on the test split, copy it into its model folder
``models/<model_id>/`` (:mod:`service.engine.model_folder`), make it the default, write its card."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from service.engine.model_folder import CARD_MD, DEFAULT_MARKER, DENSE_ONNX, OBJECT_FILTER_ONNX, PATCH_KERAS
from training.evaluation.lab_card import limit_phrase, read_by_lab, restore_by_lab_section
from training.evaluation.report_schema import EvaluationReport
from training.fit.train_log import read_log
from training.model.export import read_metadata
from training.model.fast_variants import restore_card_section

log = logging.getLogger(__name__)

SHIPPED_KERAS = PATCH_KERAS
SHIPPED_ONNX = DENSE_ONNX
SHIPPED_FILTER = OBJECT_FILTER_ONNX
CARD = CARD_MD


def _report(run: Path, subset: str = "test") -> EvaluationReport:
    path = run / f"eval-{subset}" / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: evaluate the run first (python -m training evaluate ...)")
    report: EvaluationReport = json.loads(path.read_text(encoding="utf-8"))
    return report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"


def choose_run(runs: list[Path]) -> Path:
    """The run with the highest bacillus-level F1 on the test split (first listed on a tie)."""
    return max(runs, key=lambda run: _report(run)["bacillus"]["f1"])


def _comparison_table(runs: list[Path], shipped: Path) -> str:
    rows = [
        "| recipe | bacillus recall | bacillus precision | bacillus F1 | mean abs count error | pixel recall | "
        "pixel precision | pixel F1 | pixel accuracy | training wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        r = _report(run)
        b, p = r["bacillus"], r["pixel"]
        name = str(r["recipe"]) + (" (shipped)" if run == shipped else "")
        rows.append(
            f"| {name} | {_pct(b['recall'])} | {_pct(b['precision'])} | {_pct(b['f1'])} | "
            f"{r['mean_abs_count_error']:.1f} | {_pct(p['recall'])} | {_pct(p['precision'])} | "
            f"{_pct(p['f1'])} | {_pct(p['accuracy'])} | {read_log(run)['wall_seconds']['training']} |"
        )
    return "\n".join(rows)


def _filter_section(models: Path, evaluation: EvaluationReport | None) -> list[str]:
    path = models / SHIPPED_FILTER
    if not path.is_file():
        return []
    meta = read_metadata(path)
    cv = json.loads(meta["cross_validation"])
    library = json.loads(meta["library"])
    lines = [
        "",
        f"## Object filter: `{meta['filter_id']}`",
        "",
        f"`{SHIPPED_FILTER}` (`{_sha256(path)[:16]}…`): a scikit-learn {library['scikit-learn']} random forest "
        f"(300 trees, class-balanced) over {len(meta['features'].split(','))} measurements of each candidate "
        "(shape, the network's probabilities, stain colour against a ring around it), exported to ONNX with "
        f"skl2onnx {library['skl2onnx']}; the service runs it in ONNX Runtime. Candidates: components of "
        f"P(bacillus) > {meta['candidate_threshold']} with ≥ {meta['min_object_px']} px of "
        f"`{meta['dense_model_id']}`. Trained on {meta['trained_on']}; labels from the boxes by the evaluation's "
        f"rules: {cv['bacillus_candidates']} bacillus and {cv['debris_candidates']} debris candidates.",
        "",
        f"Threshold {meta['threshold']}: the highest that keeps {100 * cv['target_recall']:.0f}% of the bacillus "
        f"candidates in {cv['folds']}-fold cross-validation grouped by field (out of fold: ROC AUC {cv['roc_auc']}, "
        f"candidate recall {100 * cv['recall_at_threshold']:.1f}%, "
        f"precision {100 * cv['precision_at_threshold']:.1f}%, "
        f"{100 * cv['debris_rejected_at_threshold']:.1f}% of debris rejected). One bacillus ≈ "
        f"{meta['single_bacillus_area_px']} px (median area of candidates in exactly one single-bacillus box); a kept "
        "object counts max(1, round(area / that)) bacilli.",
    ]
    if evaluation:
        methods = {m["name"]: m for m in evaluation["methods"]}
        raw = methods.get("shipped model")
        kept = next((m for m in methods.values() if m.get("filter_id") == meta["filter_id"]), None)
        if raw and kept:
            rb, kb = raw["bacillus"], kept["bacillus"]
            lines += [
                "",
                "On the test split (same rules): bacillus-level recall / precision / F1 "
                f"{_pct(rb['recall'])} / {_pct(rb['precision'])} / {_pct(rb['f1'])}% without the filter, "
                f"{_pct(kb['recall'])} / {_pct(kb['precision'])} / {_pct(kb['f1'])}% with it "
                f"({int(kb['false_positives'])} false objects instead of {int(rb['false_positives'])}); mean absolute "
                f"count error per field {raw['mean_abs_count_error']:.1f} → "
                f"{kept['mean_abs_count_error']:.1f}.",
            ]
    return lines


def write_card(
    runs: list[Path],
    shipped: Path,
    models: Path,
    bench: dict[str, Any] | None,
    evaluation: EvaluationReport | None = None,
) -> str:
    """The Markdown model card of the shipped run, with every run's test results beside it."""
    record, report = read_log(shipped), _report(shipped)
    meta = read_metadata(models / SHIPPED_ONNX)
    recipe = record["recipe"]
    wall = record["wall_seconds"]
    b, p = report["bacillus"], report["pixel"]
    rules = report["object_rules"]
    lines = [
        f"# Model card: `{meta['model_id']}`",
        "",
        "The default model of the service: the paper's patch CNN (45×45×3 → P(background), P(bacillus)) trained on "
        "ZNSM-iDB, and its dense (strided-kernel) network exported to ONNX, which labels every pixel of a tile at "
        "once with results identical to patch-by-patch scanning (tested to 1e-5 in "
        "`tests/training/test_equivalence.py`).",
        "",
        "| file | what | sha256 |",
        "| --- | --- | --- |",
        f"| `{SHIPPED_KERAS}` | Keras 3 patch CNN (input RGB/255, 45×45×3) | "
        f"`{_sha256(models / SHIPPED_KERAS)[:16]}…` |",
        f"| `{SHIPPED_ONNX}` | dense network, ONNX opset {meta.get('opset', '17')}, NHWC float32, dynamic H×W | "
        f"`{_sha256(models / SHIPPED_ONNX)[:16]}…` |",
        "",
        "ONNX metadata (read by the service): " + ", ".join(f"`{k}`" for k in sorted(meta)) + ".",
        f"Receptive field {meta['receptive_field']} px, halo {meta['halo']} px, input scale 1/255, mirror "
        f"(`{meta['input_padding']}`) padding at the field border, classes `{meta['classes']}`, "
        f"built from commit `{meta['created_from']}`.",
        "",
        "## Data",
        "",
        "ZNSM-iDB (Shah et al. 2017, J. Med. Imag. 4(2) 027503), microscope MS-2, set 2: 35 bright-field ZN fields, "
        "2592×1944, 100× oil, with expert box annotations. Bacillus pixel masks are derived from the boxes "
        "(`training/data/box_masks.py`), so pixel-level figures are against approximate masks.",
        f"Split by field (`training/splits/znsm-ms2.json`): train {', '.join(record['train_fields'])}; "
        f"validation {', '.join(record['validation_fields'])}; test {', '.join(report['fields'])}.",
        "",
        "## Recipe and training",
        "",
        f"Recipe `{recipe['name']}`: {recipe.get('summary') or ''}.",
        f"{recipe['positives_per_field']} bacillus + {recipe['negatives_per_field']} background patches per field "
        f"(hard-negative shares {recipe['hard_negative_shares'] or 'none'}), rotations/flips "
        f"{'on' if recipe['rotate_flip'] else 'off'}, colour jitter {'on' if recipe['colour_jitter'] else 'off'}; "
        f"SGD (momentum {recipe['momentum']}) from learning rate {recipe['learning_rate']} with decay "
        f"{recipe['decay_per_epoch']} per epoch, batch {recipe['batch_size']}, L2 {recipe['l2']} on conv3/conv4, "
        f"{record['epochs_run']} epochs; the epoch with the lowest validation loss is kept: epoch "
        f"{record['best_epoch']} (validation patch loss {float(record['validation_metrics']['loss']):.4f}, "
        f"accuracy {100 * float(record['validation_metrics']['accuracy']):.2f}%).",
        f"Wall time on {record['machine']['cpus']} CPU cores: {wall['sampling']} s sampling patches, "
        f"{wall['training']} s training ({record['machine']['platform']}, TensorFlow "
        f"{record['machine']['tensorflow']}).",
    ]
    if "calibration" in record:
        c = record["calibration"]
        lines += [
            "",
            f"Calibrated on the validation fields' pixels (Platt, folded into conv4): P = σ({c['scale']:.3f}·z "
            f"{c['shift']:+.3f}); pixel NLL {c['validation_pixel_nll_before']:.4f} → "
            f"{c['validation_pixel_nll_after']:.4f}, ECE {c['validation_pixel_ece_before']:.4f} → "
            f"{c['validation_pixel_ece_after']:.4f}.",
        ]
    lines += [
        "",
        "## Results on the test split (10 fields, never seen in training or validation)",
        "",
        f"Shipped model at P(bacillus) > {report['threshold']}: bacillus-level recall {_pct(b['recall'])}%, "
        f"precision {_pct(b['precision'])}%, F1 {_pct(b['f1'])}% ({int(b['found'])} of {int(b['boxes'])} "
        f"boxes found; {int(b['true_positives'])} true and {int(b['false_positives'])} false objects); "
        f"pixel-level recall {_pct(p['recall'])}%, precision {_pct(p['precision'])}%, F1 {_pct(p['f1'])}%, "
        f"accuracy {_pct(p['accuracy'])}%.",
        "",
        "Every recipe, evaluated the same way (percent; the shipped one is the best bacillus-level F1; training wall "
        "time on 2 cores, longer where other jobs shared them):",
        "",
        _comparison_table(runs, shipped),
        "",
        f"Bacillus-level rules: objects are 8-connected components of ≥ {rules['min_object_px']} px; a box is found "
        f"with ≥ {rules['min_hit_px']} predicted px inside; an object is true when ≥ "
        f"{int(100 * float(rules['inside_share']))}% of it lies in bacillus/cluster boxes, ignored when that much "
        "lies in `unclassified red structures` boxes, false otherwise (artifacts included). Count error = "
        "objects − bacillus/cluster boxes per field.",
        *_filter_section(models, evaluation),
    ]
    if bench:
        whole = bench.get("whole_field", {})
        lines += [
            "",
            "## Speed (CPU, measured here)",
            "",
            f"Dense network, whole {whole.get('field_hw')} field through the engine's exact {whole.get('tile_px')} px "
            f"tiles: {whole.get('seconds')} s, {whole.get('megapixels_per_second')} MP/s on {bench['cpus']} cores "
            f"({bench['runtime']}). Patch-by-patch scanning of a {bench['crop']} crop in the same runtime: "
            f"{bench['patch_by_patch_seconds']} s versus {bench['dense_seconds']} s dense, {bench['speedup']}× "
            f"(multiply-add ratio {bench['multiply_add_ratio']}×; the paper: 44× on a GTX 1080 Ti).",
        ]
    lines += [
        "",
        "## Known limits",
        "",
        f"- Trained on 22 fields of one microscope and camera (ZNSM-iDB MS-2); {limit_phrase(read_by_lab(models))}. "
        "Colour jitter (where the recipe uses it) widens, but does not replace, real variety.",
        "- Ground-truth pixels are derived from loose boxes; rods under dark debris or blue nuclei are partly "
        "missing from them, and unannotated red rods in the fields are treated as background.",
        "- A pixel classifier: touching rods merge into one object (the filter estimates their number from the "
        "area) and red specks become candidates; the object filter removes most of them, not all.",
        "- The test split has only 10 fields (128 boxes): differences of a few percent between recipes are within "
        "noise.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make install",
        *[
            f".venv/bin/python -m training train --recipe {name} -o runs/{name}"
            for name in ("paper", "hard-negatives", "augmented")
        ],
        ".venv/bin/python -m training calibrate --run runs/augmented -o runs/calibrated",
        "for r in paper hard-negatives augmented calibrated; do",
        "  .venv/bin/python -m training export --run runs/$r",
        "  .venv/bin/python -m training evaluate --model runs/$r/model.onnx -o runs/$r/eval-test",
        "done",
        ".venv/bin/python -m training ship --runs runs/paper runs/hard-negatives runs/augmented runs/calibrated",
        f".venv/bin/python -m training objects -o models/{meta['model_id']}/object_filter.onnx",
        ".venv/bin/python -m training evaluate -o out/eval-test --variants runs/*/model.onnx",
        ".venv/bin/python -m training ship --card-only --evaluation out/eval-test/report.json \\",
        "    --runs runs/paper runs/hard-negatives runs/augmented runs/calibrated",
        "```",
        "",
    ]
    return "\n".join(lines)


def ship(
    runs: list[Path],
    models: Path,
    bench_json: Path | None = None,
    evaluation_json: Path | None = None,
    card_only: bool = False,
) -> Path:
    """Copy the best run (:func:`choose_run`) into its model folder ``models/<model_id>/``, name it the default
    (``models/DEFAULT_MODEL``) and write its card; returns the run shipped.

    With ``card_only`` the model files are left as they are and only the card is rewritten (e.g. after the object
    filter was trained, with ``evaluation_json`` from ``python -m training evaluate``)."""
    best = choose_run(runs)
    folder = models / read_metadata(best / "model.onnx")["model_id"]
    folder.mkdir(parents=True, exist_ok=True)
    if not card_only:
        shutil.copy(best / "model.keras", folder / SHIPPED_KERAS)
        shutil.copy(best / "model.onnx", folder / SHIPPED_ONNX)
        (models / DEFAULT_MARKER).write_text(folder.name + "\n", encoding="utf-8")
    bench = json.loads(bench_json.read_text(encoding="utf-8")) if bench_json else None
    evaluation = json.loads(evaluation_json.read_text(encoding="utf-8")) if evaluation_json else None
    (folder / CARD).write_text(write_card(runs, best, folder, bench, evaluation), encoding="utf-8")
    if not restore_card_section(folder):
        log.info("%s has no fast-mode networks yet: python -m training fast --model %s", folder, folder)
    restore_by_lab_section(folder)
    log.info("%s %s into %s", "card of" if card_only else "shipped", best, folder)
    return best
