"""Per-map statistics of an audit, computed chunk by chunk: where each map's energy lies, and its small copy.

A map's *energy* is its positive part (signed maps, e.g. LRP relevance, count what speaks for the class);
every share below is a fraction of that total, so maps from any method, normalized or not, compare. The
*small copy* of a map (`grid`) is its energy distribution area-pooled to at most 32 samples per axis for
signals and images and 8 for volumes: what the clustering works on (docs/architecture.md, "Dataset audit").
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Samples per axis of the small copy, by the maps' spatial rank (SpRAy downsizes to a few dozen pixels).
GRID = {1: 32, 2: 32, 3: 8}
#: The share of each axis counted as the border (at least one sample).
BORDER = 0.1
#: The top share of samples whose energy measures concentration.
TOP = 0.1

_AXIS_WORDS = {
    1: (("start", "middle", "end"),),
    2: (("top", "middle", "bottom"), ("left", "centre", "right")),
    3: (("front", "middle", "back"), ("top", "middle", "bottom"), ("left", "centre", "right")),
}


def area_matrix(old: int, new: int) -> np.ndarray:
    """float32 (old, new): column j averages the input samples under output sample j, by overlap, so that
    `x @ m * (old / new)` keeps the sum of `x` (an energy-preserving downsizing). Identity when new >= old."""
    if new >= old:
        return np.eye(old, dtype=np.float32)
    edges = np.arange(new + 1) * (old / new)
    lo, hi = edges[:-1], edges[1:]
    start = np.arange(old)[:, None]
    overlap = np.clip(np.minimum(start + 1, hi[None]) - np.maximum(start, lo[None]), 0, None)
    return (overlap / (old / new)).astype(np.float32)


def grid_shape(spatial: Sequence[int]) -> Tuple[int, ...]:
    side = GRID[len(spatial)]
    return tuple(min(s, side) for s in spatial)


def downsize(p: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(N, *spatial) energy distributions -> (N, *shape), sums kept."""
    out = p
    for axis, new in enumerate(shape, start=1):
        old = out.shape[axis]
        if new < old:
            m = area_matrix(old, new) * (old / new)
            out = np.moveaxis(np.tensordot(out, m, axes=([axis], [0])), -1, axis)
    return out


def thirds(n: int) -> np.ndarray:
    """Start indices of the three parts of an axis of n samples (as `np.array_split`)."""
    return np.array([0, n // 3 + (n % 3 > 0), 2 * (n // 3) + (n % 3 > 0) + (n % 3 > 1)])


def region_names(spatial: Sequence[int]) -> List[str]:
    """Names of the 3 ** rank regions (thirds of each axis, row-major): "top-left", "centre", "end", ..."""
    words = _AXIS_WORDS[len(spatial)]
    names = [""]
    for axis_words in words:
        names = [f"{a}-{b}" if a else b for a in names for b in axis_words]
    return [_tidy(n) for n in names]


def _tidy(name: str) -> str:
    parts = [p for p in name.split("-") if p not in ("middle", "centre")]
    return "-".join(parts) if parts else "centre"


def region_extent(spatial: Sequence[int], index: int) -> str:
    """Where region `index` lies, in samples: "rows 0-20, columns 0-20"."""
    axes = {1: ("samples",), 2: ("rows", "columns"), 3: ("slices", "rows", "columns")}[len(spatial)]
    digits = np.unravel_index(index, (3,) * len(spatial))
    parts = []
    for name, n, d in zip(axes, spatial, digits):
        starts = list(thirds(n)) + [n]
        parts.append(f"{name} {starts[d]}-{starts[d + 1] - 1}")
    return ", ".join(parts)


def masks_from_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """bool (N, H, W) from int (N, 4) half-open boxes (x0, y0, x1, y1)."""
    h, w = shape
    rows, cols = np.arange(h), np.arange(w)
    inside_y = (rows[None] >= boxes[:, 1:2]) & (rows[None] < boxes[:, 3:4])
    inside_x = (cols[None] >= boxes[:, 0:1]) & (cols[None] < boxes[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def border_mask(spatial: Sequence[int]) -> np.ndarray:
    """bool (*spatial): samples within BORDER of an edge along any axis."""
    out = np.zeros(tuple(spatial), bool)
    for axis, n in enumerate(spatial):
        band = max(1, int(round(BORDER * n)))
        index = [slice(None)] * len(spatial)
        index[axis] = np.r_[0:band, n - band:n]
        out[tuple(index)] = True
    return out


class ChunkStatistics:
    """What one pass over the maps gathers: per-map scores and small copies, per-class sums.

    Memory is O(N * grid) for the small copies (float16) and O(classes * map) for the sums, whatever the
    chunk size.
    """

    def __init__(self, n: int, spatial: Tuple[int, ...], num_classes: int) -> None:
        self.spatial = spatial
        self.grid = grid_shape(spatial)
        self.features = np.zeros((n, int(np.prod(self.grid))), np.float16)
        self.regions = np.zeros((n, 3 ** len(spatial)), np.float32)
        self.total = np.zeros(n, np.float64)
        self.in_mask = np.full(n, np.nan)
        self.pointing = np.full(n, np.nan)
        self.border = np.full(n, np.nan)
        self.concentration = np.full(n, np.nan)
        self.peaks = np.zeros((n, len(spatial)), np.int32)  # where each map is largest
        self.sums = np.zeros((num_classes,) + spatial, np.float64)
        self.counts = np.zeros(num_classes, np.int64)
        self._border = border_mask(spatial)
        self._top = max(1, int(round(TOP * np.prod(spatial))))
        self._cuts = [thirds(s) for s in spatial]

    def add(self, start: int, maps: np.ndarray, labels: np.ndarray, masks: Optional[np.ndarray]) -> None:
        """One chunk: float32 (n, *spatial) maps, their labels and (optional) bool masks."""
        stop = start + len(maps)
        energy = np.clip(np.nan_to_num(maps, nan=0.0), 0.0, None)
        flat = energy.reshape(len(maps), -1)
        total = flat.sum(axis=1)
        self.total[start:stop] = total
        self.peaks[start:stop] = np.stack(np.unravel_index(flat.argmax(axis=1), self.spatial), axis=1)
        safe = np.where(total > 0, total, 1.0)
        p = energy / safe.reshape((-1,) + (1,) * len(self.spatial))
        empty = total <= 0  # an all-zero map has no distribution: its scores stay NaN
        pf = p.reshape(len(maps), -1)
        self.border[start:stop] = np.where(empty, np.nan, pf[:, self._border.ravel()].sum(axis=1))
        top = -np.partition(-pf, self._top - 1, axis=1)[:, :self._top]
        self.concentration[start:stop] = np.where(empty, np.nan, top.sum(axis=1))
        if masks is not None:
            mf = masks.reshape(len(maps), -1)
            hit = mf[np.arange(len(maps)), flat.argmax(axis=1)]
            no_mask = ~mf.any(axis=1)
            self.in_mask[start:stop] = np.where(empty | no_mask, np.nan, (pf * mf).sum(axis=1))
            self.pointing[start:stop] = np.where(empty | no_mask, np.nan, hit.astype(np.float64))
        regions = p
        for axis, cuts in enumerate(self._cuts, start=1):
            regions = np.add.reduceat(regions, cuts, axis=axis)
        self.regions[start:stop] = regions.reshape(len(maps), -1)
        self.features[start:stop] = downsize(p, self.grid).reshape(len(maps), -1).astype(np.float16)
        np.add.at(self.counts, labels, 1)
        for c in np.unique(labels):
            self.sums[c] += maps[labels == c].sum(axis=0, dtype=np.float64)

    def mean_maps(self) -> np.ndarray:
        """float32 (classes, *spatial): each class's mean map (zeros for a class with no map)."""
        counts = np.maximum(self.counts, 1).reshape((-1,) + (1,) * len(self.spatial))
        return (self.sums / counts).astype(np.float32)


def class_summary(stats: ChunkStatistics, members: np.ndarray) -> Dict[str, float]:
    """Medians and means of the per-map scores over `members` (NaN where none has the score)."""

    def med(values: np.ndarray) -> float:
        v = values[members]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else float("nan")

    def mean(values: np.ndarray) -> float:
        v = values[members]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    return {
        "energy_in_mask": med(stats.in_mask),
        "pointing_game": mean(stats.pointing),
        "border_share": med(stats.border),
        "concentration": med(stats.concentration),
    }
