"""Linear resampling along any axes with cv2.resize's INTER_LINEAR convention: numpy only, no Keras.

One convention everywhere: half-pixel centres (align_corners=False) and edge samples repeated beyond the
first and last centre. `resize_linear` serves the numpy side (metrics, pictures); `interpolation_matrix` the
compiled side (`keras_cam.layout.resize` multiplies by it), so maps and scores agree to float rounding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["interpolation_matrix", "resize_axis", "resize_linear"]


def _coordinates(old: int, new: int):
    """For each of `new` output samples: the two input samples it lies between and its weight on the second."""
    src = np.clip((np.arange(new) + 0.5) * (old / new) - 0.5, 0, old - 1)
    low = np.floor(src).astype(np.intp)
    return low, np.minimum(low + 1, old - 1), (src - low).astype(np.float32)


def interpolation_matrix(old: int, new: int) -> np.ndarray:
    """float32 (old, new): column j holds the linear-interpolation weights of output sample j."""
    low, high, weight = _coordinates(old, new)
    matrix = np.zeros((old, new), np.float32)
    np.add.at(matrix, (low, np.arange(new)), 1.0 - weight)
    np.add.at(matrix, (high, np.arange(new)), weight)
    return matrix


def resize_axis(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear resize along one axis: pixel centres line up (half-pixel centres, align_corners=False), and
    samples beyond the first and last centre repeat the edge value, as cv2.resize does with INTER_LINEAR."""
    i0, i1, w = _coordinates(a.shape[axis], size)
    w = w.reshape([-1 if k == axis else 1 for k in range(a.ndim)])
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def resize_linear(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A new float32 array of `shape`: linear in 1-D, bilinear in 2-D, trilinear in 3-D.

    Linear interpolation is separable, so one axis at a time gives the same values as the N-D formula
    (and, in 2-D, as `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` up to float rounding).
    """
    out = np.array(a, np.float32)  # a copy: the caller's array is never returned or modified
    for axis, size in enumerate(shape):
        if out.shape[axis] != size:
            out = resize_axis(out, axis, int(size))
    return out
