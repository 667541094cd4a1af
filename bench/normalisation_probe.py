"""Which field normalisation brings a foreign lab's fields closer to what a ZNSM-only model knows? Prints JSON.

A probe, before any multi-lab training: the ZNSM-only model (no ``input_normalisation`` in its file) and its
object filter are run through the engine on the UFAM DDS1 *train and validation* slides (never the test slides)
with each normalisation forced onto the model's metadata: none, ``background-gain`` and ``background-od`` (reference
background and stain density: the medians of the ZNSM training fields). For each: the share of expert points whose
2 × 2 centre has P(bacillus) > 0.5, the share with a kept bacillus within 3 px, and kept objects per negative field
(validation slides' negative fields). Positive patches are normalised with their field's pooled background.

    python bench/normalisation_probe.py --model DENSE.onnx --filter FILTER.onnx [--out result.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.engine.model import OnnxModel  # noqa: E402
from service.engine.normalisation import InputNormalisation  # noqa: E402
from service.engine.object_filter import ObjectFilter  # noqa: E402
from service.engine.segmenter import Segmenter  # noqa: E402
from training.data.dataset import read_rgb  # noqa: E402
from training.data.split import DatasetSplit  # noqa: E402
from training.data.ufam import patch_centre, read_positives, read_ufam  # noqa: E402
from training.paths import UFAM_DDS1, UFAM_DDS1_SPLIT  # noqa: E402

ZNSM_BACKGROUND = (194.5, 190.5, 153.0)  # median 90th-percentile background of the ZNSM training fields
ZNSM_DENSITY = 0.547  # their median stained-pixel optical density


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--filter", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants: dict[str, InputNormalisation | None] = {
        "none": None,
        "background-gain": InputNormalisation("background-gain", ZNSM_BACKGROUND),
        "background-od": InputNormalisation("background-od", ZNSM_BACKGROUND, reference_density=ZNSM_DENSITY),
    }
    split = DatasetSplit.load(UFAM_DDS1_SPLIT)
    ufam = read_ufam(UFAM_DDS1)
    positives = ufam.of_slides(split.train + split.validation)
    negatives = ufam.of_slides(split.validation)
    model = OnnxModel(args.model, providers=("CPUExecutionProvider",))
    object_filter = ObjectFilter(args.filter)
    results = {}
    for name, norm in variants.items():
        model.meta = dataclasses.replace(model.meta, normalisation=norm)
        segmenter = Segmenter(model, tile_px=512, object_filter=object_filter)
        images, backgrounds = read_positives(positives, norm)
        started, centre_p, kept_at_centre = time.perf_counter(), 0, 0
        for p in positives.positives:
            rgb = images[p.patch_id]
            cy, cx = patch_centre(rgb)
            result = segmenter.segment(rgb, background=backgrounds.get(p.field))
            centre_p += bool(result.heatmap[cy - 1 : cy + 1, cx - 1 : cx + 1].max() > 0.5)
            kept_at_centre += bool(result.objects[cy - 3 : cy + 4, cx - 3 : cx + 4].any())
        kept = [len(segmenter.segment(read_rgb(f.path)).bacilli) for f in negatives.negatives]
        n = len(positives.positives)
        results[name] = {
            "points": n,
            "centre_p_above_0_5": round(centre_p / n, 4),
            "kept_at_centre": round(kept_at_centre / n, 4),
            "negative_fields": len(kept),
            "kept_per_negative_field": round(float(np.mean(kept)), 3),
            "kept": kept,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    report = {"model_id": model.meta.model_id, "filter_id": object_filter.meta.filter_id, "variants": results}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
