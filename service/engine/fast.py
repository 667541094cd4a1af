"""Fast mode: a coarse pass over the whole field, then the dense network only where the coarse pass sees anything.

The coarse network is the patch CNN run at its own strides (exported by ``python -m training fast``): its output
at grid point (i, j) is the dense network's P(bacillus) at field pixel ``(phase_y + stride·i, phase_x +
stride·j)``, exactly, for about 1/28 of the work. Most of a field is empty, so:

1. **Coarse pass** (:func:`predict_grid`): the grid over the whole field, in blocks of grid points (exact at any
   block size, as tiles are for the dense network), one grid point past the field's last row and column.
2. **Screening**: the field is cut into refinement tiles (:func:`service.engine.tiling.tile_grid`); a tile is
   *refined* when a grid point within ``margin`` pixels of its output area has P above the screening threshold.
3. **Refinement**: refined tiles go through the dense network exactly as in exact mode
   (:class:`service.engine.mosaic.PaddedField`). A tile whose mask reaches an edge or corner pulls in the
   neighbour beyond it, until no refined mask touches an unrefined tile: an object is never cut at the edge of
   refinement (a bacillus lying across a tile corner is found whole).
4. Elsewhere the heatmap is the grid interpolated bilinearly (:func:`upsample`): approximate, and never above the
   screening threshold (every grid point an interpolated pixel uses lies within ``margin`` of its tile), so never
   in the mask. Responses say so (``mode: fast``).

With ``margin >= stride`` and a screening threshold below the mask threshold, the mask is exact mode's wherever
refinement reached; what fast mode can miss is an object whose every nearby grid point stays under the screening
threshold. How often that happens is measured (``bench/fast_mode.py``, ``docs/results.md`` section 10), not
assumed.

With the model folder's cascade (:mod:`service.engine.cascade`, fp32 on the CPU), steps 1 and 3 compute the
network's output only where a sparser look of the same network saw anything (a third of the grid points and of the
refined pixels on real fields); what it leaves unread stays below the screening and mask thresholds. Its coarse
grid may be read by int8 copies of its parts (step 1 only), screening at the threshold less the model's margin for
int8's error: refinement, and so the mask, stays fp32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from service.engine.errors import ModelContractError
from service.engine.grid import GridGeometry
from service.engine.model import ModelMeta, OnnxModel
from service.engine.mosaic import PaddedField
from service.engine.tiling import Tile

if TYPE_CHECKING:
    from service.engine.cascade import Cascade

PRECISIONS = ("int8", "fp32")


def grid_shape(field_shape: tuple[int, ...], geometry: GridGeometry) -> tuple[int, int]:
    """Grid points (rows, columns) of a field, one past its last row and column."""
    return geometry.points(field_shape[0], 0), geometry.points(field_shape[1], 1)


def pad_for_grid(field: npt.NDArray[np.uint8], meta: ModelMeta, geometry: GridGeometry) -> npt.NDArray[np.uint8]:
    """The field padded by the halo (the model's padding), then at its end (edge) as far as the last grid
    point's window reaches."""
    rows, cols = grid_shape(field.shape, geometry)
    rf, halo = 2 * meta.halo_px + 1, meta.halo_px
    padded = np.pad(field, ((halo, halo), (halo, halo), (0, 0)), mode=meta.input_padding)
    need_y = geometry.phase[0] + geometry.stride * (rows - 1) + rf
    need_x = geometry.phase[1] + geometry.stride * (cols - 1) + rf
    return np.pad(
        padded, ((0, max(0, need_y - padded.shape[0])), (0, max(0, need_x - padded.shape[1])), (0, 0)), mode="edge"
    )


def predict_grid(
    field: npt.NDArray[np.uint8], coarse: OnnxModel, geometry: GridGeometry, block_points: int = 64
) -> npt.NDArray[np.float32]:
    """P(bacillus) of the coarse network at every grid point of a (normalised) field, one point past its end.

    Grid points inside the field equal the dense network's heatmap at their pixels; the extra row and column
    (past the last pixel) read edge-padded context and serve interpolation only.
    """
    meta = coarse.meta
    rows, cols = grid_shape(field.shape, geometry)
    padded = pad_for_grid(field, meta, geometry)
    grid = np.empty((rows, cols), dtype=np.float32)
    for block in geometry.blocks(rows, cols, block_points, 2 * meta.halo_px + 1):
        n, m = block.shape
        grid[block.rows, block.cols] = coarse.run(block.batch(padded, meta.input_scale))[0, :n, :m, meta.positive_index]
    return grid


def _weights(length: int, phase: int, stride: int, points: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    position = (np.arange(length, dtype=np.float32) - phase) / stride
    lower = np.clip(np.floor(position).astype(np.intp), 0, points - 2)
    return lower, np.clip(position - lower, 0.0, 1.0).astype(np.float32)


def upsample(grid: npt.NDArray[np.float32], geometry: GridGeometry, shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """The grid interpolated bilinearly to every pixel of a field of ``shape`` (pixels before the first grid
    point take its value)."""
    if grid.shape[0] < 2 or grid.shape[1] < 2:
        raise ValueError(f"a grid of {grid.shape} cannot be interpolated")
    rows, t = _weights(shape[0], geometry.phase[0], geometry.stride, grid.shape[0])
    by_row = grid[rows] * (1 - t)[:, None] + grid[rows + 1] * t[:, None]
    cols, u = _weights(shape[1], geometry.phase[1], geometry.stride, grid.shape[1])
    # the same products and sum as by_row[:, cols] · (1 − u) + by_row[:, cols + 1] · u, with two field-sized arrays
    out = np.asarray(by_row[:, cols], dtype=np.float32)
    out *= (1 - u)[None, :]
    right = by_row[:, cols + 1]
    right *= u[None, :]
    out += right
    return out


@dataclass(frozen=True)
class FastNetworks:
    """Fast mode's two networks, checked to belong to one dense model.

    Attributes:
        coarse: the coarse (strided) network.
        refine: the dense network the refined tiles go through (the fp32 dense network, or its int8 copy).
        precision: ``fp32`` or ``int8``.
        geometry: the coarse grid's stride and phase.
        cascade: the networks cut in two at their last convolution (:mod:`service.engine.cascade`), when the
            folder has them and they are used: the coarse pass and the refinement then read the network's outputs
            where the cascade's rule says, not everywhere.
    """

    coarse: OnnxModel
    refine: OnnxModel
    precision: str
    geometry: GridGeometry
    cascade: Cascade | None = None

    @staticmethod
    def pair(dense: OnnxModel, coarse: OnnxModel, refine: OnnxModel, precision: str) -> FastNetworks:
        """Check that ``coarse`` and ``refine`` were made from ``dense`` and read fields as it does.

        Raises:
            ModelContractError: another model's network, or another receptive field, scale, padding,
                normalisation or class list; naming the file.
        """
        if precision not in PRECISIONS:
            raise ModelContractError(f"fast precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        for network in (coarse, refine):
            if network is dense:
                continue
            made_from = network.meta.raw.get("dense_model_id")
            if made_from != dense.meta.model_id:
                raise ModelContractError(
                    f"{network.path}: made from {made_from}, not from {dense.meta.model_id}; "
                    "rewrite the folder's fast variants (python -m training fast)"
                )
            same = ("receptive_field_px", "input_scale", "input_padding", "classes", "normalisation")
            for key in same:
                if getattr(network.meta, key) != getattr(dense.meta, key):
                    raise ModelContractError(f"{network.path}: {key} differs from {dense.path}'s")
        return FastNetworks(coarse, refine, precision, GridGeometry.of(coarse))


@dataclass(frozen=True)
class FastSettings:
    """How fast mode screens and refines.

    Attributes:
        screen_threshold: a grid P above which the tiles around it are refined (kept at or below the mask
            threshold by the segmenter).
        tile_px: side of a refinement tile.
        batch_tiles: refinement tiles per ONNX Runtime call.
        block_points: grid points per side of a coarse block.

    The defaults were chosen by measurement on 2 CPU cores: blocks of 32² grid points (``docs/results.md`` section
    10, "Memory": as fast as larger blocks, at half the peak memory); 32 px tiles, 8 per call (section 15: half the
    pixels of 64 px tiles refined, the same bacilli on every test field of both labs, the same pixels per call).
    """

    screen_threshold: float = 0.3
    tile_px: int = 32
    batch_tiles: int = 8
    block_points: int = 32


@dataclass(frozen=True)
class FastHeatmap:
    """A fast-mode heatmap and what it cost.

    Attributes:
        heatmap: ``[y, x]`` P(bacillus): exact (at the networks' precision) inside refined tiles, the grid
            interpolated elsewhere.
        refined: ``[rows, columns]`` bool, the refinement tiles that went through the dense network.
        tile_px: side of a refinement tile.
        coarse_seconds: the coarse pass.
        refine_seconds: screening, refinement and interpolation.
        coarse_read: grid points whose output the network computed (all of them without a cascade).
        refine_read: refined pixels whose output the network computed (all of them without a cascade).
    """

    heatmap: npt.NDArray[np.float32]
    refined: npt.NDArray[np.bool_]
    tile_px: int
    coarse_seconds: float
    refine_seconds: float
    coarse_read: int = 0
    refine_read: int = 0

    @property
    def tiles(self) -> int:
        return int(self.refined.size)

    @property
    def refined_tiles(self) -> int:
        return int(self.refined.sum())


def screened(
    grid: npt.NDArray[np.float32], geometry: GridGeometry, tiles: list[Tile], margin: int, cut: float
) -> list[bool]:
    """Whether each tile is refined: a grid point within ``margin`` px of its output area is above ``cut``."""
    # grid points above the cut counted over any rectangle at once (a summed-area table); tiles share their ranges
    above = np.zeros((grid.shape[0] + 1, grid.shape[1] + 1), dtype=np.int64)
    above[1:, 1:] = np.cumsum(np.cumsum(grid > cut, axis=0), axis=1)
    rows = {
        key: geometry.index_range(key[0] - margin, key[0] + key[1] + margin, 0, grid.shape[0])
        for key in {(t.y, t.height) for t in tiles}
    }
    cols = {
        key: geometry.index_range(key[0] - margin, key[0] + key[1] + margin, 1, grid.shape[1])
        for key in {(t.x, t.width) for t in tiles}
    }
    hot = []
    for t in tiles:
        (i0, i1), (j0, j1) = rows[t.y, t.height], cols[t.x, t.width]
        hot.append(bool(above[i1, j1] - above[i0, j1] - above[i1, j0] + above[i0, j0] > 0))
    return hot


def _spill(heatmap: npt.NDArray[np.float32], threshold: float, t: Tile) -> list[tuple[int, int]]:
    """Neighbour offsets (row, column) whose tile the mask inside tile ``t`` touches at its edges or corners."""
    inside = heatmap[t.y : t.y + t.height, t.x : t.x + t.width] > threshold
    edges = ((inside[0], -1, 0), (inside[-1], 1, 0), (inside[:, 0], 0, -1), (inside[:, -1], 0, 1))
    offsets = [(dy, dx) for edge, dy, dx in edges if edge.any()]
    corners = ((0, 0, -1, -1), (0, -1, -1, 1), (-1, 0, 1, -1), (-1, -1, 1, 1))
    offsets += [(dy, dx) for y, x, dy, dx in corners if inside[y, x]]
    return offsets


def fast_heatmap(
    field: npt.NDArray[np.uint8], networks: FastNetworks, settings: FastSettings, threshold: float
) -> FastHeatmap:
    """Fast mode's heatmap of a (normalised) ``[y, x, 3]`` uint8 field; see the module's description.

    ``threshold`` is the mask threshold: refinement grows across tile edges its mask reaches.
    """
    started = time.perf_counter()
    geometry, cascade = networks.geometry, networks.cascade
    cut = min(settings.screen_threshold, threshold)
    if cascade is not None and not cascade.applies(cut, threshold):
        cascade = None  # thresholds at or below the cascade's own: read everything, as without one
    if cascade is not None:
        cut -= cascade.screen_margin  # a grid read in int8 screens with the model's margin for int8's error
    read = {"refine": 0}
    if cascade is None:
        grid = predict_grid(field, networks.coarse, geometry, settings.block_points)
        coarse_read = grid.size
    else:
        rows, cols = grid_shape(field.shape, geometry)
        reading = cascade.grid(pad_for_grid(field, networks.coarse.meta, geometry), rows, cols)
        grid, coarse_read = reading.values, reading.read
    coarse_done = time.perf_counter()
    meta = networks.refine.meta
    padded = PaddedField(
        field, halo_px=meta.halo_px, input_scale=meta.input_scale, padding=meta.input_padding, tile_px=settings.tile_px
    )

    def refine(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if cascade is None:
            probabilities = networks.refine.run(batch)
            read["refine"] += probabilities.shape[0] * probabilities.shape[1] * probabilities.shape[2]
            return probabilities[..., meta.positive_index : meta.positive_index + 1]
        tiles_read = cascade.refine(batch, threshold)
        read["refine"] += tiles_read.read
        return tiles_read.values[..., None]

    heatmap = upsample(grid, geometry, padded.shape)
    tiles, columns = padded.tiles, padded.columns
    rows = len(tiles) // columns
    refined = np.zeros((rows, columns), dtype=bool)
    todo = [k for k, hot in enumerate(screened(grid, geometry, tiles, geometry.stride, cut)) if hot]
    while todo:
        for k in todo:
            refined[divmod(k, columns)] = True
        padded.run([tiles[k] for k in todo], refine, heatmap, batch_tiles=settings.batch_tiles, channel=0)
        grown: set[int] = set()
        for k in todo:
            row, col = divmod(k, columns)
            for dy, dx in _spill(heatmap, threshold, tiles[k]):
                r, c = row + dy, col + dx
                if 0 <= r < rows and 0 <= c < columns and not refined[r, c]:
                    grown.add(r * columns + c)
        todo = sorted(grown)
    return FastHeatmap(
        heatmap,
        refined,
        settings.tile_px,
        coarse_done - started,
        time.perf_counter() - coarse_done,
        coarse_read,
        read["refine"],
    )
