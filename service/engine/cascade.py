"""Fast mode's cascade: the network's last convolution only where an earlier, sparser look saw anything.

Nearly all of the network's multiply-adds are in its last spatial convolution (conv3 of the patch CNN: a 6×6
window of 64 features to 512, 1.18 M multiply-adds for each output), which fast mode runs at every coarse grid point
and at every pixel of a refined tile. The layers before it (the *trunk*) are cheap. A model folder's
``cascade.json`` (written by ``python -m training cascade``) names the network cut in two at that convolution's
input, as three ONNX files beside the networks they come from:

* the coarse trunk: the field to the features under every coarse grid point (stride 6, 64 channels);
* the dense trunk: a tile to the features under every pixel (the same 64 channels, dilated by 6);
* the head: one window of features (``[n, 6, 6, 64]``, channels last) to P(background), P(bacillus): the last
  convolution as one matrix product, its ReLU, the 1×1 classifier and the softmax, with the network's own weights.

The head applied to the trunk's features at any output equals the network's output there (to float rounding:
``cascade.json`` records the largest difference measured when it was written). So a cascade reads outputs
*where it chooses*:

1. **Coarse pass** (:meth:`Cascade.grid`): the head at every ``first_step``-th grid point (every other one: a
   stride-12 grid); then at every grid point whose first-level neighbours (3×3) include one above
   ``first_threshold``. A grid point not read takes its first-level value, which is at most that threshold.
2. **Refinement** (:meth:`Cascade.refine`): in each refined tile, the head at every ``refine_step``-th pixel of each
   row and column and at its last row and column; then at every pixel within ``refine_step − 1`` pixels of one above
   ``refine_threshold``. A pixel not read takes its nearest lower read value (at most the threshold, below the mask
   threshold, so never in the mask).

What this can change is a grid point above the screening threshold whose first-level neighbours all stay under
``first_threshold``, or a pixel above the mask threshold whose first-level neighbours all stay under
``refine_threshold``. Both thresholds are the model's, chosen on validation fields of every lab (``cascade.json``
says how); how often either happens on test fields is measured (``bench/fast_cascade.py``, ``docs/results.md``
section 15), not assumed.

**Screening in int8** (:class:`Screening`, optional: ``cascade.json``'s ``screening``). The coarse grid decides only
where refinement runs (and the heatmap outside refined tiles, which is approximate anyway); every output that can
reach the mask comes from the fp32 dense trunk and head. So the coarse pass may read int8 copies of the coarse trunk
and the head, which do the same work in about half the time, provided the screening threshold is lowered by a
*margin* that covers int8's error: a tile fp32 would refine is then refined too (fast mode can only refine more, never
less). The margin and the int8 first-level threshold are the model's, chosen on validation fields of every lab
(``cascade.json`` says how, and what the check measured).

Inside a refined tile the lattice may be read in int8 as well (``refine_threshold``), and with an *fp32 band*
(``fp32_band_logit``) so may the pixels near a hot lattice point: a pixel is then read again by the fp32 head only
where its int8 reading's logit lies within the band of a level the answer uses, the mask threshold or the object
filter's sure level (:data:`service.engine.candidates.SURE_P`). The band is at least three times int8's largest logit
error measured on validation fields, so the mask, the candidates and the share of sure pixels are fp32's; the other P
values inside the mask (a candidate's mean, 10th percentile and maximum) are int8's, within the error the folder
records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from service.engine.candidates import SURE_P
from service.engine.errors import ModelContractError
from service.engine.grid import GridGeometry
from service.engine.model import OnnxModel

CASCADE_JSON = "cascade.json"
SCREENING_PRECISIONS = ("int8", "fp32")
HEAD_CHUNK = 2048  # windows per head call: 19 MB of features; as fast as 4096 on 2 cores, 80 MB less peak memory
TRUNK_BLOCK = 64  # coarse feature positions per side of a trunk call (its window overlaps its neighbours' by 9 px)
NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class CascadeRule:
    """Where a cascade reads outputs (the model's own settings, from ``cascade.json``).

    Attributes:
        first_step: the first coarse level reads every ``first_step``-th grid point of each row and column.
        first_threshold: a first-level P above which the grid points around it (3×3 first-level cells) are read.
        refine_step: the first level inside a refined tile reads every ``refine_step``-th pixel of each row and
            column.
        refine_threshold: a first-level P above which the pixels next to it (3×3) are read.
    """

    first_step: int = 2
    first_threshold: float = 0.01
    refine_step: int = 3
    refine_threshold: float = 0.1

    def applies(self, screen_threshold: float, mask_threshold: float) -> bool:
        """Whether the rule keeps its promise at these thresholds: what it leaves unread stays below both."""
        return self.first_threshold < screen_threshold and self.refine_threshold < mask_threshold


@dataclass(frozen=True)
class Screening:
    """The cascade's int8 screening parts (``cascade.json``'s ``screening``).

    Attributes:
        coarse_trunk, head: the int8 copies' ONNX files.
        margin: the screening threshold is lowered by this much when the grid is read in int8 (covers int8's error
            on the grid points that matter, with room to spare: ``choice`` says how it was chosen).
        first_threshold: the int8 first level's threshold (the rule's ``first_threshold`` for the int8 grid).
        refine_threshold: when set, a refined tile's first level (its lattice) is read in int8 too and the pixels
            near a lattice point above this are read in fp32, the lattice point itself included (None: the lattice
            is read in fp32, with the rule's ``refine_threshold``).
        band_logit: when set (with ``refine_threshold``), the pixels near a hot lattice point are read in int8 as
            well, and then in fp32 only where the int8 reading's logit lies within this of the logit of a level the
            answer uses (the mask threshold, and :data:`service.engine.candidates.SURE_P` of the object filter's
            features); elsewhere the int8 reading stands (None: every such pixel is read in fp32).
        raw: the JSON as stored.
    """

    coarse_trunk: Path
    head: Path
    margin: float
    first_threshold: float
    refine_threshold: float | None
    raw: dict[str, Any]
    band_logit: float | None = None

    @staticmethod
    def of(raw: dict[str, Any], folder: Path) -> Screening:
        files = raw["files"]
        refine, band = raw.get("refine_threshold"), raw.get("fp32_band_logit")
        return Screening(
            coarse_trunk=folder / files["coarse_trunk"],
            head=folder / files["head"],
            margin=float(raw["margin"]),
            first_threshold=float(raw["first_threshold"]),
            refine_threshold=None if refine is None else float(refine),
            raw=raw,
            band_logit=None if refine is None or band is None else float(band),
        )


def logit(p: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """log(p / (1 − p)), with p kept inside (1e-7, 1 − 1e-7)."""
    q = np.clip(p.astype(np.float64), 1e-7, 1.0 - 1e-7)
    return np.asarray(np.log(q) - np.log1p(-q))


def near_levels(p: npt.NDArray[np.float32], levels: tuple[float, ...], band_logit: float) -> npt.NDArray[np.bool_]:
    """Whether each reading's logit lies within ``band_logit`` of one of ``levels``' logits."""
    found = logit(p)
    near = np.zeros(p.shape, dtype=bool)
    for level in levels:
        near |= np.abs(found - float(logit(np.array([level], dtype=np.float32))[0])) < band_logit
    return near


@dataclass(frozen=True)
class CascadeFiles:
    """A folder's ``cascade.json``: its three parts and how they fit.

    Attributes:
        path: the JSON file.
        dense_model_id: the dense network the parts were cut from.
        coarse_trunk, dense_trunk, head: the parts' ONNX files.
        window: the head's window side in feature positions (6).
        trunk_receptive_field: pixels one coarse feature position reads (15).
        rule: where the cascade reads.
        raw: the JSON as stored.
        screening: the int8 screening parts, when the folder has them.
    """

    path: Path
    dense_model_id: str
    coarse_trunk: Path
    dense_trunk: Path
    head: Path
    window: int
    trunk_receptive_field: int
    rule: CascadeRule
    raw: dict[str, Any]
    screening: Screening | None = None

    @staticmethod
    def load(path: Path) -> CascadeFiles:
        """Read a folder's ``cascade.json``.

        Raises:
            ModelContractError: unreadable, missing keys, or a part that is not there; naming the file.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            files = raw["files"]
            rule = CascadeRule(**raw["rule"])
            loaded = CascadeFiles(
                path=path,
                dense_model_id=str(raw["dense_model_id"]),
                coarse_trunk=path.parent / files["coarse_trunk"],
                dense_trunk=path.parent / files["dense_trunk"],
                head=path.parent / files["head"],
                window=int(raw["window"]),
                trunk_receptive_field=int(raw["trunk_receptive_field"]),
                rule=rule,
                raw=raw,
                screening=(
                    Screening.of(raw["screening"], path.parent) if (raw.get("screening") or {}).get("chosen") else None
                ),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelContractError(f"{path}: not a readable cascade description ({exc!r})") from exc
        screening = loaded.screening
        extra = (screening.coarse_trunk, screening.head) if screening is not None else ()
        for part in (loaded.coarse_trunk, loaded.dense_trunk, loaded.head, *extra):
            if not part.is_file():
                raise ModelContractError(f"{path}: names {part.name}, which is not in the folder")
        if rule.first_step < 1 or rule.refine_step < 1 or loaded.window < 1:
            raise ModelContractError(f"{path}: steps and window must be at least 1")
        if screening is not None and not 0.0 <= screening.margin < 1.0:
            raise ModelContractError(f"{path}: the screening margin must lie in [0, 1)")
        return loaded


def gather_windows(view: npt.NDArray[np.float32], index: tuple[npt.NDArray[np.intp], ...]) -> npt.NDArray[np.float32]:
    """``view[index]`` as a new contiguous array, for a strided view of channels-last features whose every axis but
    the last steps by whole pixels: each window's taps are then rows of ``channels`` floats, copied row by row
    (``np.take``: about twice as fast as indexing the view)."""
    channels, item = view.shape[-1], view.itemsize
    row = channels * item
    if view.strides[-1] != item or any(s % row for s in view.strides[:-1]):
        return np.ascontiguousarray(view[index], dtype=np.float32)
    lead = len(index)
    steps = [s // row for s in view.strides[:-1]]
    base = np.zeros(int(index[0].size), dtype=np.intp)
    for axis, step in zip(index, steps[:lead], strict=True):
        base += np.asarray(axis, dtype=np.intp) * step
    taps = np.zeros(1, dtype=np.intp)
    for size, step in zip(view.shape[lead:-1], steps[lead:], strict=True):
        taps = (taps[:, None] + np.arange(size, dtype=np.intp) * step).ravel()
    rows = base[:, None] + taps[None, :]
    if rows.size == 0:
        return np.empty((0, *view.shape[lead:]), dtype=np.float32)
    flat = np.lib.stride_tricks.as_strided(
        view, shape=(int(rows.max()) + 1, channels), strides=(row, item), writeable=False
    )
    return np.take(flat, rows.ravel(), axis=0).reshape(base.size, *view.shape[lead:])


@dataclass(frozen=True)
class CascadeReading:
    """What a cascade read: outputs and how many of them went through the head."""

    values: npt.NDArray[np.float32]
    read: int


class Cascade:
    """A model's cascade: its trunks and head loaded, with the rule of where to read.

    Args:
        files: the folder's ``cascade.json``.
        dense: the dense network the parts must come from (its id is checked).
        geometry: the coarse grid's stride and phase.
        providers, intra_op_threads: as the networks'.
        screening: read the coarse grid with the folder's int8 screening parts when it has them (``int8``: the
            service's default, :class:`service.engine.loading.SegmenterConfig`), or in fp32 (``fp32``).

    Raises:
        ModelContractError: parts of another model, or parts that do not fit the geometry.
    """

    def __init__(
        self,
        files: CascadeFiles,
        dense: OnnxModel,
        geometry: GridGeometry,
        providers: tuple[str, ...] | list[str],
        intra_op_threads: int = 0,
        screening: str = "fp32",
    ) -> None:
        if screening not in SCREENING_PRECISIONS:
            raise ModelContractError(f"screening {screening!r}: expected one of {', '.join(SCREENING_PRECISIONS)}")
        if files.dense_model_id != dense.meta.model_id:
            raise ModelContractError(
                f"{files.path}: cut from {files.dense_model_id}, not from {dense.meta.model_id}; "
                "write it again (python -m training cascade)"
            )
        self.files, self.rule, self.geometry = files, files.rule, geometry
        self.screening = files.screening if screening == "int8" else None

        def load(part: Path) -> OnnxModel:  # called in alternation, many times a field: no spinning (see OnnxModel)
            return OnnxModel(part, providers=providers, intra_op_threads=intra_op_threads, spinning=False)

        self.dense_trunk, self.head = load(files.dense_trunk), load(files.head)
        # the grid's parts: the fp32 coarse trunk and head, or their int8 copies (then the fp32 coarse trunk is not
        # loaded at all)
        if self.screening is None:
            self.grid_trunk, self.grid_head = load(files.coarse_trunk), self.head
        else:
            self.grid_trunk, self.grid_head = load(self.screening.coarse_trunk), load(self.screening.head)
            for part in (self.grid_trunk, self.grid_head):
                made_from = part.meta.raw.get("dense_model_id")
                if made_from != dense.meta.model_id:
                    raise ModelContractError(f"{part.path}: made from {made_from}, not from {dense.meta.model_id}")
        self.meta = dense.meta
        self.window = files.window
        rf = files.trunk_receptive_field
        if geometry.stride * (self.window - 1) + rf != dense.meta.receptive_field_px:
            raise ModelContractError(
                f"{files.path}: a window of {self.window} positions at stride {geometry.stride} over "
                f"{rf} px does not make the network's {dense.meta.receptive_field_px} px"
            )
        self.trunk_rf = rf

    @property
    def screen_margin(self) -> float:
        """How much the screening threshold is lowered for the grid this cascade reads (0 in fp32)."""
        return 0.0 if self.screening is None else self.screening.margin

    @property
    def first_threshold(self) -> float:
        """The coarse first level's threshold for the grid this cascade reads."""
        return self.rule.first_threshold if self.screening is None else self.screening.first_threshold

    def applies(self, screen_threshold: float, mask_threshold: float) -> bool:
        """Whether the cascade keeps its promise at these thresholds (:meth:`CascadeRule.applies`, with the
        screening threshold lowered by the margin when screening in int8)."""
        cut = screen_threshold - self.screen_margin
        return cut > 0 and self.first_threshold < cut and self.rule.applies(screen_threshold, mask_threshold)

    def warm_up(self, tile_px: int, batch_tiles: int) -> None:
        """Run each part once at the sizes fast mode gives it."""
        block = self.geometry.stride * (TRUNK_BLOCK - 1) + self.trunk_rf
        read = tile_px + 2 * self.meta.halo_px
        self.dense_trunk.run(np.zeros((batch_tiles, read, read, 3), np.float32))
        channels = int(self.head.session.get_inputs()[0].shape[3])
        self.grid_trunk.run(np.zeros((1, block, block, 3), np.float32))
        for head in {id(h): h for h in (self.head, self.grid_head)}.values():
            head.run(np.zeros((HEAD_CHUNK, self.window, self.window, channels), np.float32))

    def read_windows(
        self,
        view: npt.NDArray[np.float32],
        index: tuple[npt.NDArray[np.intp], ...],
        head: OnnxModel | None = None,
    ) -> npt.NDArray[np.float32]:
        """P(bacillus) of the head (default: the fp32 head) on the windows ``view[index]`` (``view``'s last three
        axes are one window)."""
        head = head or self.head
        count = int(index[0].size)
        out = np.empty(count, dtype=np.float32)
        channel = self.meta.positive_index
        for start in range(0, count, HEAD_CHUNK):
            part = tuple(axis[start : start + HEAD_CHUNK] for axis in index)
            out[start : start + HEAD_CHUNK] = head.run(gather_windows(view, part))[:, channel]
        return out

    def features(self, padded: npt.NDArray[np.uint8], rows: int, cols: int) -> npt.NDArray[np.float32]:
        """The grid trunk's features ``[rows + window − 1, cols + window − 1, channels]`` of a padded field (padded
        as :func:`service.engine.fast.predict_grid` pads it): the fp32 coarse trunk's, or its int8 copy's when the
        cascade screens in int8."""
        height, width = rows + self.window - 1, cols + self.window - 1
        out: npt.NDArray[np.float32] | None = None
        for block in self.geometry.blocks(height, width, TRUNK_BLOCK, self.trunk_rf):
            n, m = block.shape
            found = self.grid_trunk.run(block.batch(padded, self.meta.input_scale))[0]  # [channels, n, m]
            if out is None:
                out = np.empty((height, width, found.shape[0]), dtype=np.float32)
            out[block.rows, block.cols] = found[:, :n, :m].transpose(1, 2, 0)
        assert out is not None
        return out

    def grid(self, padded: npt.NDArray[np.uint8], rows: int, cols: int) -> CascadeReading:
        """The coarse grid ``[rows, cols]`` read as the rule says (module description, step 1), by the screening
        parts (int8 when the cascade screens in int8: then within :attr:`screen_margin` of the network where it
        matters)."""
        features = self.features(padded, rows, cols)
        s0, s1, s2 = features.strides
        view = np.lib.stride_tricks.as_strided(
            features,
            shape=(rows, cols, self.window, self.window, features.shape[2]),
            strides=(s0, s1, s0, s1, s2),
            writeable=False,
        )
        step, cut = self.rule.first_step, self.first_threshold
        first_i, first_j = np.meshgrid(np.arange(0, rows, step), np.arange(0, cols, step), indexing="ij")
        first = self.read_windows(view, (first_i.ravel(), first_j.ravel()), self.grid_head).reshape(first_i.shape)
        near = ndi.binary_dilation(first > cut, NEIGHBOURS)
        block = np.ones((step, step), dtype=bool)
        todo = np.kron(near, block)[:rows, :cols]
        todo[::step, ::step] = False
        grid = np.kron(first, np.ones((step, step), dtype=np.float32))[:rows, :cols]
        ii, jj = np.nonzero(todo)
        grid[ii, jj] = self.read_windows(view, (ii, jj), self.grid_head)
        return CascadeReading(np.ascontiguousarray(grid, dtype=np.float32), int(first.size + ii.size))

    def tile_windows(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The dense trunk's features of a batch of scaled, padded tiles ``[n, th + 2·halo, tw + 2·halo, 3]`` as a
        read-only view ``[n, th, tw, window, window, channels]``: the head's window under every pixel."""
        # [n, channels, th + reach, tw + reach] to channels last: a window's taps are then 64 floats each
        features = np.ascontiguousarray(self.dense_trunk.run(batch).transpose(0, 2, 3, 1))
        n, channels = features.shape[0], features.shape[3]
        halo = self.meta.halo_px
        th, tw = batch.shape[1] - 2 * halo, batch.shape[2] - 2 * halo
        dilation = self.geometry.stride
        s0, s1, s2, s3 = features.strides
        return np.lib.stride_tricks.as_strided(
            features,
            shape=(n, th, tw, self.window, self.window, channels),
            strides=(s0, s1, s2, dilation * s1, dilation * s2, s3),
            writeable=False,
        )

    def refine(self, batch: npt.NDArray[np.float32], mask_threshold: float | None = None) -> CascadeReading:
        """P(bacillus) ``[n, th, tw]`` of a batch of scaled, padded tiles ``[n, th + 2·halo, tw + 2·halo, 3]``, read as
        the rule says (module description, step 2). With ``mask_threshold`` and a screening band
        (:attr:`Screening.band_logit`), the pixels near a hot lattice point are read in int8 and only those near
        the mask threshold or the filter's sure level again in fp32."""
        view = self.tile_windows(batch)
        n, th, tw = view.shape[:3]
        step, cut = self.rule.refine_step, self.rule.refine_threshold
        lattice_head, in_int8 = self.head, self.screening is not None and self.screening.refine_threshold is not None
        if in_int8:
            assert self.screening is not None and self.screening.refine_threshold is not None
            lattice_head, cut = self.grid_head, self.screening.refine_threshold
        # the lattice includes the tile's last row and column: every pixel's neighbours that decide whether it is
        # read lie in its own tile
        lattice_y = np.unique(np.r_[np.arange(0, th, step), th - 1])
        lattice_x = np.unique(np.r_[np.arange(0, tw, step), tw - 1])
        b, y, x = np.meshgrid(np.arange(n), lattice_y, lattice_x, indexing="ij")
        first = self.read_windows(view, (b.ravel(), y.ravel(), x.ravel()), lattice_head).reshape(b.shape)
        lower_y = np.searchsorted(lattice_y, np.arange(th), side="right") - 1
        lower_x = np.searchsorted(lattice_x, np.arange(tw), side="right") - 1
        values = first[:, lower_y][:, :, lower_x]
        on_lattice = np.zeros((th, tw), dtype=bool)
        on_lattice[np.ix_(lattice_y, lattice_x)] = True
        hot = np.zeros((n, th, tw), dtype=bool)
        hot[:, on_lattice] = (first > cut).reshape(n, -1)
        reach = 2 * step - 1
        todo = ndi.binary_dilation(hot, np.ones((1, reach, reach), dtype=bool))
        read = int(first.size)
        band = self.screening.band_logit if in_int8 and self.screening is not None else None
        if band is not None and mask_threshold is not None:
            # the second level in int8 too; fp32 only where int8's reading is near a level the answer uses
            second = todo & ~on_lattice
            bb, yy, xx = np.nonzero(second)
            values[bb, yy, xx] = self.read_windows(view, (bb, yy, xx), self.grid_head)
            read += int(bb.size)
            bb, yy, xx = np.nonzero(todo)
            near = near_levels(values[bb, yy, xx], (mask_threshold, SURE_P), band)
            bb, yy, xx = bb[near], yy[near], xx[near]
        else:
            if not in_int8:
                todo[:, on_lattice] = False  # read in fp32 already; an int8 lattice point near a hot one is read again
            bb, yy, xx = np.nonzero(todo)
        values[bb, yy, xx] = self.read_windows(view, (bb, yy, xx))
        return CascadeReading(np.ascontiguousarray(values, dtype=np.float32), read + int(bb.size))
