"""Exact vs fast (fp32 cascade) vs fast int8 on whole fields of both labs, in one run. Prints JSON.

Per field: seconds in each mode (medians of repeats, every run listed), the coarse pass's seconds, the share of
refinement tiles run through the dense network, and what fast mode keeps against exact mode: kept bacilli found
(a fast kept object overlaps the exact one), missed and added, and the pixel agreement of the masks.

Fields: the ZNSM test split (2592×1944), the first ``--paper-fields`` of them resized to the paper's 2816×2112,
and UFAM's test slides (their negative fields, whose false bacilli are counted, and their positive centre patches,
whose recall at the centre is compared). ``--rss`` also measures each mode's peak RSS in a fresh process
serving ``--rss-fields`` full fields (its VmHWM), each process loaded and warmed for its mode as the service is;
``--rss-only`` measures that alone, and also a real HTTP server per mode.

    .venv/bin/python bench/fast_mode.py [--model models/<id>] [--repeats 3] [--exact-repeats 1] \
        [--rss] > bench/results/fast_mode_cpu_2cores.json
    .venv/bin/python bench/fast_mode.py --rss-only --rss-fields 2 > bench/results/fast_mode_rss_cpu_2cores.json
    .venv/bin/python bench/fast_mode.py --plot bench/results/fast_mode_cpu_2cores.json -o docs/figures/fast_mode.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.engine.loading import SegmenterConfig, load_segmenter  # noqa: E402
from service.engine.model_folder import open_folder  # noqa: E402
from service.engine.segmenter import Mode, Segmentation, Segmenter  # noqa: E402
from training.data.dataset import discover_fields, read_rgb  # noqa: E402
from training.data.split import DatasetSplit  # noqa: E402
from training.data.ufam import CENTRE_PX, patch_centre, read_positives, read_ufam  # noqa: E402
from training.paths import SHIPPED_DIR, UFAM_DDS1, UFAM_DDS1_SPLIT, ZNSM_MS2, ZNSM_MS2_SPLIT  # noqa: E402

CPU = ("CPUExecutionProvider",)
EIGHT = np.ones((3, 3), dtype=bool)
VARIANTS = (("exact", Mode.EXACT, "fp32"), ("fast_fp32", Mode.FAST, "fp32"), ("fast_int8", Mode.FAST, "int8"))


def segmenters(
    folder_path: Path, precisions: tuple[str, ...] = ("fp32", "int8"), warm: Mode | None = None
) -> dict[str, Segmenter]:
    """The model's segmenter with its fast networks of each precision, loaded and warmed as the service does
    (in ``warm`` mode; both modes when None)."""
    folder = open_folder(folder_path)
    made = {}
    for precision in precisions:
        paths = folder.fast_files(precision)
        if paths is None:
            raise SystemExit(f"{folder_path} has no {precision} fast networks: run python -m training fast")
        config = SegmenterConfig(
            folder.dense,
            providers=CPU,
            object_filter_path=folder.object_filter,
            tile_px=256,
            fast_paths=paths,
            fast_precision=precision,
        )
        made[precision] = load_segmenter(config)
        for mode in (warm,) if warm is not None else tuple(Mode):
            made[precision].warm_up(mode)
    return made


def timed(
    segmenter: Segmenter, rgb: np.ndarray, mode: Mode, repeats: int, **kwargs: Any
) -> tuple[Segmentation, list[float]]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = segmenter.segment(rgb, mode=mode, **kwargs)
        seconds.append(time.perf_counter() - started)
    assert result is not None
    return result, seconds


def compare(exact: Segmentation, fast: Segmentation) -> dict[str, Any]:
    """Kept bacilli found / missed / added by fast mode (object overlap), and the masks' pixel agreement."""
    exact_labels, n_exact = ndi.label(exact.objects, EIGHT)
    fast_labels, n_fast = ndi.label(fast.objects, EIGHT)
    found = len(set(np.unique(exact_labels[fast.objects])) - {0})
    matched_fast = len(set(np.unique(fast_labels[exact.objects])) - {0})
    both = int((exact.mask & fast.mask).sum())
    either = int((exact.mask | fast.mask).sum())
    return {
        "exact_kept": n_exact,
        "fast_kept": n_fast,
        "found": found,
        "missed": n_exact - found,
        "added": n_fast - matched_fast,
        "mask_pixels_differing": int((exact.mask != fast.mask).sum()),
        "mask_iou": both / either if either else 1.0,
        "max_abs_heatmap_diff_in_mask": float(np.abs(exact.heatmap - fast.heatmap)[exact.mask | fast.mask].max())
        if either
        else 0.0,
    }


def field_record(
    lab: str, name: str, rgb: np.ndarray, made: dict[str, Segmenter], args: argparse.Namespace
) -> dict[str, Any]:
    record: dict[str, Any] = {"lab": lab, "field": name, "size": f"{rgb.shape[1]}x{rgb.shape[0]}"}
    results = {}
    for key, mode, precision in VARIANTS:
        repeats = args.exact_repeats if mode is Mode.EXACT else args.repeats
        result, seconds = timed(made[precision], rgb, mode, repeats)
        results[key] = result
        entry: dict[str, Any] = {"seconds": statistics.median(seconds), "runs": [round(s, 3) for s in seconds]}
        entry["kept"] = len(result.bacilli)
        if mode is Mode.FAST:
            entry["coarse_seconds"] = result.coarse_seconds
            entry["refined_tiles"] = result.refined_tiles
            entry["tiles"] = result.tiles
            entry["refined_share"] = (result.refined_tiles or 0) / result.tiles
            entry["vs_exact"] = compare(results["exact"], result)
        record[key] = entry
    return record


def ufam_patches(made: dict[str, Segmenter], data: Path, split: Path, subset: str) -> dict[str, Any]:
    """Recall at UFAM's positive centres in each mode (patches with mirrored context, as `training labs`)."""
    part = read_ufam(data).of_slides(DatasetSplit.load(split).subset(subset))
    out: dict[str, Any] = {"positives": len(part.positives)}
    for key, mode, precision in VARIANTS:
        segmenter = made[precision]
        images, backgrounds = read_positives(part, segmenter.model.meta.normalisation)
        found, started = 0, time.perf_counter()
        for p in tqdm(part.positives, desc=f"UFAM patches {key}", unit="patch", file=sys.stderr):
            rgb = images[p.patch_id]
            result = segmenter.segment(rgb, background=backgrounds.get(p.field), mode=mode)
            cy, cx = patch_centre(rgb)
            window = result.objects[
                max(cy - CENTRE_PX, 0) : cy + CENTRE_PX + 1, max(cx - CENTRE_PX, 0) : cx + CENTRE_PX + 1
            ]
            found += bool(window.any())
        out[key] = {
            "found_at_centre": found,
            "recall_at_centre": found / max(len(part.positives), 1),
            "seconds": round(time.perf_counter() - started, 2),
        }
    return out


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for size in sorted({r["size"] for r in records}):
        for lab in sorted({r["lab"] for r in records if r["size"] == size}):
            rows = [r for r in records if r["size"] == size and r["lab"] == lab]
            entry: dict[str, Any] = {"fields": len(rows)}
            exact = [r["exact"]["seconds"] for r in rows]
            entry["exact_seconds_median"] = statistics.median(exact)
            for key in ("fast_fp32", "fast_int8"):
                seconds = [r[key]["seconds"] for r in rows]
                share = [r[key]["refined_share"] for r in rows]
                vs = [r[key]["vs_exact"] for r in rows]
                entry[key] = {
                    "seconds_median": statistics.median(seconds),
                    "seconds_min": min(seconds),
                    "seconds_max": max(seconds),
                    "speedup_median": statistics.median(e / s for e, s in zip(exact, seconds, strict=True)),
                    "coarse_seconds_median": statistics.median(r[key]["coarse_seconds"] for r in rows),
                    "refined_share_median": statistics.median(share),
                    "refined_share_max": max(share),
                    "exact_kept": sum(v["exact_kept"] for v in vs),
                    "found": sum(v["found"] for v in vs),
                    "missed": sum(v["missed"] for v in vs),
                    "added": sum(v["added"] for v in vs),
                    "mask_pixels_differing": sum(v["mask_pixels_differing"] for v in vs),
                }
            summary[f"{lab} {size}"] = entry
    return summary


def rss_probe(folder: Path, key: str, field: Path, fields: int) -> None:
    """In this fresh process: load the model as the service does, segment ``fields`` full fields, print peak RSS."""
    mode, precision = {k: (m, p) for k, m, p in VARIANTS}[key]
    made = segmenters(folder, (precision,), warm=mode)
    rgb = read_rgb(field)
    for _ in range(fields):
        made[precision].segment(rgb, mode=mode)
    # VmHWM, not getrusage's ru_maxrss: Linux carries a parent's high-water mark into a forked child's ru_maxrss
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"mode": key, "peak_rss_mb": round(peak_kb / 1024, 1), "fields": fields}))


def measure_rss_http(folder: Path, field: Path, fields: int) -> dict[str, float]:
    """Each mode's peak RSS (VmHWM) of a real ``python -m service serve`` answering ``POST /v1/analyze`` with the
    field ``fields`` times, one server per mode (TBSEG_MODE, TBSEG_FAST_PRECISION), on the models directory above
    ``folder``."""
    import tempfile

    import httpx

    from tests.service.e2e.conftest import start_server, stop_server

    memory = {}
    data = field.read_bytes()
    for key, mode, precision in VARIANTS:
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server(folder.parent, Path(tmp) / "server.log", mode=mode.value, fast_precision=precision)
            try:
                for _ in range(fields):
                    answer = httpx.post(f"{server.url}/v1/analyze", files={"file": (field.name, data)}, timeout=900)
                    answer.raise_for_status()
                    assert answer.json()["mode"] == mode.value
                status = Path(f"/proc/{server.process.pid}/status").read_text().splitlines()
                memory[key] = round(next(int(x.split()[1]) for x in status if x.startswith("VmHWM:")) / 1024, 1)
            finally:
                stop_server(server)
    return memory


def measure_rss(folder: Path, field: Path, fields: int) -> dict[str, float]:
    """Each mode's peak RSS in a fresh process of its own (:func:`rss_probe`)."""
    memory = {}
    for key, _, _ in VARIANTS:
        command = [sys.executable, __file__, "--model", str(folder), "--rss-probe", key, str(field)]
        command += ["--rss-fields", str(fields)]
        line = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        memory[key] = json.loads(line)["peak_rss_mb"]
    return memory


def plot(results: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results.read_text())
    rows = data["fields"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['lab']} {r['field']}\n{r['size']}" for r in rows]
    x = np.arange(len(rows))
    for offset, (key, colour) in zip(
        (-0.27, 0, 0.27), (("exact", "#888"), ("fast_fp32", "#3b75af"), ("fast_int8", "#d9822b")), strict=True
    ):
        left.bar(x + offset, [r[key]["seconds"] for r in rows], 0.27, label=key.replace("_", " "), color=colour)
    left.set_yscale("log")
    left.set_ylabel("seconds per field (log)")
    left.set_xticks(x, labels, rotation=90, fontsize=6)
    left.axhline(5, color="#d9822b", linestyle=":", linewidth=1)
    left.legend(fontsize=8)
    left.set_title(f"Whole fields, {data['machine']['cpus']} CPU cores")
    for lab, marker in (("ZNSM", "o"), ("UFAM negative", "s")):
        some = [r for r in rows if r["lab"] == lab]
        share = [100 * r["fast_int8"]["refined_share"] for r in some]
        for key, colour in (("fast_int8", "#d9822b"), ("fast_fp32", "#3b75af")):
            size = "5–6 MP" if lab == "ZNSM" else "1 MP"
            label = f"{key.replace('_', ' ')}, {lab} ({size})"
            right.scatter(share, [r[key]["seconds"] for r in some], label=label, color=colour, marker=marker)
    right.set_xlabel("refinement tiles run through the dense network (%)")
    right.set_ylabel("seconds per field")
    right.set_title("Fast mode's cost follows what the coarse pass sees")
    right.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--znsm", type=Path, default=ZNSM_MS2)
    parser.add_argument("--split", type=Path, default=ZNSM_MS2_SPLIT)
    parser.add_argument("--ufam", type=Path, default=UFAM_DDS1)
    parser.add_argument("--ufam-split", type=Path, default=UFAM_DDS1_SPLIT)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--repeats", type=int, default=3, help="runs per field in fast modes (median)")
    parser.add_argument("--exact-repeats", type=int, default=1, help="runs per field in exact mode (median)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many ZNSM fields (0: all)")
    parser.add_argument("--paper-fields", type=int, default=2, help="ZNSM fields also resized to 2816×2112")
    parser.add_argument("--no-ufam", action="store_true")
    parser.add_argument("--rss", action="store_true", help="peak RSS of each mode in a fresh process")
    parser.add_argument("--rss-fields", type=int, default=3)
    parser.add_argument("--rss-only", action="store_true", help="measure the peak RSS of each mode only")
    parser.add_argument("--rss-probe", nargs=2, metavar=("MODE", "FIELD"), help=argparse.SUPPRESS)
    parser.add_argument("--plot", type=Path, help="draw the figure of a results JSON instead of measuring")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs/figures/fast_mode.png")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.out)
        return
    if args.rss_probe:
        rss_probe(args.model, args.rss_probe[0], Path(args.rss_probe[1]), args.rss_fields)
        return
    split = DatasetSplit.load(args.split)
    files = {f.field_id: f for f in discover_fields(args.znsm)}
    ids = list(split.subset(args.subset))[: args.limit or None]
    if args.rss_only:
        field = files[ids[0]].image
        report = {
            "field": field.name,
            "fields_per_process": args.rss_fields,
            "peak_rss_mb": {
                "engine": measure_rss(args.model, field, args.rss_fields),
                "http_server": measure_rss_http(args.model, field, args.rss_fields),
            },
        }
        print(json.dumps(report, indent=1))
        return
    made = segmenters(args.model)
    records = []
    for fid in tqdm(ids, desc="ZNSM fields", unit="field", file=sys.stderr):
        rgb = read_rgb(files[fid].image)
        records.append(field_record("ZNSM", fid, rgb, made, args))
    for fid in ids[: args.paper_fields]:
        rgb = np.asarray(Image.fromarray(read_rgb(files[fid].image)).resize((2816, 2112), Image.Resampling.BILINEAR))
        records.append(field_record("ZNSM", f"{fid} resized", rgb, made, args))
    ufam: dict[str, Any] | None = None
    if not args.no_ufam and args.ufam.is_dir():
        part = read_ufam(args.ufam).of_slides(DatasetSplit.load(args.ufam_split).subset(args.subset))
        for f in tqdm(part.negatives, desc="UFAM negative fields", unit="field", file=sys.stderr):
            records.append(field_record("UFAM negative", f.field_id, read_rgb(f.path), made, args))
        ufam = ufam_patches(made, args.ufam, args.ufam_split, args.subset)
    memory = None
    if args.rss:
        probe_field = files[ids[0]].image
        memory = {}
        for key, _, _ in VARIANTS:
            command = [
                sys.executable,
                __file__,
                "--model",
                str(args.model),
                "--rss-probe",
                key,
                str(probe_field),
                "--rss-fields",
                str(args.rss_fields),
            ]
            line = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            memory[key] = json.loads(line)["peak_rss_mb"]
    fast = made["fp32"].fast_settings
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "affinity": len(os.sched_getaffinity(0)),
                },
                "model_id": made["fp32"].model.meta.model_id,
                "settings": {
                    "exact_tile_px": 256,
                    "fast_tile_px": fast.tile_px,
                    "screen_threshold": fast.screen_threshold,
                    "batch_tiles": fast.batch_tiles,
                    "threshold": made["fp32"].threshold,
                    "repeats": args.repeats,
                    "exact_repeats": args.exact_repeats,
                },
                "summary": summarise(records),
                "ufam_patches": ufam,
                "peak_rss_mb": memory,
                "fields": records,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
