"""Linear resampling of maps along any axes, with cv2.resize's INTER_LINEAR convention (private helpers)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["resize_linear"]


def _resize_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear resize along one axis: pixel centres line up (half-pixel centres, align_corners=False), and
    samples beyond the first and last centre repeat the edge value, as cv2.resize does with INTER_LINEAR."""
    n = a.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(a.ndim)])
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def resize_linear(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A new float32 array of `shape`: linear in 1-D, bilinear in 2-D, trilinear in 3-D.

    Linear interpolation is separable, so one axis at a time gives the same values as the N-D formula
    (and, in 2-D, as `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` up to float rounding).
    """
    out = np.array(a, np.float32)  # a copy: the caller's array is never returned or modified
    for axis, size in enumerate(shape):
        if out.shape[axis] != size:
            out = _resize_axis(out, axis, int(size))
    return out
