"""Running compiled functions over arrays in chunks, and remembering compiled functions.

Every part of keras-cam that runs the model on arrays (explainers, Score-CAM's masked passes, feature maps,
the filter visualizer, the faithfulness scores) goes through `run_batched`: chunks of a fixed number of rows,
the last one padded by repeating its last row, so one compiled function (one input signature) serves every
chunk; outputs come back as numpy arrays with the padding cut off. Compiled functions are kept in a
cache, keyed by what they were traced for: `SharedCache` (`CACHE`) for everything that may be shared between
objects on the same model, `FunctionCache` for what belongs to one object (docs/architecture.md, "Compile
once").
"""
from __future__ import annotations

import collections
import math
import threading
import weakref
from typing import Any, Callable, Dict, Hashable, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam.backend.common import return_freed_memory
from keras_cam.capture.hooks import current_scope
from keras_cam._validation import check_int

#: Rows per compiled call when the caller does not say (images, masked images, perturbed images).
DEFAULT_BATCH_SIZE = 32


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    """`batch_size` as a positive int, or one clear `ValueError`."""
    return check_int(name, batch_size, 1)


def chunk_size(n: int, batch_size: Any = None, even: bool = False, bucket: bool = False) -> int:
    """Rows per chunk for `n` rows: at most `batch_size` (default 32) and never more than needed.

    With `even`, the rows are spread over the fewest chunks as evenly as possible (ceil(n / count)), so the
    padding of the last chunk is small. With `bucket`, fewer rows than `batch_size` are rounded up to a power
    of two, so that calls with 1 to `batch_size` rows share a handful of compiled signatures (1, 2, 4, ...,
    `batch_size`) instead of one each; padding costs at most twice the rows of a small call.
    """
    cap = DEFAULT_BATCH_SIZE if batch_size is None else check_batch_size(batch_size)
    size = max(min(n, cap), 1)
    if even:
        size = math.ceil(n / math.ceil(n / size))
    if bucket and size < cap:
        size = min(cap, 1 << (size - 1).bit_length())
    return size


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
    """Compiled functions of one object by key, the least recently used dropped first beyond `maxsize`.

    A key says what a function was traced for (its purpose, options and input signature), so a hit never
    retraces. Dropping a compiled function frees its traces (graphs, jitted executables).
    """

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = check_batch_size(maxsize, "maxsize")
        self._entries: "collections.OrderedDict[Hashable, Callable]" = collections.OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Callable]) -> Callable:
        """The function for `key`, built with `build()` (and remembered) on a miss."""
        key = (key, settings_key())
        fn = self._entries.get(key)
        if fn is None:
            fn = self._entries[key] = build()
            if len(self._entries) > self.maxsize:
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
                return_freed_memory()
        else:
            self._entries.move_to_end(key)
        return fn

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SharedCache:
    """Compiled functions shared by everything that runs the same model, by (model, key).

    Models are held weakly: when a model is collected, its entries are dropped with it, and the functions
    stored here must not hold their model strongly either (close over `weakref.ref(model)`, or reach it
    through an `Owner`). Entries of every model share one least-recently-used bound, `maxsize`, so a
    long-running process does not grow: a compiled function per signature is a few MB of graphs or
    executables (docs/architecture.md, "Compile once").
    """

    def __init__(self, maxsize: int = 16) -> None:
        self.maxsize = check_int("maxsize", maxsize, 1)
        self._entries: "collections.OrderedDict[Hashable, Any]" = collections.OrderedDict()
        self._models: Dict[int, weakref.ref] = {}
        self._lock = threading.RLock()  # weakref callbacks run whenever the collector does

    def get(self, model: Any, key: Hashable, build: Callable[[], Any]) -> Any:
        """The entry for (`model`, `key`), built with `build()` (and remembered) on a miss.

        The devices the model runs on now are part of the key: a function built for one device is not used
        under a strategy (or distribution), nor one built for a strategy without it.
        """
        mid = id(model)
        key = (key, device_key(model), settings_key())
        with self._lock:
            ref = self._models.get(mid)
            if ref is None or ref() is not model:  # a new model (or a new one at a recycled id)
                self._drop_model(mid)
                self._models[mid] = weakref.ref(model, lambda _, mid=mid: self._drop_model(mid))
            entry = self._entries.get((mid, key))
            if entry is not None:
                self._entries.move_to_end((mid, key))
                return entry
        entry = build()  # outside the lock: tracing may take seconds
        with self._lock:
            self._entries[(mid, key)] = entry
            self._evict()
        return entry

    def set_maxsize(self, maxsize: int) -> int:
        with self._lock:
            previous, self.maxsize = self.maxsize, check_int("maxsize", maxsize, 1)
            self._evict()
        return previous

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, model: Any) -> int:
        """How many entries belong to `model`."""
        return sum(1 for mid, _ in list(self._entries) if mid == id(model) and self._models.get(mid)
                   and self._models[mid]() is model)

    def _evict(self) -> None:
        if len(self._entries) <= self.maxsize:
            return
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        seam.get().release_memory()
        return_freed_memory()

    def _drop_model(self, mid: int) -> None:
        with self._lock:
            self._models.pop(mid, None)
            for key in [k for k in self._entries if k[0] == mid]:
                del self._entries[key]


#: The one cache of compiled functions (see `set_cache_size` and `clear_cache`).
CACHE = SharedCache()


def set_cache_size(maxsize: int) -> int:
    """Sets how many compiled functions keras-cam keeps (least recently used dropped first); returns the old.

    Explainers on the same model, layer, method and options share compiled functions: one per input
    signature (input size and a batch-size bucket). The default, 16, covers every method on a model at an
    image size or two; a compiled function costs a few MB (about 4 MB for a small CNN on JAX), so a service
    that sees many image sizes may lower it to bound memory, or raise it to avoid recompiling.

    Example:

    ```python
    previous = kc.set_cache_size(8)
    ```
    """
    return CACHE.set_maxsize(maxsize)


def clear_cache() -> None:
    """Drops every compiled function keras-cam keeps (they are rebuilt on the next call)."""
    CACHE.clear()
    seam.get().release_memory()
    return_freed_memory()


class Owner:
    """The object a shared compiled function calls back into, held weakly and set before every call.

    Explainers that share a compiled function are equivalent (same model, layer, method and options), so the
    function may run for whichever of them calls; it never keeps one alive.
    """

    def __init__(self) -> None:
        self._refs: Dict[Any, weakref.ref] = {}
        self._last: Any = lambda: None

    def bind(self, obj: Any) -> None:
        # Per thread (scope): two threads running equivalent explainers each call back into their own.
        self._refs[current_scope()] = self._last = weakref.ref(obj)

    def __call__(self) -> Any:
        return self._refs.get(current_scope(), self._last)()


def devices(model: Any) -> Tuple[Any, int]:
    """The strategy (TF) or distribution (JAX) `model` runs under now and its device count; `(None, 1)` on
    one device, and always on backends without several-device support (PyTorch)."""
    find = getattr(seam.get(), "devices", None)
    return (None, 1) if find is None else find(model)


def settings_key() -> tuple:
    """Keras' global settings that change what a traced function computes: the image data format (the layout
    of layers that follow it), the dtype policy (mixed precision) and floatx. Part of every cache key, so a
    change of setting takes effect on the next call instead of reusing a function traced under the old one."""
    policy = keras.config.dtype_policy()
    return (keras.config.image_data_format(), getattr(policy, "name", str(policy)), keras.config.floatx())


def device_key(model: Any) -> Optional[tuple]:
    """What compiled functions of `model` depend on about its devices: None on one device. The functions
    keep their strategy (distribution) alive, so its id is not reused while they are cached."""
    context, count = devices(model)
    return None if context is None else (type(context).__name__, id(context), count)


def compile_rows(seam_module: Any, fn: Callable, model: Any) -> Callable:
    """`seam_module.compile(fn, model)` for a function whose rows are independent (each output row depends on
    the same row of the inputs only): on several devices, each call is split by rows over them."""
    if devices(model)[1] > 1:
        return seam_module.compile(fn, model, split=True)
    return seam_module.compile(fn, model)


def compiled_forward(model: Any, sig: tuple) -> Callable:
    """`model(x, training=False)` compiled for one input signature, shared and kept while `model` lives."""
    ref = weakref.ref(model)

    def forward(x: Any) -> Any:
        return ref()(x, training=False)

    return CACHE.get(model, ("forward", sig), lambda: compile_rows(seam.get(), forward, model))


class Shared:
    """A compiled function kept in the shared cache, and the `Owner` slot it calls back into."""

    def __init__(self, make: Callable[[Owner], Callable], seam_module: Any, model: Any) -> None:
        self.owner = Owner()
        self.fn = compile_rows(seam_module, make(self.owner), model)
