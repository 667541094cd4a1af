"""Base vs fine-tuned, from ``finetune.json`` records: recall at the experts' points and false bacilli per negative
field, on each comparison (held-out, test, ZNSM test; false bacilli only where there are negative fields), one row
of panels per record.

    .venv/bin/python bench/plot_finetune.py runs/ufam-ft-few/finetune.json runs/ufam-ft-all/finetune.json \
        --names "12 fields" "4 slides" -o docs/figures/finetune_ufam.png
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
    parser.add_argument("records", type=Path, nargs="+", help="finetune.json files")
    parser.add_argument("--names", nargs="+", help="a name per record (default: its folder)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    names = args.names or [r.parent.name for r in args.records]
    fig, axes = plt.subplots(len(args.records), 2, figsize=(11, 3.2 * len(args.records)), squeeze=False)
    for row, (path, name) in enumerate(zip(args.records, names, strict=True)):
        record = json.loads(path.read_text())
        parts = [k for k in ("lab held-out", "lab test", "znsm-test") if k in record["comparison"]]
        for col, (key, label) in enumerate(
            (
                ("recall", "bacilli found (recall)"),
                ("false_bacilli_per_negative_field", "false bacilli per negative field"),
            )
        ):
            ax = axes[row][col]
            shown = parts if col == 0 else [p for p in parts if record["comparison"][p][0]["negative_fields"]]
            for offset, (who, colour) in enumerate((("base", "#8c8c8c"), ("fine-tuned", "#c0392b"))):
                values = []
                for part in shown:
                    scores = next(s for s in record["comparison"][part] if s["name"] == who)
                    value = scores[key]
                    values.append(0.0 if value is None or value != value else float(value))
                xs = [i + (offset - 0.5) * 0.38 for i in range(len(shown))]
                bars = ax.bar(xs, values, width=0.36, color=colour, label=who)
                ax.bar_label(bars, fmt="%.2f", fontsize=8)
            ax.set_xticks(range(len(shown)), shown)
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylim(0, 1.1)
                ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(json.dumps({"figure": str(args.out), "records": [str(r) for r in args.records]}))


if __name__ == "__main__":
    main()
