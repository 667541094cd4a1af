"""The paper's training patches of a split, written to disk (``python -m training patches``).

``train.npz`` and ``validation.npz`` (:class:`~training.data.sampling.PatchSet`) hold the 45×45 patches of the
split's train and validation fields, cut by the paper's sampler; ``patches.json`` records how they were made.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from training.data.box_masks import MaskDerivation, PixelClass, label_map
from training.data.dataset import discover_fields, read_annotation, read_rgb
from training.data.sampling import PatchSet, SamplerConfig, sample_field
from training.data.split import DatasetSplit

log = logging.getLogger(__name__)


def write_patch_sets(
    data: Path, split_path: Path, out: Path, config: SamplerConfig, params: MaskDerivation, seed: int = 0
) -> dict[str, object]:
    """Cut and save the train and validation patches of ``data`` by the split in ``split_path``.

    Returns:
        what ``patches.json`` records: inputs, sampler, counts per subset, seconds.
    """
    split = DatasetSplit.load(split_path)
    fields = {f.field_id: f for f in discover_fields(data)}
    split.check_covers(set(fields))
    summary: dict[str, object] = {
        "data": str(data),
        "split": str(split_path),
        "seed": seed,
        "sampler": asdict(config),
        "mask_derivation": asdict(params),
    }
    started = time.perf_counter()
    for name in ("train", "validation"):
        parts = []
        for fid in tqdm(split.subset(name), desc=f"patches ({name})", unit="field"):
            image = read_rgb(fields[fid].image)
            labels = label_map(read_annotation(fields[fid]), image, params)
            parts.append(sample_field(fid, image, labels, seed, config))
        patches = PatchSet.concatenate(parts, config.patch_size)
        patches.save(out / f"{name}.npz")
        summary[name] = {
            "fields": list(split.subset(name)),
            "patches": len(patches),
            "bacillus": int((patches.labels == PixelClass.BACILLUS).sum()),
            "background": int((patches.labels == PixelClass.BACKGROUND).sum()),
        }
    summary["seconds"] = round(time.perf_counter() - started, 2)
    (out / "patches.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("patches written to %s: %s", out, {k: summary[k] for k in ("train", "validation")})
    return summary
