"""Running compiled functions over arrays in chunks, and remembering compiled functions.

Every part of keras-cam that runs the model on arrays (explainers, Score-CAM's masked passes, feature maps,
the filter visualizer, the faithfulness scores) goes through `run_batched`: chunks of a fixed number of rows,
the last one padded by repeating its last row, so one compiled function (one input signature) serves every
chunk; outputs come back as numpy arrays with the padding cut off. Compiled functions are kept in a
`FunctionCache`, keyed by what they were traced for (see docs/architecture.md, "Compile once").
"""
from __future__ import annotations

import collections
import math
import weakref
from typing import Any, Callable, Hashable, Sequence, Tuple

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam._validation import check_int

#: Rows per compiled call when the caller does not say (images, masked images, perturbed images).
DEFAULT_BATCH_SIZE = 32


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """`batch_size` as a positive int, or one clear `ValueError`."""
    return check_int(name, batch_size, 1)


def chunk_size(n: int, batch_size: Any = None, even: bool = False) -> int:
    """Rows per chunk for `n` rows: at most `batch_size` (default 32) and never more than `n`.

    With `even`, the rows are spread over the fewest chunks as evenly as possible (ceil(n / count)), so the
    padding of the last chunk is small; otherwise every chunk has `min(n, batch_size)` rows.
    """
    size = min(n, DEFAULT_BATCH_SIZE if batch_size is None else check_batch_size(batch_size))
    if even and size:
        size = math.ceil(n / math.ceil(n / size))
    return max(size, 1)


def pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """Pads axis 0 to `rows` by repeating the last row (one compiled signature for ragged chunks)."""
    if a.shape[0] >= rows:
        return a
    return np.concatenate([a, np.repeat(a[-1:], rows - a.shape[0], axis=0)], axis=0)


def signature(arrays: Sequence[np.ndarray], rows: int) -> tuple:
    """What a compiled function is traced for: each chunk's shape (with `rows` rows) and dtype."""
    return tuple(((rows,) + a.shape[1:], a.dtype.str) for a in arrays)


def to_tensors(arrays: Sequence[Any]) -> list:
    """Backend tensors for numpy arrays (what compiled functions take)."""
    return [keras.ops.convert_to_tensor(a) for a in arrays]


def run_batched(call: Callable[..., Any], arrays: Sequence[np.ndarray], size: int) -> Tuple[np.ndarray, ...]:
    """Runs `call(*chunks)` over chunks of `size` rows of every array and concatenates its outputs.

    Args:
        call: takes one padded numpy chunk per array and returns a tensor or a tuple of tensors whose first
            axis is the chunk's rows.
        arrays: arrays with the same number of rows.
        size: rows per chunk; the last chunk is padded to it by repeating its last row.

    Returns:
        A tuple with one numpy array per output of `call`, the padding removed.
    """
    n = arrays[0].shape[0]
    parts = []
    for start in range(0, n, size):
        rows = min(size, n - start)
        out = call(*[pad_rows(a[start : start + size], size) for a in arrays])
        out = out if isinstance(out, (tuple, list)) else (out,)
        parts.append([np.asarray(keras.ops.convert_to_numpy(o))[:rows] for o in out])
    return tuple(np.concatenate(column) for column in zip(*parts))


class FunctionCache:
    """Compiled functions by key, the least recently used dropped first beyond `maxsize`.

    A key says what a function was traced for (its purpose, options and input signature), so a hit never
    retraces. Dropping a compiled function frees its traces (graphs, jitted executables).
    """

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = check_batch_size(maxsize, "maxsize")
        self._entries: "collections.OrderedDict[Hashable, Callable]" = collections.OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Callable]) -> Callable:
        """The function for `key`, built with `build()` (and remembered) on a miss."""
        fn = self._entries.get(key)
        if fn is None:
            fn = self._entries[key] = build()
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return fn

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_PER_MODEL: "weakref.WeakKeyDictionary[Any, FunctionCache]" = weakref.WeakKeyDictionary()


def model_cache(model: Any) -> FunctionCache:
    """A `FunctionCache` that lives as long as `model` (held weakly: the cache never keeps a model alive).

    Functions stored here must not hold `model` strongly themselves (close over `weakref.ref(model)`).
    """
    cache = _PER_MODEL.get(model)
    if cache is None:
        cache = _PER_MODEL[model] = FunctionCache()
    return cache


def compiled_forward(model: Any, sig: tuple) -> Callable:
    """`model(x, training=False)` compiled for one input signature, kept while `model` lives."""
    ref = weakref.ref(model)

    def forward(x: Any) -> Any:
        return ref()(x, training=False)

    return model_cache(model).get(("forward", sig), lambda: seam.get().compile(forward, model))
