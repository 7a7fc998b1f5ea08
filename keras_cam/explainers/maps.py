"""Operations on channels_last feature maps `(N, *spatial, C)` and on maps `(N, *spatial)`, for methods, and the
turning of a captured layer output (any layout, or tokens) into one."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import layout
from keras_cam.capture.graph import LayerRef
from keras_cam.capture.tokens import Reshape, tokens_to_grid

_RELATIVE_EPS = 1e-5


def spatial_axes(x: Any) -> Tuple[int, ...]:
    """The spatial axes of a channels_last feature map `(N, *spatial, C)`: 1 .. ndim - 2."""
    return tuple(range(1, len(x.shape) - 1))


def weigh(activations: Any, weights: Any) -> Any:
    """`weights[n, c] * activations[n, ..., c]`: (N, *spatial, C) and (N, C) -> (N, *spatial, C)."""
    shape = (-1,) + (1,) * (len(activations.shape) - 2) + (activations.shape[-1],)
    return activations * keras.ops.reshape(weights, shape)


def weighted_sum(activations: Any, weights: Any) -> Any:
    """`sum_c weights[n, c] * activations[n, ..., c]`: (N, *spatial, C) and (N, C) -> (N, *spatial)."""
    return keras.ops.sum(weigh(activations, weights), axis=-1)


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


def positions(x: Any) -> Any:
    """(N, *spatial, C) -> (N, positions, C), centred over the positions of each image."""
    x = keras.ops.reshape(x, (-1, int(np.prod(tuple(x.shape[1:-1])))) + (x.shape[-1],))
    return x - keras.ops.mean(x, axis=1, keepdims=True)


def signed_projection(projection: Any, x: Any, spatial: tuple) -> Any:
    """(N, positions) projections, made to correlate positively with the channel sum of the centred samples
    `x` (N, positions, C), and reshaped to (N, *spatial)."""
    ops = keras.ops
    reference = ops.sum(x, axis=-1)
    sign = ops.where(ops.sum(projection * reference, axis=1, keepdims=True) < 0, -1.0, 1.0)
    return ops.reshape(projection * sign, (-1,) + tuple(spatial))


def first_component(features: Any) -> Any:
    """The projection of each location of (N, *spatial, C) on the first principal direction, (N, *spatial)."""
    x = positions(features)
    _, _, vt = seam.decompose(lambda m: keras.ops.svd(m, full_matrices=False), x)
    return signed_projection(keras.ops.einsum("npc,nc->np", x, vt[:, 0, :]), x, features.shape[1:-1])


def channels_last(model: keras.layers.Layer, ref: LayerRef, a: Any, g: Any, rank: int,
                  size: Optional[Tuple[int, ...]], reshape: Reshape = None) -> Tuple[Any, Any]:
    """A captured feature map (and its gradient, or None) checked and turned channels_last float32; tokens
    `(N, L, D)` of an image model are laid out on their grid (docs/architecture.md, "Token maps")."""
    if rank == 2 and len(a.shape) == 3:
        return tokens_to_grid(model, ref.path, keras.ops.cast(a, "float32"),
                              None if g is None else keras.ops.cast(g, "float32"), size, reshape)
    found = layout.layer_layout(ref, len(a.shape)) if 3 <= len(a.shape) <= 5 else None
    if found is None or found.rank != rank or all(d == 1 for d in found.spatial_shape(a.shape)):
        raise ValueError(
            f"Layer '{ref.path}' produced a tensor of shape {tuple(a.shape)} at run time, which is not a "
            f"feature map with {rank} spatial {'axis' if rank == 1 else 'axes'} as the input has "
            f"({layout.Layout(rank).describe()} or channels first). Pick a convolutional layer."
        )
    a = found.to_channels_last(keras.ops.cast(a, "float32"))
    if g is not None:
        g = keras.ops.cast(g, "float32")
        # (N, K, ...) gradients: the channel axis of channels_first maps is then axis 2.
        g = keras.ops.moveaxis(g, len(g.shape) - rank - 1, -1) if found.channels_first else g
    return a, g
