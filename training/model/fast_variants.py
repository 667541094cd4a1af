"""Fast mode's networks, written into a model folder beside its dense network.

* ``bacilli_coarse.onnx``: the coarse (strided) pass of the same weights (:mod:`training.model.coarse`);
* the cascade's parts and ``cascade.json``: both networks cut at their last convolution (:mod:`training.model.cascade`);
* ``bacilli_dense.int8.onnx`` and ``bacilli_coarse.int8.onnx``: static int8 copies of both networks, QDQ format
  (ONNX Runtime's quantiser), weights int8 per output channel, activations uint8 per tensor, ranges calibrated
  (min-max) on windows of real training fields, half of them centred on what the network calls bacillus (random
  windows alone leave the highest activations out of range: measured, P off by up to 0.68). The softmax stays in
  float, and so does the first convolution by default (:data:`DEFAULT_RECIPE`): measured layer by layer
  (``bench/int8_calibration.py``, ``docs/results.md`` section 15), its int8 weights alone move P by up to 0.5 on
  another lab's fields, while each other layer in int8 moves it by ≤ 0.07.

How close int8 is to fp32 is measured on other fields' windows and written to ``fast_variants.json`` and the
model card. The dense network itself is not touched: exact mode stays what it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from tqdm import tqdm

from service.engine.cascade import CASCADE_JSON
from service.engine.model import OnnxModel
from service.engine.model_folder import (
    CARD_MD,
    COARSE_INT8_ONNX,
    COARSE_ONNX,
    DENSE_INT8_ONNX,
    DENSE_ONNX,
    PATCH_KERAS,
)
from training.model.card_sections import replace_section
from training.model.cascade import CASCADE_CHECK_FIELDS, write_cascade
from training.model.export import set_metadata
from training.model.qdq import described, static_int8
from training.model.quant_recipe import DEFAULT_RECIPE, QuantRecipe

log = logging.getLogger(__name__)

FAST_JSON = "fast_variants.json"
CARD_SECTION = "## Fast mode"
REFINE_TILE_PX = 64  # the dense windows calibrated: the service's default refinement tile
COARSE_BLOCK_POINTS = 64  # the coarse windows calibrated: the service's block of grid points


@dataclass(frozen=True)
class Agreement:
    """int8 against fp32 on the same windows.

    Attributes:
        network: ``dense`` or ``coarse``.
        windows: windows compared.
        pixels: outputs compared.
        max_abs_diff: largest |P(int8) − P(fp32)|.
        mean_abs_diff: mean |P(int8) − P(fp32)|.
        mask_agreement: share of outputs on the same side of 0.5.
        mask_iou: intersection over union of the two masks ``P > 0.5``.
    """

    network: str
    windows: int
    pixels: int
    max_abs_diff: float
    mean_abs_diff: float
    mask_agreement: float
    mask_iou: float


class _Windows:
    """An ONNX Runtime calibration data reader over a list of input windows."""

    def __init__(self, windows: Sequence[npt.NDArray[np.float32]]) -> None:
        self._iter: Iterator[npt.NDArray[np.float32]] = iter(windows)

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        window = next(self._iter, None)
        return None if window is None else {"image": window[None]}


def _prepared(dense: OnnxModel, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """The field as the networks read it: normalised, mirror-padded by the halo, scaled."""
    meta = dense.meta
    field = rgb if meta.normalisation is None else meta.normalisation.apply(rgb)
    halo = meta.halo_px
    padded = np.pad(field, ((halo, halo), (halo, halo), (0, 0)), mode=meta.input_padding).astype(np.float32)
    return padded * np.float32(meta.input_scale)


def sample_windows(
    dense: OnnxModel,
    coarse: OnnxModel,
    fields: Sequence[npt.NDArray[np.uint8]],
    per_field: int,
    seed: int,
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
    """Windows of the prepared fields for each network: dense ones (a refinement tile and its halo) and coarse ones
    (a block of grid points); half random, half centred on grid points the coarse network calls bacillus."""
    rng = np.random.default_rng(seed)
    halo, channel = dense.meta.halo_px, dense.meta.positive_index
    stride = int(coarse.meta.raw["output_stride"])
    sides = {"dense": REFINE_TILE_PX + 2 * halo, "coarse": stride * (COARSE_BLOCK_POINTS - 1) + 2 * halo + 1}
    out: dict[str, list[npt.NDArray[np.float32]]] = {"dense": [], "coarse": []}
    for rgb in tqdm(fields, desc="calibration windows", unit="field"):
        padded = _prepared(dense, rgb)
        grid = coarse.run(padded[None])[0, :, :, channel]
        hot_y, hot_x = np.nonzero(grid > 0.5)
        for name, side in sides.items():
            side_y, side_x = min(side, padded.shape[0]), min(side, padded.shape[1])
            for k in range(per_field):
                if k % 2 and hot_y.size:  # centred on a grid point called bacillus (padded coordinates: + halo)
                    pick = rng.integers(hot_y.size)
                    cy, cx = stride * int(hot_y[pick]) + halo, stride * int(hot_x[pick]) + halo
                else:
                    cy, cx = int(rng.integers(padded.shape[0])), int(rng.integers(padded.shape[1]))
                y = min(max(cy - side_y // 2, 0), padded.shape[0] - side_y)
                x = min(max(cx - side_x // 2, 0), padded.shape[1] - side_x)
                out[name].append(np.ascontiguousarray(padded[y : y + side_y, x : x + side_x]))
    return out["dense"], out["coarse"]


def int8_metadata(
    fp32: OnnxModel, dense_model_id: str, variant: str, quantisation: dict[str, object]
) -> dict[str, str]:
    """The ONNX metadata of an int8 copy of ``fp32``: its own, with the copy's id, variant and precision."""
    return {
        **fp32.meta.raw,
        "model_id": f"{fp32.meta.model_id}-int8",
        "dense_model_id": dense_model_id,
        "variant": variant,
        "precision": "int8",
        "quantisation": json.dumps(quantisation, sort_keys=True),
    }


def quantise(
    source: Path,
    target: Path,
    windows: Sequence[npt.NDArray[np.float32]],
    metadata: dict[str, str],
    recipe: QuantRecipe = DEFAULT_RECIPE,
) -> None:
    """Write the static int8 (QDQ) copy of ``source`` to ``target``, calibrated on ``windows``, with
    ``metadata`` as its ONNX metadata, the softmax and ``recipe``'s convolutions in float."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        float_only = [
            n.name
            for n in onnx.load(str(prepared)).graph.node
            if n.op_type == "Softmax" or any(f"/{conv}_" in n.name for conv in recipe.float_convs)
        ]
        static_int8(prepared, target, _Windows(windows), float_only)
    finally:
        prepared.unlink(missing_ok=True)
    proto = onnx.load(str(target))
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))


def agreement(network: str, fp32: OnnxModel, int8: OnnxModel, windows: Sequence[npt.NDArray[np.float32]]) -> Agreement:
    """How close ``int8`` is to ``fp32`` on ``windows`` (P(bacillus) of every output)."""
    channel = fp32.meta.positive_index
    diffs, same, both, either, pixels = [], 0, 0, 0, 0
    for window in windows:
        a = fp32.run(window[None])[0, :, :, channel]
        b = int8.run(window[None])[0, :, :, channel]
        diffs.append(np.abs(a - b).ravel())
        same += int(((a > 0.5) == (b > 0.5)).sum())
        both += int(((a > 0.5) & (b > 0.5)).sum())
        either += int(((a > 0.5) | (b > 0.5)).sum())
        pixels += a.size
    diff = np.concatenate(diffs)
    return Agreement(
        network=network,
        windows=len(windows),
        pixels=pixels,
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        mask_agreement=same / pixels,
        mask_iou=both / either if either else 1.0,
    )


def _card_section(
    stride: int, report: dict[str, object], agreements: list[Agreement], cascade: dict[str, Any] | None = None
) -> str:
    settings = report.get("quantisation")
    float_nodes = settings.get("float_nodes", "Softmax") if isinstance(settings, dict) else "Softmax"
    lines = [
        CARD_SECTION,
        "",
        f"Files for `mode=fast` (written by `python -m training fast`): `{COARSE_ONNX}` (the patch CNN at its own "
        f"strides: P every {stride} px, equal to the dense network there), `{DENSE_INT8_ONNX}` and "
        f"`{COARSE_INT8_ONNX}` (static int8, QDQ, per-channel weights, in float: {float_nodes}; min-max ranges "
        f"calibrated on {report['calibration']}).",
        "",
        f"int8 against fp32 on {report['check']}:",
        "",
        "| network | windows | outputs | max abs ΔP | mean abs ΔP | same side of 0.5 | mask IoU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in agreements:
        lines.append(
            f"| {a.network} | {a.windows} | {a.pixels:,} | {a.max_abs_diff:.4f} | {a.mean_abs_diff:.5f} | "
            f"{100 * a.mask_agreement:.3f}% | {100 * a.mask_iou:.2f}% |"
        )
    detections = report.get("detections")
    if isinstance(detections, dict):
        lines += [
            "",
            f"Fast against exact mode, whole fields ({detections['source']}): kept bacilli of exact mode found / "
            "missed / added by fast mode, and mask pixels that differ.",
            "",
            "| fields | exact kept | fast fp32 | differing px | fast int8 | differing px | s exact / fp32 / int8 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, row in detections["summary"].items():
            f, i = row["fast_fp32"], row["fast_int8"]
            lines.append(
                f"| {name} ({row['fields']}) | {f['exact_kept']} | {f['found']} / {f['missed']} / {f['added']} | "
                f"{f['mask_pixels_differing']:,} | {i['found']} / {i['missed']} / {i['added']} | "
                f"{i['mask_pixels_differing']:,} | {row['exact_seconds_median']:.1f} / {f['seconds_median']:.2f} / "
                f"{i['seconds_median']:.2f} |"
            )
        patches = detections.get("ufam_patches")
        if isinstance(patches, dict):
            found = ", ".join(
                f"{k.replace('_', ' ')} {patches[k]['found_at_centre']}" for k in ("exact", "fast_fp32", "fast_int8")
            )
            lines += ["", f"UFAM positive centre patches ({patches['positives']}), centres found: {found}."]
    on_test = report.get("int8_on_test")
    if isinstance(on_test, dict):
        verdict = "meets" if on_test["meets"] else "does not meet"
        lines += [
            "",
            f"int8 against fp32 in fast mode (itself exact mode's result on every test field), every lab's test data "
            f"({on_test['source']}): fp32's kept bacilli found / missed / added by int8. int8 {verdict} the rule "
            "for the default precision (≥ 99% found and ≤ 1% added on every lab)"
            + (
                ": it may be made the default (`TBSEG_FAST_PRECISION=int8`)."
                if on_test["meets"]
                else ", so the default stays fp32 and int8 is opt-in (`TBSEG_FAST_PRECISION=int8`)."
            ),
            "",
            "| test data | fp32 kept | int8: found / missed / added | s fp32 / int8 (median) |",
            "| --- | --- | --- | --- |",
        ]
        for name, row in on_test["detections"].items():
            seconds = row.get("seconds_median", {})
            timing = f"{seconds['fp32']:.2f} / {seconds['int8']:.2f}" if seconds else ""
            count = f"{row['fields']} fields" if "fields" in row else f"{row['patches']} patches, at the centre"
            lines.append(
                f"| {name} ({count}) | {row['reference_kept']} | {row['found']} / {row['missed']} / {row['added']} | "
                f"{timing} |"
            )
    lines += _cascade_lines(cascade)
    lines += ["", "Detections and timings of fast against exact mode: `docs/results.md`, sections 10 and 15.", ""]
    return "\n".join(lines)


def _cascade_lines(cascade: dict[str, Any] | None) -> list[str]:
    """The card's paragraph on the folder's cascade (``cascade.json``) and how its coarse grid is read."""
    if cascade is None:
        return []
    rule = cascade["rule"]
    lines = [
        "",
        f"The cascade (`{CASCADE_JSON}`, `python -m training cascade`): both fp32 networks cut at their last "
        f"convolution; fast mode on the CPU reads it first at one grid point in {rule['first_step']} of each row and "
        f"column (more around P > {rule['first_threshold']}) and at one pixel in {rule['refine_step']} of a refined "
        f"tile (more around P > {rule['refine_threshold']}).",
    ]
    screening = cascade.get("screening") or {}
    if screening.get("chosen"):
        lines[-1] += (
            f" Its coarse grid and each refined tile's first level are read by int8 copies ("
            f"{', '.join(f'`{f}`' for f in screening['files'].values())}), and fast mode screens at its threshold less "
            f"the margin **{screening['margin']}** (first threshold {screening['first_threshold']}, lattice threshold "
            f"{screening['refine_threshold']}); "
            + (
                "every output that can reach the mask is read in fp32. "
                if screening.get("fp32_band_logit") is None
                else "the pixels near a hot lattice point are read in int8 too, and again in fp32 where int8's logit "
                f"lies within **{screening['fp32_band_logit']}** of the mask threshold's or the object filter's sure "
                "level's: the mask and the pixels counted as sure are fp32's, and the other P values inside the mask "
                "are int8's (largest error measured "
                + ", ".join(
                    f"{lab} {row['max_abs_diff']:.3f}" for lab, row in screening["band_check"]["by_lab"].items()
                )
                + "). "
            )
            + "This is the default (`TBSEG_FAST_SCREENING=fp32` reads the grid in fp32). The margin is at least twice "
            "int8's largest error, chosen on validation fields of every lab: "
            + ", ".join(
                f"{lab} ({row['fields']} fields, largest error {row['max_abs_diff_relevant']:.3f})"
                for lab, row in screening["check"]["by_lab"].items()
            )
            + "."
        )
    elif screening:
        lines[-1] += " No margin covered int8's error on the validation fields: its coarse grid is read in fp32."
    return lines


def _write_card(folder: Path, section: str) -> None:
    replace_section(folder / CARD_MD, CARD_SECTION, section)


def add_detections(folder: Path, bench_json: Path) -> None:
    """Record the whole-field comparison of ``bench/fast_mode.py`` (its JSON) in ``fast_variants.json`` and the
    card.

    Raises:
        FileNotFoundError: the folder has no fast networks yet.
        ValueError: the benchmark measured another model.
    """
    path = folder / FAST_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: write the fast networks first (python -m training fast)")
    report = json.loads(path.read_text(encoding="utf-8"))
    bench = json.loads(bench_json.read_text(encoding="utf-8"))
    if bench.get("model_id") != report["dense_model_id"]:
        raise ValueError(f"{bench_json} measured {bench.get('model_id')}, not {report['dense_model_id']}")
    machine = bench.get("machine", {})
    source = f"{bench_json.name}, {machine.get('cpus', '?')} CPU cores"
    if str(bench.get("bench", "")).startswith("int8_calibration"):  # bench/int8_calibration.py --shipped-on-test
        if bench.get("quantisation") != report["quantisation"] or bench.get("calibration") != report["calibration"]:
            raise ValueError(f"{bench_json} measured other int8 networks than {folder}'s (quantisation, calibration)")
        report["int8_on_test"] = {"source": source, "detections": bench["detections"], "meets": bench["meets"]}
    else:  # bench/fast_mode.py
        report["detections"] = {
            "source": source,
            "summary": bench["summary"],
            "ufam_patches": bench.get("ufam_patches"),
        }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    restore_card_section(folder)


def restore_card_section(folder: Path) -> bool:
    """Write the card's fast-mode section again from ``fast_variants.json`` (after the card was rewritten, e.g. by
    ``ship --card-only``); False when the folder has no fast networks."""
    path = folder / FAST_JSON
    if not path.is_file():
        return False
    report = json.loads(path.read_text(encoding="utf-8"))
    agreements = [Agreement(**a) for a in report["agreement"]]
    _write_card(folder, _card_section(int(report["output_stride"]), report, agreements, _cascade_json(folder)))
    return True


def _cascade_json(folder: Path) -> dict[str, Any] | None:
    path = folder / CASCADE_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_coarse_network(folder: Path) -> Path:
    """Export the coarse network of ``folder``'s patch CNN (``bacilli_coarse.onnx``, fp32) into ``folder``: with it
    the folder reads fields in fast mode.

    Raises:
        FileNotFoundError: the folder lacks its patch CNN or dense network.
    """
    import keras

    from training.model.coarse import coarse_onnx
    from training.model.export import read_metadata

    for needed in (PATCH_KERAS, DENSE_ONNX):
        if not (folder / needed).is_file():
            raise FileNotFoundError(f"{folder / needed}: needed to write the fast variants")
    dense_meta = read_metadata(folder / DENSE_ONNX)
    proto = coarse_onnx(keras.models.load_model(folder / PATCH_KERAS), dense_meta)
    onnx.save(proto, str(folder / COARSE_ONNX))
    return folder / COARSE_ONNX


def write_fast_variants(
    folder: Path,
    calibration: Sequence[npt.NDArray[np.uint8]],
    check: Sequence[npt.NDArray[np.uint8]],
    *,
    calibration_source: str,
    check_source: str,
    windows_per_field: int = 8,
    seed: int = 0,
    recipe: QuantRecipe = DEFAULT_RECIPE,
) -> dict[str, object]:
    """Export the coarse network of ``folder``'s patch CNN, int8 copies of both networks and the cascade's parts
    (:mod:`training.model.cascade`) into ``folder``.

    Args:
        folder: a model folder with ``patch_cnn.keras`` and ``bacilli_dense.onnx``.
        calibration: fields (uint8 RGB, as read) whose windows calibrate the int8 ranges.
        check: other fields on which int8 is compared with fp32.
        calibration_source, check_source: what those fields are, in words, for the card.
        windows_per_field: windows of each network per field.
        seed: the windows' seed.
        recipe: what stays in float (default: the softmax and the first convolution).

    Returns:
        what was written to ``fast_variants.json``.

    Raises:
        FileNotFoundError: the folder lacks its patch CNN or dense network.
    """
    write_coarse_network(folder)
    cpu = ("CPUExecutionProvider",)
    dense, coarse = OnnxModel(folder / DENSE_ONNX, providers=cpu), OnnxModel(folder / COARSE_ONNX, providers=cpu)
    stride = int(coarse.meta.raw["output_stride"])
    dense_windows, coarse_windows = sample_windows(dense, coarse, calibration, windows_per_field, seed)
    settings = described(recipe.describe())
    pairs = (
        (DENSE_ONNX, DENSE_INT8_ONNX, dense_windows, dense),
        (COARSE_ONNX, COARSE_INT8_ONNX, coarse_windows, coarse),
    )
    for source, target, windows, fp32 in pairs:
        variant = "coarse" if source == COARSE_ONNX else "dense"
        metadata = int8_metadata(fp32, dense.meta.model_id, variant, {**settings, "windows": len(windows)})
        log.info("quantising %s on %d windows", source, len(windows))
        quantise(folder / source, folder / target, windows, metadata, recipe)
    check_dense, check_coarse = sample_windows(dense, coarse, check, windows_per_field, seed + 1)
    agreements = [
        agreement("dense", dense, OnnxModel(folder / DENSE_INT8_ONNX, providers=cpu), check_dense),
        agreement("coarse", coarse, OnnxModel(folder / COARSE_INT8_ONNX, providers=cpu), check_coarse),
    ]
    report: dict[str, object] = {
        "dense_model_id": dense.meta.model_id,
        "output_stride": stride,
        "output_phase": coarse.meta.raw["output_phase"],
        "files": [COARSE_ONNX, DENSE_INT8_ONNX, COARSE_INT8_ONNX],
        "quantisation": settings,
        "calibration": f"{len(dense_windows)} + {len(coarse_windows)} windows of {calibration_source}",
        "check": f"{len(check_dense)} + {len(check_coarse)} windows of {check_source}",
        "agreement": [asdict(a) for a in agreements],
    }
    (folder / FAST_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _write_card(folder, _card_section(stride, report, agreements))
    # the cascade is cut from the networks just written, and checked against them on a few of the check fields
    write_cascade(folder, list(check[:CASCADE_CHECK_FIELDS]), check_source)
    restore_card_section(folder)
    for a in agreements:
        log.info(
            "int8 %s: max |ΔP| %.4f, same side of 0.5 %.3f%%, mask IoU %.2f%%",
            a.network,
            a.max_abs_diff,
            100 * a.mask_agreement,
            100 * a.mask_iou,
        )
    return report
