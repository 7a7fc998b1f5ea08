"""The chunked store of `explain_dataset`: heatmaps, targets, scores (and paths) of a whole dataset on disk.

A zarr v3 group (`pip install "keras-cam[zarr]"`) with one array per field, chunked by batches along the
first axis, and its attributes: `settings` (what made the maps: method, layers, options, model fingerprint,
batch size, targets, data) and `progress` (finished batches and rows, skipped files, completeness). A batch
counts as finished only once its rows are written, so a run that stops midway resumes after its last
finished batch; `open_store` reads a store back lazily (docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

# The hashes a store records are `store_checks`'s; they stay importable from here.
from keras_cam.store_checks import (UNCHECKED, batch_digest, chain, data_content, describe,  # noqa: F401
                                    files_digest, model_fingerprint, settings)

__all__ = ["FinishedRows", "HeatmapStore", "model_fingerprint", "open_store", "settings"]

#: The arrays of a store, in the order they are written.
FIELDS = ("heatmaps", "targets", "scores", "paths")
_FORMAT = "keras-cam/heatmaps-1"


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError('Heatmap stores need zarr 3: pip install "keras-cam[zarr]" (or "zarr>=3.0.8").'
                          ) from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ImportError(f"Heatmap stores need zarr 3, found zarr {zarr.__version__}: "
                          'pip install "zarr>=3.0.8".')
    return zarr


class HeatmapStore:
    """A store written by `kc.explain_dataset`, read lazily: each field is a zarr array sliced like numpy.

    Attributes:
        path: where the store is.
        settings: what made the maps (method, layers, options, model fingerprint, batch size, targets, data).
        complete: whether the run that wrote it reached the end of the data.
        skipped: image files that could not be read (skipped, not stored).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), kc.CAMHead(2)])
    kc.explain_dataset(kc.GradCAM(model), np.random.rand(10, 16, 16, 3), store="maps.zarr", verbose=0)
    store = kc.open_store("maps.zarr")
    len(store), store["heatmaps"][2:4].shape, store.settings["method"]   # 10, (2, 16, 16), 'gradcam'
    ```
    """

    def __init__(self, group: Any, path: str) -> None:
        self._group = group
        self.path = path

    @property
    def settings(self) -> Dict[str, Any]:
        return dict(self._group.attrs["settings"])

    @property
    def progress(self) -> Dict[str, Any]:
        return dict(self._group.attrs["progress"])

    @property
    def complete(self) -> bool:
        return bool(self.progress["complete"])

    @property
    def skipped(self) -> List[str]:
        return list(self.progress["skipped"])

    def keys(self) -> List[str]:
        return [name for name in FIELDS if name in self._group]

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __getitem__(self, name: str) -> "FinishedRows":
        if name not in self.keys():
            raise KeyError(f"The store '{self.path}' has no array {name!r}; it has {self.keys()}.")
        return FinishedRows(self._group[name], len(self))

    def __len__(self) -> int:
        return int(self.progress["rows"])

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return (f"HeatmapStore('{self.path}', {len(self)} maps of {self.settings['method']}, {state}, "
                f"arrays {self.keys()})")


class FinishedRows:
    """A store's array limited to its finished rows, sliced like numpy (`[10:20]`, `[3]`, `[[1, 5]]`,
    `[:, 0]`, `np.asarray(rows)`).

    A run that stopped (an error, a kill) may leave rows of an unfinished batch in the zarr array (written,
    or only allocated: zeros); readers never see them. The zarr array itself is `.array`.
    """

    def __init__(self, array: Any, rows: int) -> None:
        self.array = array
        self.rows = min(int(rows), int(array.shape[0]))

    @property
    def shape(self) -> tuple:
        return (self.rows,) + tuple(self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def chunks(self) -> tuple:
        return tuple(self.array.chunks)

    def __len__(self) -> int:
        return self.rows

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[...]
        return values if dtype is None else values.astype(dtype)

    def __getitem__(self, index: Any) -> Any:
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
        if first is Ellipsis:  # `[...]` or `[..., 0]`: every finished row
            first, rest = slice(None), (Ellipsis,) + tuple(rest)
        if isinstance(first, slice):
            start, stop, step = first.indices(self.rows)
            if step == 1:
                return self.array[(slice(start, max(start, stop)),) + tuple(rest)]
            first = np.arange(start, stop, step)
        elif isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            if not -self.rows <= first < self.rows:
                raise IndexError(f"index {first} is out of bounds for {self.rows} rows")
            return self.array[(int(first) % self.rows,) + tuple(rest)]
        rows = np.arange(self.rows)[np.asarray(first)]  # integer or boolean rows, checked against `rows`
        values = self.array.oindex[(rows.reshape(-1),) + (slice(None),) * (self.array.ndim - 1)]
        values = values.reshape(rows.shape + values.shape[1:])
        return values[(slice(None),) * rows.ndim + tuple(rest)] if rest else values

    def __repr__(self) -> str:
        return f"<FinishedRows {self.shape} {self.dtype} of {self.array!r}>"


def open_store(path: str) -> HeatmapStore:
    """Opens a store written by `kc.explain_dataset` for reading (nothing is loaded until sliced).

    Args:
        path: the store's folder (e.g. "heatmaps.zarr").

    Returns:
        A `HeatmapStore`: `store["heatmaps"][10:20]` (numpy), `store["targets"]`, `store["scores"]`,
        `store["paths"]` for image files, `len(store)`, `store.settings`. Each array holds the finished rows
        only (`store["heatmaps"].shape[0] == len(store)`), also after a run that stopped midway.

    Raises:
        ValueError: when `path` is not a keras-cam store.

    Example:

    ```python
    import keras_cam as kc
    store = kc.open_store("heatmaps.zarr")
    first = store["heatmaps"][:8]   # float16 (8, H, W)
    ```
    """
    path = os.fspath(path)
    group = _open(path, "r")
    if group is None or group.attrs.get("format") != _FORMAT:
        raise ValueError(f"'{path}' is not a heatmap store written by kc.explain_dataset.")
    return HeatmapStore(group, path)


def _open(path: str, mode: str) -> Any:
    """The zarr group at `path`, or None when there is none."""
    zarr = _zarr()
    if not os.path.exists(os.path.join(path, "zarr.json")):
        return None
    try:
        return zarr.open_group(path, mode=mode)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"Cannot open '{path}' as a zarr group: {e}") from None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def differences(stored: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """What differs between two settings, one phrase per key."""
    out = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            if key == "model":
                out.append("the model (its configuration or weights) differs")
            elif all(str(v).startswith("callable ") for v in (stored.get(key), current.get(key))):
                out.append(f"{key} differs (its code, or the values it reads, differ from those of "
                           f"{str(stored[key]).split()[1]} in the store)")
            elif key == "data" and isinstance(stored.get(key), dict) and isinstance(current.get(key), dict) \
                    and {k: v for k, v in stored[key].items() if k != "content"} \
                    == {k: v for k, v in current[key].items() if k != "content"}:
                out.append("the data differ (another list of files, or other arrays of the same shape)")
            else:
                out.append(f"{key} is {stored.get(key)!r} in the store and {current.get(key)!r} now")
    return out


class StoreWriter:
    """Writes batches into a new or resumed store: arrays grow with each batch (`resize`), then `progress`
    records the batch as finished."""

    def __init__(self, path: str, settings: Dict[str, Any], resume: bool, dtype: str) -> None:
        self.path = os.fspath(path)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float16, np.uint8, np.float32):
            raise ValueError(f"`dtype` must be 'float16' (default), 'uint8' or 'float32', got {dtype!r}.")
        settings = _jsonable(settings)
        group = _open(self.path, "r")  # read-only: a complete store, or a refused resume, is never written
        if group is not None and resume:
            if group.attrs.get("format") != _FORMAT:
                raise ValueError(f"'{self.path}' is a zarr store not written by kc.explain_dataset; pass "
                                 "another `store` path, or resume=False to overwrite it.")
            found = differences(dict(group.attrs["settings"]), settings)
            if found:
                raise ValueError(f"Cannot resume the store '{self.path}': it was made with other settings ("
                                 + "; ".join(found) + "). Pass another `store` path, or resume=False to "
                                 "overwrite it.")
            self.group, self._writable = group, False  # opened for writing by the first write
            self.progress = dict(group.attrs["progress"])
            return
        taken = os.path.exists(self.path) and (not os.path.isdir(self.path) or os.listdir(self.path))
        if group is None and taken:
            raise ValueError(f"'{self.path}' exists and is not a zarr store; pass a new `store` path (it is "
                             "never deleted).")
        self.group, self._writable = _zarr().open_group(self.path, mode="w"), True
        self.progress = {"batches": 0, "rows": 0, "padded": 0, "complete": False, "skipped": [],
                         "digest": ""}
        self.group.attrs.update({"format": _FORMAT, "settings": settings, "progress": self.progress})

    def keys(self) -> List[str]:
        return [name for name in FIELDS if name in self.group]

    def _reopen(self) -> None:
        """Opens a resumed store for writing, dropping the rows of a batch that was being written when the
        run stopped: on the first write, so a refused resume and a complete store are only read."""
        self.group, self._writable = _open(self.path, "r+"), True
        for name in self.keys():
            array = self.group[name]
            array.resize((self.progress["rows"],) + array.shape[1:])

    @property
    def digest(self) -> Optional[str]:
        """The running hash of the finished batches' data (`chain`); None in a store that predates it."""
        return self.progress.get("digest")

    @property
    def batches_done(self) -> int:
        return int(self.progress["batches"])

    @property
    def complete(self) -> bool:
        return bool(self.progress["complete"])

    @property
    def padded(self) -> int:
        return int(self.progress.get("padded", 0))

    def write(self, heatmaps: np.ndarray, targets: np.ndarray, scores: np.ndarray, paths: Optional[List[str]],
              skipped: List[str], chunk: int, padded: int = 0, digest: Optional[str] = None) -> None:
        """Appends one batch's rows (possibly none) and records the batch as finished, with the rows batches
        are padded to (a resumed run pads as the first one did) and the running hash of the data so far."""
        if not self._writable:
            self._reopen()
        maps = heatmaps
        if self.dtype == np.uint8:
            maps = np.round(np.clip(heatmaps, 0.0, 1.0) * 255.0)
        values = {"heatmaps": maps.astype(self.dtype), "targets": targets.astype(np.int64),
                  "scores": scores.astype(np.float32)}
        if paths is not None:
            values["paths"] = np.asarray(paths, dtype=str)
        start, n = int(self.progress["rows"]), len(heatmaps)
        for name, value in values.items() if n else ():  # a batch of unreadable files writes no rows
            if name not in self.group:
                text = name == "paths"
                self.group.create_array(name, shape=(0,) + value.shape[1:],
                                        dtype=str if text else value.dtype, fill_value="" if text else 0,
                                        chunks=(max(chunk, 1),) + value.shape[1:])
            array = self.group[name]
            if tuple(array.shape[1:]) != value.shape[1:]:
                raise ValueError(f"This batch gives {name} of shape {value.shape[1:]} per image, but the "
                                 f"store '{self.path}' holds {tuple(array.shape[1:])}: every batch must give "
                                 "maps of the same size (resize the inputs to one size).")
            array.resize((start + n,) + array.shape[1:])
            array[start:start + n] = value
        self._record(batches=self.batches_done + 1, rows=start + n, padded=int(padded),
                     skipped=self.progress["skipped"] + list(skipped), digest=digest)

    def finish(self) -> None:
        self._record(complete=True)

    def _record(self, **changes: Any) -> None:
        if not self._writable:
            self._reopen()
        self.progress = dict(self.progress, **changes)
        self.group.attrs["progress"] = self.progress
