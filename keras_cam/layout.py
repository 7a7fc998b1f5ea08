"""Layouts: where a tensor's spatial axes and channel axis are, and resizing maps of any spatial rank.

A feature map or an input is `(N, *spatial, C)` (channels_last) or `(N, C, *spatial)` (channels_first) with
1, 2 or 3 spatial axes: signals `(N, T, C)`, images `(N, H, W, C)`, volumes `(N, D, H, W, C)`. A layer's
layout comes from its own `data_format`, else from the data it receives (traced in `capture/layouts.py`);
the input's from the first layer of the model that has a `data_format`. Inside the explainers every feature map is turned
channels_last, so a method is written once, over "the spatial axes" (1 .. rank) and "the channel axis" (-1)
(docs/architecture.md, "Layouts").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam._resample import interpolation_matrix
from keras_cam._validation import SPATIAL_AXES

_LETTERS = {1: "T", 2: "H, W", 3: "D, H, W"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the axes of a batch are: `rank` spatial axes (1, 2 or 3) and the channels first or last."""

    rank: int
    channels_first: bool = False

    @property
    def spatial_axes(self) -> Tuple[int, ...]:
        start = 2 if self.channels_first else 1
        return tuple(range(start, start + self.rank))

    @property
    def channel_axis(self) -> int:
        return 1 if self.channels_first else self.rank + 1

    def spatial_shape(self, shape: Sequence[Any]) -> Tuple[Any, ...]:
        return tuple(shape[a] for a in self.spatial_axes)

    def describe(self) -> str:
        """`(N, H, W, C)`, `(N, C, T)`, ... for messages."""
        spatial = _LETTERS.get(self.rank, ", ".join(f"S{i}" for i in range(self.rank)))
        return f"(N, C, {spatial})" if self.channels_first else f"(N, {spatial}, C)"

    def axis_names(self) -> Tuple[str, ...]:
        """The names of axes 1.. (without the batch axis), for messages."""
        spatial = SPATIAL_AXES.get(self.rank, tuple(f"spatial axis {i}" for i in range(self.rank)))
        return ("channels",) + spatial if self.channels_first else spatial + ("channels",)

    def to_channels_last(self, x: Any) -> Any:
        """`(N, C, *spatial)` -> `(N, *spatial, C)`; a channels_last tensor is returned as it is."""
        return keras.ops.moveaxis(x, 1, -1) if self.channels_first else x

    def is_spatial(self, shape: Optional[Sequence[Optional[int]]]) -> bool:
        """Whether `shape` is a feature map of this layout whose spatial sizes are all > 1 (or unknown)."""
        if shape is None or len(shape) != self.rank + 2:
            return False
        return all(d is None or d > 1 for d in self.spatial_shape(shape))


class LayoutError(ValueError):
    """A layer's layout cannot be known: it has no `data_format` and the data does not say."""


def data_format(layer: Any) -> Optional[str]:
    """The layer's own `data_format` ("channels_first" or "channels_last"), or None when it has none."""
    own = getattr(layer, "data_format", None)
    return own if own in ("channels_first", "channels_last") else None


def layer_layout(ref: Any, tensor_rank: int) -> Layout:
    """The layout of a rank-`tensor_rank` tensor that a layer produces.

    `ref` is a `LayerRef` (whose `channels_first` was traced through the model's graph or a probing call, or
    given by the user) or a layer. A layer's own `data_format` decides; a layer without one (ReLU,
    BatchNormalization, Add, ...) has the layout of the data it receives, which only a `LayerRef` knows: when
    nothing says, `LayoutError` asks for `data_format=` instead of guessing.
    """
    layer = getattr(ref, "layer", ref)
    channels_first = getattr(ref, "channels_first", None)
    own = data_format(layer)
    if own is not None:
        channels_first = own == "channels_first"
    if channels_first is None:
        name = getattr(ref, "path", None) or getattr(layer, "name", "?")
        raise LayoutError(
            f"Layer '{name}' ({type(layer).__name__}) has no data_format of its own, and where its channels are "
            f"cannot be traced from the model (a rank change such as Reshape before it, or inputs that "
            f"disagree). Pass data_format='channels_first' or 'channels_last' to say how its output is laid out."
        )
    return Layout(tensor_rank - 2, bool(channels_first))


def check_data_format(value: Any) -> Optional[str]:
    """`data_format=` as given to an explainer: None, "channels_first" or "channels_last"."""
    if value not in (None, "channels_first", "channels_last"):
        raise ValueError(f"`data_format` must be None, 'channels_first' or 'channels_last', got {value!r}.")
    return value


def resize(maps: Any, size: Sequence[int]) -> Any:
    """Linear resizing of maps `(N, *spatial)` to `(N, *size)`, one spatial axis after the other.

    Each axis is multiplied by an interpolation matrix built once per (old, new) size: half-pixel centres
    and edge clamping, which is `cv2.resize(..., INTER_LINEAR)` and bilinear `keras.ops.image.resize` without
    antialiasing in 2-D, linear in 1-D and trilinear in 3-D. Plain matrix products: the same code on every
    backend and spatial rank, compiled with the rest of the explainer.
    """
    ops = keras.ops
    spatial = tuple(int(d) for d in maps.shape[1:])
    if len(spatial) != len(size):
        raise ValueError(f"Cannot resize maps of shape {tuple(maps.shape)} to {tuple(size)}.")
    n, shape, out = -1, list(spatial), maps
    # Batched matrix products in place, no transposes (twice as fast as tensordot on TensorFlow's CPU): the
    # last axis as (..., old) @ (old, new), every other one as (new, old) @ (rows, old, the axes after it).
    for axis in reversed(range(len(spatial))):
        old, new = spatial[axis], int(size[axis])
        matrix = interpolation_matrix(old, new)
        if axis == len(spatial) - 1:
            out = ops.matmul(out, ops.convert_to_tensor(matrix, dtype=out.dtype))
        else:
            after = int(np.prod(shape[axis + 1:]))
            out = ops.reshape(out, (n, old, after))
            out = ops.matmul(ops.convert_to_tensor(matrix.T, dtype=out.dtype), out)
        shape[axis] = new
        out = ops.reshape(out, [n] + shape)
    return out
