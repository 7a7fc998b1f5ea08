"""Operations on channels_last feature maps `(N, *spatial, C)` and on maps `(N, *spatial)`, for methods."""
from __future__ import annotations

from typing import Any, Tuple

import keras

_RELATIVE_EPS = 1e-5


def spatial_axes(x: Any) -> Tuple[int, ...]:
    """The spatial axes of a channels_last feature map `(N, *spatial, C)`: 1 .. ndim - 2."""
    return tuple(range(1, len(x.shape) - 1))


def weighted_sum(activations: Any, weights: Any) -> Any:
    """`sum_c weights[n, c] * activations[n, ..., c]`: (N, *spatial, C) and (N, C) -> (N, *spatial)."""
    shape = (-1,) + (1,) * (len(activations.shape) - 2) + (activations.shape[-1],)
    return keras.ops.sum(activations * keras.ops.reshape(weights, shape), axis=-1)


def minmax(cam: Any) -> Any:
    """Per-example min-max normalization of (N, *spatial) maps to [0, 1]; constant maps become 0.

    "Constant" is relative to the map's magnitude: random-init backbones have activations of ~1e-12 whose
    maps are still meaningful, while rounding noise on a flat map is not.
    """
    ops = keras.ops
    axes = tuple(range(1, len(cam.shape)))
    lo = ops.min(cam, axis=axes, keepdims=True)
    hi = ops.max(cam, axis=axes, keepdims=True)
    span = hi - lo
    scale = ops.maximum(ops.abs(hi), ops.abs(lo))
    flat = span <= scale * _RELATIVE_EPS
    return ops.where(flat, ops.zeros_like(cam), (cam - lo) / ops.where(flat, ops.ones_like(span), span))
