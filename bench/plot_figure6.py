"""Draw Figure 6 from the benches' JSON: seconds per field each way, and achieved GFLOP/s against the peak.

    .venv/bin/python bench/plot_figure6.py bench/results/dense_vs_patch_cpu_2cores.json \\
        bench/results/service_cpu_2cores.json -o docs/figures/figure6_cpu_2cores.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dense_vs_patch", type=Path, help="JSON printed by bench/dense_vs_patch.py")
    parser.add_argument("service", type=Path, nargs="?", help="JSON printed by bench/service_bench.py")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    bench = json.loads(args.dense_vs_patch.read_text())
    service = json.loads(args.service.read_text()) if args.service else {"runs": []}

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]})
    labels, values, colours = [], [], []
    paper = bench["paper"]
    labels += ["paper: patch by patch\n(GTX 1080 Ti, 2816×2112)", "paper: dense\n(GTX 1080 Ti, 2816×2112)"]
    values += [paper["patch_by_patch_s"], paper["dense_s"]]
    colours += ["#bbbbbb", "#888888"]
    for name, times in bench["per_field_extrapolated_from_crop"].items():
        labels += [f"patch by patch\n{name} (from crop)", f"dense\n{name} (from crop)"]
        values += [times["patch_by_patch_s"], times["dense_s"]]
        colours += ["#d95f02", "#1b9e77"]
    for run in service["runs"]:
        labels += [f"engine {run['field']}\ntile {run['tile_px']}", f"HTTP {run['field']}\ntile {run['tile_px']}"]
        values += [run["engine_s"], run["http_s"]]
        colours += ["#7570b3", "#e7298a"]
    bars = left.barh(range(len(values)), values, color=colours)
    left.bar_label(bars, labels=[f"{v:.3g} s" for v in values], padding=3, fontsize=8)
    left.set_yticks(range(len(values)), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("seconds per field (log scale)")
    left.set_title(
        f"Patch by patch vs dense: ×{bench['speedup_median_of_paired_runs']} here "
        f"({bench['runtime']}), ×{paper['speedup']} in the paper"
    )

    achieved = bench["achieved_gflops"]
    peak = bench["matmul_peak_gflops"]
    names = [*achieved, "matmul\npeak\n(ORT)", "matmul\npeak\n(numpy)"]
    gflops = [*achieved.values(), peak["onnxruntime_gflops"], peak["numpy_gflops"]]
    bars = right.bar(
        range(len(gflops)), gflops, color=["#d95f02", "#1b9e77", "#66a61e", "#444444", "#777777"][: len(gflops)]
    )
    right.bar_label(bars, labels=[f"{g:.0f}" for g in gflops], fontsize=8)
    right.set_xticks(range(len(gflops)), [n.replace("_", "\n") for n in names], fontsize=8)
    right.set_ylabel("GFLOP/s (2 per multiply-add of the convolutions)")
    right.set_title(f"Achieved vs measured peak, {bench['cpus']} CPU cores")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
