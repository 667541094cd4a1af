"""A lab's profile from its own data (``python -m training lab-profile``): :mod:`service.engine.lab_profile`.

The model folder's segmenter (with its object filter, in fast mode as the service runs by default, the filter's
threshold lowered to 0 so every candidate is scored) reads the lab's confirmed-negative fields, where every candidate
is debris, and, for a UFAM-style folder, its positive centre patches, where the candidate at the centre (within
``CENTRE_PX``) is the expert's bacillus. Only the slides named (``--subsets``: train and validation by default) are
read: a lab's test slides never make its profile. With the lab's pixel size (``--pixel-size-um``) every field is read
at the model's scale, as the service reads the lab's fields with ``lab=``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from service.engine.image_io import decode_image
from service.engine.lab_profile import PROFILE_JSON, LabProfile, NegativeEvidence, NegativeField, PositiveEvidence
from service.engine.loading import SegmenterConfig, load_segmenter
from service.engine.model_folder import open_folder
from service.engine.postprocess import DetectedObject
from service.engine.rescaled import segment_at_scale
from service.engine.scale import resolve_scale
from service.engine.segmenter import Mode, Segmenter
from training.data.split import DatasetSplit
from training.data.ufam import CENTRE_PX, patch_centre, read_positives, read_ufam

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def candidate_scores(
    segmenter: Segmenter, rgb: npt.NDArray[np.uint8], pixel_size_um: float | None = None
) -> tuple[list[float], tuple[DetectedObject, ...]]:
    """Every candidate of the field and its filter score (1 without a filter: every candidate is kept), the field
    read at the model's scale when the lab's pixel size is known (as the service reads the lab's fields)."""
    mode = Mode.FAST if Mode.FAST in segmenter.modes else Mode.EXACT
    scale = resolve_scale(segmenter.scale, lab=pixel_size_um)
    result = segment_at_scale(segmenter, rgb, scale, object_threshold=0.0, mode=mode)
    objects = (*result.bacilli, *result.rejected)
    return [o.score if o.score is not None else 1.0 for o in objects], objects


def centre_score(segmenter: Segmenter, rgb: npt.NDArray[np.uint8], pixel_size_um: float | None = None) -> float | None:
    """The best score of a candidate within ``CENTRE_PX`` of the patch's centre; None when there is none."""
    scores, objects = candidate_scores(segmenter, rgb, pixel_size_um)
    cy, cx = patch_centre(rgb)
    near = [
        s
        for s, o in zip(scores, objects, strict=True)
        if o.bbox[0] - CENTRE_PX <= cx < o.bbox[0] + o.bbox[2] + CENTRE_PX
        and o.bbox[1] - CENTRE_PX <= cy < o.bbox[1] + o.bbox[3] + CENTRE_PX
    ]
    return max(near) if near else None


def make_lab_profile(
    lab_id: str,
    model_dir: Path,
    out: Path,
    budget: float,
    ufam: Path | None = None,
    ufam_split: Path | None = None,
    subsets: tuple[str, ...] = ("train", "validation"),
    negatives: tuple[Path, ...] = (),
    pixel_size_um: float | None = None,
) -> LabProfile:
    """Read the lab's data through the folder's model and write ``out/<lab_id>/profile.json`` (version one more
    than a profile already there); returns the profile.

    Raises:
        ValueError: no negative field, too few for ``budget``, or an invalid lab id.
    """
    folder = open_folder(model_dir)
    segmenter = load_segmenter(SegmenterConfig.of_folder(folder))
    negative_images: list[Path] = []
    for root in negatives:
        negative_images += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    positives = None
    sources = [str(p) for p in negatives]
    if ufam is not None:
        part = read_ufam(ufam)
        slides = set()
        if ufam_split is not None:
            split = DatasetSplit.load(ufam_split)
            slides = {s for subset in subsets for s in getattr(split, subset)}
            part = part.of_slides(sorted(slides))
        negative_images += [n.path for n in part.negatives]
        sources.append(f"{ufam.name} slides {' '.join(sorted(slides)) or 'all'}")
        images, _ = read_positives(part, None)
        scores = [
            centre_score(segmenter, images[p.patch_id], pixel_size_um)
            for p in tqdm(part.positives, desc="positive patches", unit="patch", leave=False)
        ]
        positives = PositiveEvidence(f"{ufam.name} positive centre patches, {sources[-1]}", len(scores), tuple(scores))
    if not negative_images:
        raise ValueError("no confirmed-negative field: give --negatives folders or a UFAM folder with --ufam")
    per_field = []
    files = []
    for path in tqdm(negative_images, desc="negative fields", unit="field", leave=False):
        data = path.read_bytes()
        scores_here, objects = candidate_scores(segmenter, decode_image(data, 40_000_000).rgb, pixel_size_um)
        per_field.append(tuple(round(s, 4) for s in scores_here))
        centres = tuple((round(o.centroid[1]), round(o.centroid[0])) for o in objects)
        files.append(NegativeField(str(path), hashlib.sha256(data).hexdigest(), centres))
    evidence = NegativeEvidence("; ".join(sources), len(per_field), tuple(per_field), tuple(files))
    earlier = out / lab_id / PROFILE_JSON
    version = LabProfile.load(earlier).version + 1 if earlier.is_file() else 1
    profile = LabProfile.make(
        lab_id,
        folder.model_id,
        folder.filter_id,
        evidence,
        positives,
        budget,
        version=version,
        pixel_size_um=pixel_size_um,
        created_at=time.time(),
    )
    path = profile.write(out / lab_id)
    log.info(
        "lab %s (version %d): operating point %.2f, false bacilli per negative field ≤ %.3f (95%%), recall %s; %s",
        lab_id,
        version,
        profile.object_threshold,
        profile.false_rate_upper_95,
        "n/a" if positives is None else f"{positives.recall_at(profile.object_threshold):.3f}",
        path,
    )
    return profile
