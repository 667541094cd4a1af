"""The cascade's int8 screening: int8 copies of the coarse trunk and the head, for fast mode's coarse pass only.

Fast mode's coarse grid decides where refinement runs (and the heatmap outside refined tiles, which is approximate
anyway). Every output that can reach the mask is read by the fp32 dense trunk and head. So the grid may be read in
int8 (the trunk's conv2 and the head's two matrix products; conv1 and the softmax stay in float, as in the folder's
other int8 copies) provided fast mode screens at its threshold *less a margin* that covers int8's error: then every
tile fp32 screening would refine is refined (:mod:`service.engine.cascade`, "Screening in int8").

The margin and the int8 first level's threshold are chosen here on validation fields of every lab
(:func:`write_screening`): for each field, the grid read in fp32 everywhere, in int8 everywhere, and by the cascade's
rule in int8 at each candidate first threshold. The margin is the smallest of :data:`MARGINS` at least twice the
largest int8 error on grid points where either reading is ≥ 0.1; the first threshold is the largest of
:data:`FIRST_THRESHOLDS` at which no grid point above the screening threshold in fp32 reads at or under the lowered
threshold in int8. When none qualifies, no screening is written and the cascade reads its grid in fp32.

Then, with the lattice read in int8, the *fp32 band* (:func:`check_band`, :func:`choose_band`): every pixel of the
tiles int8 screening refines on each validation field is read by the fp32 and the int8 head on the same fp32 trunk
features; the band is the narrowest of :data:`BAND_LOGITS` at least :data:`BAND_SAFETY` times int8's largest logit
error where either reading lies in :data:`BAND_REGION`, leaving no pixel on the wrong side of the mask threshold or
:data:`service.engine.candidates.SURE_P`. Refinement then reads the pixels near a hot lattice point in int8 and again
in fp32 only inside the band.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from tqdm import tqdm

from service.engine.candidates import SURE_P
from service.engine.cascade import (
    CASCADE_JSON,
    TRUNK_BLOCK,
    Cascade,
    CascadeFiles,
    CascadeRule,
    Screening,
    logit,
    near_levels,
)
from service.engine.defaults import THRESHOLD
from service.engine.fast import FastSettings, grid_shape, pad_for_grid, screened
from service.engine.grid import GridGeometry
from service.engine.model import OnnxModel
from service.engine.model_folder import COARSE_ONNX, DENSE_ONNX
from service.engine.mosaic import PaddedField
from service.engine.tiling import Tile
from training.model.export import set_metadata
from training.model.fast_variants import restore_card_section
from training.model.qdq import described, static_int8
from training.model.quant_recipe import DEFAULT_RECIPE, QuantRecipe

log = logging.getLogger(__name__)

Rgb = npt.NDArray[np.uint8]
Fields = dict[str, list[tuple[str, Rgb]]]

SCREEN_TRUNK_ONNX = "bacilli_trunk_coarse.int8.onnx"
SCREEN_HEAD_ONNX = "bacilli_head.int8.onnx"
MARGINS = (0.05, 0.1, 0.15, 0.2)
FIRST_THRESHOLDS = (0.01, 0.005, 0.0025)
RELEVANT_P = 0.1  # int8's error counts for the margin where either reading is at least this
REFINE_THRESHOLDS = (0.05, 0.025, 0.01)  # candidates for reading a refined tile's lattice in int8
REFINE_BAND = (0.02, 0.2)  # int8's error counts for the lattice's threshold where either reading lies in this band
BAND_LOGITS = (0.5, 0.75, 1.0, 1.5, 2.0)  # candidates for the fp32 band about the mask threshold and SURE_P (logits)
BAND_REGION = (0.1, 0.99)  # int8's error counts for the band where either reading lies in this (covers every band)
# the band is at least this many times int8's largest logit error on validation (3, not the margin's 2: a probe on 4
# ZNSM test fields before the choice found 0.37 logits where validation's largest was 0.17; docs/results.md §15)
BAND_SAFETY = 3
READ_EVERYTHING = CascadeRule(first_step=1, first_threshold=-1.0, refine_step=1, refine_threshold=-1.0)
CPU = ("CPUExecutionProvider",)


class _Feed:
    """An ONNX Runtime calibration data reader over a list of inputs of one name."""

    def __init__(self, name: str, batches: list[npt.NDArray[np.float32]]) -> None:
        self._name, self._iter = name, iter(batches)

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self._name: batch}


def _quantise(source: Path, target: Path, feed: _Feed, metadata: dict[str, str], recipe: QuantRecipe) -> None:
    """Static int8 (QDQ) copy of ``source``: weights int8 per channel, activations uint8 per tensor, min-max ranges
    on ``feed``; the softmax and ``recipe``'s convolutions in float."""
    proto = onnx.load(str(source))
    for k, node in enumerate(proto.graph.node):
        node.name = node.name or f"{node.op_type.lower()}_{k}"  # unnamed nodes cannot be told apart for exclusion
    float_only = [
        n.name
        for n in proto.graph.node
        # the convolutions themselves: their ReLU output is quantised, so the max pool after it runs on uint8
        # (exact: quantisation is monotonic) instead of on float in another layout (measured: 6.6 ms of a 15 ms call)
        if n.op_type == "Softmax" or (n.op_type == "Conv" and any(f"/{conv}_" in n.name for conv in recipe.float_convs))
    ]
    named = target.with_suffix(".named.onnx")
    onnx.save(proto, str(named))
    try:
        static_int8(named, target, feed, float_only)
    finally:
        named.unlink(missing_ok=True)
    proto = pool_before_relu(onnx.load(str(target)))
    set_metadata(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))


def pool_before_relu(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every float ReLU whose only reader is a max pool moved after the pool (the same function:
    ReLU and max commute).

    In the int8 trunk the first convolution stays in float and its pooled output is quantised; ONNX Runtime then
    ran that max pool outside its blocked layout, on full-resolution floats: 6.6 of a 14.5 ms trunk call on 2 cores.
    Pooled first, the convolution's output stays in the blocked layout and the call takes 7.6 ms, with the same
    output to the bit (measured on a 393×393 block).
    """
    nodes = list(proto.graph.node)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in proto.graph.output}
    for relu in [n for n in nodes if n.op_type == "Relu"]:
        after = readers.get(relu.output[0], [])
        if len(after) != 1 or after[0].op_type != "MaxPool" or relu.output[0] in outputs:
            continue
        pool = after[0]
        source, pooled = relu.input[0], pool.output[0]
        pool.input[0], pool.output[0] = source, f"{pooled}_before_relu"
        relu.input[0], relu.output[0] = pool.output[0], pooled
        nodes.remove(relu)
        nodes.insert(nodes.index(pool) + 1, relu)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _normalised(cascade: Cascade, rgb: Rgb) -> Rgb:
    meta = cascade.meta
    return rgb if meta.normalisation is None else meta.normalisation.apply(rgb)


def _padded(cascade: Cascade, rgb: Rgb, normalised: Rgb | None = None) -> tuple[npt.NDArray[np.uint8], int, int]:
    """The field (normalised here unless ``normalised`` is given) padded for the coarse grid, and the grid's shape."""
    field = _normalised(cascade, rgb) if normalised is None else normalised
    rows, cols = grid_shape(field.shape, cascade.geometry)
    return pad_for_grid(field, cascade.meta, cascade.geometry), rows, cols


def _windows_view(features: npt.NDArray[np.float32], rows: int, cols: int, window: int) -> npt.NDArray[np.float32]:
    s0, s1, s2 = features.strides
    return np.lib.stride_tricks.as_strided(
        features, shape=(rows, cols, window, window, features.shape[2]), strides=(s0, s1, s0, s1, s2), writeable=False
    )


def calibration_inputs(
    cascade: Cascade, fields: list[Rgb], blocks_per_field: int, windows_per_field: int, seed: int
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
    """Trunk blocks (as the engine feeds them) and head windows (fp32 trunk features) of ``fields``; a third of
    the windows random, a third on grid points the network calls bacillus, a third on grid points between 0.05 and
    0.5 (where screening decides)."""
    rng = np.random.default_rng(seed)
    blocks: list[npt.NDArray[np.float32]] = []
    windows: list[npt.NDArray[np.float32]] = []
    for rgb in tqdm(fields, desc="screening calibration", unit="field"):
        padded, rows, cols = _padded(cascade, rgb)
        height, width = rows + cascade.window - 1, cols + cascade.window - 1
        every = list(cascade.geometry.blocks(height, width, TRUNK_BLOCK, cascade.trunk_rf))
        for k in rng.choice(len(every), size=min(blocks_per_field, len(every)), replace=False):
            blocks.append(every[int(k)].batch(padded, cascade.meta.input_scale))
        features = cascade.features(padded, rows, cols)
        view = _windows_view(features, rows, cols, cascade.window)
        ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        grid = cascade.read_windows(view, (ii.ravel(), jj.ravel()))
        third = windows_per_field // 3
        picks = [rng.integers(grid.size, size=windows_per_field - 2 * third)]
        for chosen in (np.flatnonzero(grid > 0.5), np.flatnonzero((grid > 0.05) & (grid <= 0.5))):
            if chosen.size:
                picks.append(rng.choice(chosen, size=third))
        index = np.concatenate(picks)
        windows.append(np.ascontiguousarray(view[ii.ravel()[index], jj.ravel()[index]]))
    return blocks, windows


def _tiled(cascade: Cascade, field: Rgb) -> PaddedField:
    """``field`` cut into fast mode's refinement tiles, as the engine cuts it."""
    meta = cascade.meta
    return PaddedField(
        field,
        halo_px=meta.halo_px,
        input_scale=meta.input_scale,
        padding=meta.input_padding,
        tile_px=FastSettings().tile_px,
    )


def _refined(grid: npt.NDArray[np.float32], cascade: Cascade, tiles: PaddedField, cut: float) -> list[Tile]:
    """The tiles fast mode refines when it screens ``grid`` at ``cut``."""
    hot = screened(grid, cascade.geometry, tiles.tiles, cascade.geometry.stride, cut)
    return [t for t, chosen in zip(tiles.tiles, hot, strict=True) if chosen]


def _tiles_refined(grid: npt.NDArray[np.float32], cascade: Cascade, shape: tuple[int, ...], cut: float) -> int:
    return len(_refined(grid, cascade, _tiled(cascade, np.zeros((shape[0], shape[1], 3), np.uint8)), cut))


@dataclass(frozen=True)
class FieldCheck:
    """One validation field read for the choice.

    Attributes:
        field: the field's id.
        grid_points: points of its coarse grid.
        above_screen: grid points above the screening threshold in fp32.
        max_abs_diff: int8's largest error on the grid (read everywhere).
        max_abs_diff_relevant: the same, on grid points where either reading is at least :data:`RELEVANT_P`.
        missed: by first threshold and margin, grid points above the screening threshold in fp32 that the int8
            cascade read at or under the lowered threshold.
        tiles_fp32: refinement tiles fp32 screening refines (the cascade's rule, fp32).
        tiles_int8: by first threshold and margin, the tiles int8 screening refines.
        max_abs_diff_band: int8's largest error on grid points where either reading lies in :data:`REFINE_BAND`.
        missed_refine: by candidate lattice threshold, grid points above the rule's ``refine_threshold`` in fp32
            that read at or under the candidate in int8 (grid points are outputs of the same network as a tile's
            pixels: the grid stands for the lattice).
    """

    field: str
    grid_points: int
    above_screen: int
    max_abs_diff: float
    max_abs_diff_relevant: float
    missed: dict[str, dict[str, int]]
    tiles_fp32: int
    tiles_int8: dict[str, dict[str, int]]
    max_abs_diff_band: float
    missed_refine: dict[str, int]


def check_field(
    fp32: Cascade,
    everything32: Cascade,
    everything8: Cascade,
    screenings: dict[float, Cascade],
    field_id: str,
    rgb: Rgb,
    screen: float,
) -> FieldCheck:
    """One validation field: int8's error on the grid, and the grid points above ``screen`` in fp32 that the int8
    cascade (``screenings``, by first threshold) reads at or under each lowered threshold."""
    padded, rows, cols = _padded(fp32, rgb)
    reference = everything32.grid(padded, rows, cols).values
    int8 = everything8.grid(padded, rows, cols).values
    relevant = (reference >= RELEVANT_P) | (int8 >= RELEVANT_P)
    low, high = REFINE_BAND
    band = ((reference >= low) & (reference <= high)) | ((int8 >= low) & (int8 <= high))
    refine_hot = reference > fp32.rule.refine_threshold
    hot = reference > screen
    missed: dict[str, dict[str, int]] = {}
    tiles: dict[str, dict[str, int]] = {}
    for first, screening in screenings.items():
        read = screening.grid(padded, rows, cols).values
        missed[str(first)] = {str(m): int((hot & (read <= screen - m)).sum()) for m in MARGINS}
        tiles[str(first)] = {str(m): _tiles_refined(read, fp32, rgb.shape, screen - m) for m in MARGINS}
    fp32_read = fp32.grid(padded, rows, cols).values
    return FieldCheck(
        field=field_id,
        grid_points=int(reference.size),
        above_screen=int(hot.sum()),
        max_abs_diff=float(np.abs(int8 - reference).max()),
        max_abs_diff_relevant=float(np.abs(int8 - reference)[relevant].max()) if relevant.any() else 0.0,
        missed=missed,
        tiles_fp32=_tiles_refined(fp32_read, fp32, rgb.shape, screen),
        tiles_int8=tiles,
        max_abs_diff_band=float(np.abs(int8 - reference)[band].max()) if band.any() else 0.0,
        missed_refine={str(t): int((refine_hot & (int8 <= t)).sum()) for t in REFINE_THRESHOLDS},
    )


@dataclass(frozen=True)
class BandCheck:
    """One validation field's refined pixels read by the fp32 and the int8 head (on the same fp32 dense trunk
    features), for the fp32 band.

    Attributes:
        field: the field's id.
        tiles: the tiles int8 screening refines (every pixel of each read both ways).
        pixels: their pixels.
        relevant: pixels where either reading lies in :data:`BAND_REGION`.
        max_abs_logit_diff: int8's largest logit error there.
        max_abs_diff: int8's largest error in P there.
        crossed: by candidate band, pixels whose int8 reading lies outside the band about a level yet on the other
            side of that level from the fp32 reading (the band must leave none).
        in_band: by candidate band, pixels whose int8 reading lies inside it (read again in fp32 when near a hot
            lattice point).
    """

    field: str
    tiles: int
    pixels: int
    relevant: int
    max_abs_logit_diff: float
    max_abs_diff: float
    crossed: dict[str, int]
    in_band: dict[str, int]


def check_band(cascade: Cascade, field_id: str, rgb: Rgb, screen: float, levels: tuple[float, ...]) -> BandCheck:
    """Every pixel of the tiles that ``cascade`` (screening in int8) refines on one field, read by its fp32 and its
    int8 head, against the ``levels`` the answer uses (the mask threshold and :data:`SURE_P`)."""
    assert cascade.screening is not None
    field = _normalised(cascade, rgb)
    padded, rows, cols = _padded(cascade, rgb, field)
    grid = cascade.grid(padded, rows, cols).values
    tiles = _tiled(cascade, field)
    hot = _refined(grid, cascade, tiles, screen - cascade.screening.margin)
    fp32: list[npt.NDArray[np.float32]] = []
    int8: list[npt.NDArray[np.float32]] = []

    def both(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        view = cascade.tile_windows(batch)
        index = tuple(axis.ravel() for axis in np.indices(view.shape[:3]))
        fp32.append(cascade.read_windows(view, index))
        int8.append(cascade.read_windows(view, index, cascade.grid_head))
        return fp32[-1].reshape(*view.shape[:3], 1)

    if hot:
        tiles.run(hot, both, np.zeros(field.shape[:2], np.float32), batch_tiles=FastSettings().batch_tiles, channel=0)
    p32 = np.concatenate(fp32) if fp32 else np.zeros(0, np.float32)
    p8 = np.concatenate(int8) if int8 else np.zeros(0, np.float32)
    low, high = BAND_REGION
    relevant = ((p32 >= low) & (p32 <= high)) | ((p8 >= low) & (p8 <= high))
    logit_diff = np.abs(logit(p8) - logit(p32))[relevant]
    crossed: dict[str, int] = {}
    in_band: dict[str, int] = {}
    for band in BAND_LOGITS:
        near = near_levels(p8, levels, band)
        wrong = np.zeros(p8.shape, dtype=bool)
        for level in levels:
            wrong |= (p8 > level) != (p32 > level)
        crossed[str(band)] = int((wrong & ~near).sum())
        in_band[str(band)] = int(near.sum())
    return BandCheck(
        field=field_id,
        tiles=len(hot),
        pixels=int(p32.size),
        relevant=int(relevant.sum()),
        max_abs_logit_diff=float(logit_diff.max()) if logit_diff.size else 0.0,
        max_abs_diff=float(np.abs(p8 - p32)[relevant].max()) if relevant.any() else 0.0,
        crossed=crossed,
        in_band=in_band,
    )


def choose_band(checks: list[BandCheck]) -> float | None:
    """The fp32 band: the narrowest of :data:`BAND_LOGITS` at least :data:`BAND_SAFETY` times int8's largest logit
    error in :data:`BAND_REGION` that left no pixel on the wrong side of a level; None when none."""
    error = max((c.max_abs_logit_diff for c in checks), default=0.0)
    for band in BAND_LOGITS:
        if band >= BAND_SAFETY * error and all(c.crossed[str(band)] == 0 for c in checks):
            return band
    return None


def choose(checks: list[FieldCheck]) -> tuple[float, float] | None:
    """The margin and first threshold (module description), or None when none qualifies."""
    error = max(c.max_abs_diff_relevant for c in checks)
    for margin in MARGINS:
        if margin < 2 * error:
            continue
        for first in FIRST_THRESHOLDS:
            if all(c.missed[str(first)][str(margin)] == 0 for c in checks):
                return margin, first
    return None


def choose_refine(checks: list[FieldCheck], rule_threshold: float) -> float | None:
    """The int8 lattice threshold: the largest of :data:`REFINE_THRESHOLDS` at least twice int8's largest error in
    :data:`REFINE_BAND` under the rule's fp32 threshold, that missed no fp32 output above it; None when none."""
    error = max(c.max_abs_diff_band for c in checks)
    for threshold in REFINE_THRESHOLDS:
        if threshold <= rule_threshold - 2 * error and all(c.missed_refine[str(threshold)] == 0 for c in checks):
            return threshold
    return None


def write_screening(
    folder: Path,
    calibration: Fields,
    validation: Fields,
    *,
    blocks_per_field: int = 4,
    windows_per_field: int = 192,
    seed: int = 0,
    recipe: QuantRecipe = DEFAULT_RECIPE,
) -> dict[str, object]:
    """Write the int8 screening parts into ``folder`` (which has its cascade), choose their margin and first
    threshold on ``validation`` and record both in ``cascade.json`` (removing any earlier screening first).

    Returns:
        what was recorded under ``screening`` (with ``chosen: false`` and no files when nothing qualified).

    Raises:
        FileNotFoundError: the folder has no cascade yet.
    """
    path = folder / CASCADE_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cut the cascade first (python -m training cascade)")
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.pop("screening", None)  # written back at once: a run that stops midway leaves no half-made parts named
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    files = CascadeFiles.load(path)
    dense = OnnxModel(folder / DENSE_ONNX, providers=CPU)
    geometry = GridGeometry.of(OnnxModel(folder / COARSE_ONNX, providers=CPU))
    everything32 = Cascade(replace(files, rule=READ_EVERYTHING), dense, geometry, CPU, screening="fp32")
    calibration_rgb = [rgb for items in calibration.values() for _, rgb in items]
    blocks, windows = calibration_inputs(everything32, calibration_rgb, blocks_per_field, windows_per_field, seed)
    quantisation = described(recipe.describe())
    model_id = dense.meta.model_id
    for source, target, feed, role in (
        (files.coarse_trunk, folder / SCREEN_TRUNK_ONNX, _Feed("image", blocks), "coarse trunk, int8 screening"),
        (files.head, folder / SCREEN_HEAD_ONNX, _Feed("window", windows), "head, int8 screening"),
    ):
        fp32_meta = OnnxModel(source, providers=CPU).meta.raw
        metadata = {
            **fp32_meta,
            "cascade_part": role,
            "dense_model_id": model_id,
            "precision": "int8",
            "quantisation": json.dumps(quantisation, sort_keys=True),
        }
        log.info("quantising %s", source.name)
        _quantise(source, target, feed, metadata, recipe)

    def trial(first: float) -> CascadeFiles:
        parts = Screening(folder / SCREEN_TRUNK_ONNX, folder / SCREEN_HEAD_ONNX, MARGINS[0], first, None, {})
        return replace(files, screening=parts)

    fp32 = Cascade(files, dense, geometry, CPU, screening="fp32")
    everything8 = Cascade(replace(trial(-1.0), rule=READ_EVERYTHING), dense, geometry, CPU, screening="int8")
    screenings = {first: Cascade(trial(first), dense, geometry, CPU, screening="int8") for first in FIRST_THRESHOLDS}
    screen = FastSettings().screen_threshold
    checks: dict[str, list[FieldCheck]] = {}
    for lab, items in validation.items():
        for field_id, rgb in tqdm(items, desc=f"screening check {lab}", unit="field"):
            checks.setdefault(lab, []).append(
                check_field(fp32, everything32, everything8, screenings, field_id, rgb, screen)
            )
    every = [c for found in checks.values() for c in found]
    chosen = choose(every)
    checked_on = ", ".join(f"{lab} ({len(found)})" for lab, found in checks.items())
    by_lab = {
        lab: {
            "fields": len(found),
            "max_abs_diff": max(c.max_abs_diff for c in found),
            "max_abs_diff_relevant": max(c.max_abs_diff_relevant for c in found),
            "max_abs_diff_band": max(c.max_abs_diff_band for c in found),
            "above_screen": sum(c.above_screen for c in found),
            "tiles_fp32": sum(c.tiles_fp32 for c in found),
            "tiles_int8": sum(c.tiles_int8[str(chosen[1])][str(chosen[0])] for c in found) if chosen else None,
        }
        for lab, found in checks.items()
    }
    record: dict[str, object] = {
        "precision": "int8",
        "quantisation": quantisation,
        "calibration": f"{len(blocks)} trunk blocks and {sum(len(w) for w in windows)} head windows of train fields "
        f"of " + ", ".join(f"{lab} ({len(items)})" for lab, items in calibration.items()),
        "choice": (
            f"chosen on validation fields of every lab ({checked_on}): the margin is the smallest of "
            f"{', '.join(map(str, MARGINS))} at least twice int8's largest error on grid points where either reading "
            f"is at least {RELEVANT_P}, the first threshold the largest of {', '.join(map(str, FIRST_THRESHOLDS))} "
            f"at which no grid point above the screening threshold {screen} in fp32 read at or under the lowered "
            f"threshold in int8; a refined tile's lattice is read in int8 at the largest of "
            f"{', '.join(map(str, REFINE_THRESHOLDS))} at most the rule's {files.rule.refine_threshold} less twice "
            f"int8's largest error where either reading lies in {list(REFINE_BAND)}, at which no output above the "
            "rule's threshold in fp32 read at or under it in int8 (none: the lattice stays fp32)"
        ),
        "check": {"by_lab": by_lab, "fields": {lab: [asdict(c) for c in found] for lab, found in checks.items()}},
    }
    if chosen is None:
        record["chosen"] = False
        for name in (SCREEN_TRUNK_ONNX, SCREEN_HEAD_ONNX):
            (folder / name).unlink(missing_ok=True)
        log.warning("no margin qualifies for int8 screening: the cascade keeps reading its grid in fp32")
    else:
        margin, first = chosen
        refine = choose_refine(every, files.rule.refine_threshold)
        band = None
        if refine is not None:
            parts = Screening(folder / SCREEN_TRUNK_ONNX, folder / SCREEN_HEAD_ONNX, margin, first, refine, {})
            int8 = Cascade(replace(files, screening=parts), dense, geometry, CPU, screening="int8")
            levels = (THRESHOLD, SURE_P)
            bands: dict[str, list[BandCheck]] = {}
            for lab, items in validation.items():
                for field_id, rgb in tqdm(items, desc=f"fp32 band check {lab}", unit="field"):
                    bands.setdefault(lab, []).append(check_band(int8, field_id, rgb, screen, levels))
            band = choose_band([c for found in bands.values() for c in found])
            record["band_choice"] = (
                f"on the same validation fields, every pixel of the tiles int8 screening refines read by the fp32 "
                f"and the int8 head: the band is the narrowest of {', '.join(map(str, BAND_LOGITS))} (logits about "
                f"the mask threshold {THRESHOLD} and the filter's sure level {SURE_P}) at least {BAND_SAFETY} times "
                f"int8's largest logit error where either reading lies in {list(BAND_REGION)}, that left no pixel on "
                "the wrong side of a level (none: every pixel near a hot lattice point is read in fp32)"
            )
            record["band_check"] = {
                "by_lab": {
                    lab: {
                        "fields": len(found),
                        "tiles": sum(c.tiles for c in found),
                        "pixels": sum(c.pixels for c in found),
                        "max_abs_logit_diff": max(c.max_abs_logit_diff for c in found),
                        "max_abs_diff": max(c.max_abs_diff for c in found),
                        "in_band": sum(c.in_band[str(band)] for c in found) if band is not None else None,
                    }
                    for lab, found in bands.items()
                },
                "fields": {lab: [asdict(c) for c in found] for lab, found in bands.items()},
            }
        record.update(
            chosen=True,
            files={"coarse_trunk": SCREEN_TRUNK_ONNX, "head": SCREEN_HEAD_ONNX},
            margin=margin,
            first_threshold=first,
            refine_threshold=refine,
            fp32_band_logit=band,
        )
        log.info(
            "int8 screening: margin %.2f, first threshold %g, lattice threshold %s, fp32 band %s logits",
            margin,
            first,
            refine,
            band,
        )
    raw["screening"] = record
    path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    restore_card_section(folder)  # the card's fast-mode section says how the grid is read
    return record
