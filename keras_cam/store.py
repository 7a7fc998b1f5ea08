"""The chunked store of `explain_dataset`: heatmaps, targets, scores (and paths) of a whole dataset on disk.

A zarr v3 group (`pip install "keras-cam[zarr]"`) with one array per field, chunked by batches along the
first axis, and its attributes: `settings` (what made the maps: method, layers, options, model fingerprint,
batch size, targets, data) and `progress` (finished batches and rows, skipped files, completeness). A batch
counts as finished only once its rows are written, so a run that stops midway resumes after its last
finished batch; `open_store` reads a store back lazily (docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

__all__ = ["HeatmapStore", "model_fingerprint", "open_store", "settings"]

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

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(f"The store '{self.path}' has no array {name!r}; it has {self.keys()}.")
        return self._group[name]

    def __len__(self) -> int:
        return int(self.progress["rows"])

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return (f"HeatmapStore('{self.path}', {len(self)} maps of {self.settings['method']}, {state}, "
                f"arrays {self.keys()})")


def open_store(path: str) -> HeatmapStore:
    """Opens a store written by `kc.explain_dataset` for reading (nothing is loaded until sliced).

    Args:
        path: the store's folder (e.g. "heatmaps.zarr").

    Returns:
        A `HeatmapStore`: `store["heatmaps"][10:20]` (numpy), `store["targets"]`, `store["scores"]`,
        `store["paths"]` for image files, `len(store)`, `store.settings`.

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
        group = _open(self.path, "r+")
        if group is not None and resume:
            if group.attrs.get("format") != _FORMAT:
                raise ValueError(f"'{self.path}' is a zarr store not written by kc.explain_dataset; pass "
                                 "another `store` path, or resume=False to overwrite it.")
            found = differences(dict(group.attrs["settings"]), settings)
            if found:
                raise ValueError(f"Cannot resume the store '{self.path}': it was made with other settings ("
                                 + "; ".join(found) + "). Pass another `store` path, or resume=False to "
                                 "overwrite it.")
            self.group = group
            self.progress = dict(group.attrs["progress"])
            for name in self.keys():  # drop rows of a batch that was being written when the run stopped
                array = group[name]
                array.resize((self.progress["rows"],) + array.shape[1:])
            return
        taken = os.path.exists(self.path) and (not os.path.isdir(self.path) or os.listdir(self.path))
        if group is None and taken:
            raise ValueError(f"'{self.path}' exists and is not a zarr store; pass a new `store` path (it is "
                             "never deleted).")
        self.group = _zarr().open_group(self.path, mode="w")
        self.progress = {"batches": 0, "rows": 0, "padded": 0, "complete": False, "skipped": []}
        self.group.attrs.update({"format": _FORMAT, "settings": settings, "progress": self.progress})

    def keys(self) -> List[str]:
        return [name for name in FIELDS if name in self.group]

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
              skipped: List[str], chunk: int, padded: int = 0) -> None:
        """Appends one batch's rows (possibly none) and records the batch as finished (and the rows batches
        are padded to, so that a resumed run pads as the first one did)."""
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
                     skipped=self.progress["skipped"] + list(skipped))

    def finish(self) -> None:
        self._record(complete=True)

    def _record(self, **changes: Any) -> None:
        self.progress = dict(self.progress, **changes)
        self.group.attrs["progress"] = self.progress


def model_fingerprint(model: Any) -> str:
    """A hash of the model's configuration and of its weights' paths, shapes, dtypes and values."""
    import keras

    digest = hashlib.blake2b(digest_size=16)
    try:
        config = model.get_config()
    except Exception:  # a subclassed model without get_config
        config = None
    digest.update(json.dumps([type(model).__qualname__, config], sort_keys=True, default=str).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{value.shape}:{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def data_content(files: Optional[List[str]] = None, data: Any = None) -> str:
    """A hash that tells data apart when resuming a store: the ordered file list, or an array's shape, dtype
    and 16 evenly spaced rows (a full hash would read the whole array once more)."""
    from keras_cam._validation import to_numpy

    digest = hashlib.blake2b(digest_size=8)
    if files is not None:
        digest.update("\n".join(os.fspath(f) for f in files).encode())
    else:
        n = int(data.shape[0])
        digest.update(f"{tuple(data.shape)}:{getattr(data, 'dtype', '')}".encode())
        for i in sorted({int(v) for v in np.linspace(0, n - 1, num=min(n, 16))}) if n else ():
            digest.update(np.ascontiguousarray(to_numpy(data[i:i + 1])).tobytes())
    return digest.hexdigest()


def describe(value: Any) -> Any:
    """A value as JSON-able settings (callables by name, arrays by a hash of their values)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.integer):
        return int(value)
    if callable(value):
        name = getattr(value, "__qualname__", type(value).__name__)
        return f"callable {getattr(value, '__module__', '')}.{name}"
    if isinstance(value, (np.ndarray, list, tuple)):
        a = np.ascontiguousarray(np.asarray(value))
        return f"array {a.shape} {hashlib.blake2b(a.tobytes(), digest_size=8).hexdigest()}"
    return repr(value)


def settings(explainer: Any, kind: str, images: Optional[int], targets: Any, batch_size: Optional[int],
             dtype: str) -> Dict[str, Any]:
    """What makes a store's maps: a resumed run must match them all."""
    specs = getattr(explainer, "_layer_spec", None) or [None]  # as given: known before a first call
    layers = [("auto" if s is None else s if isinstance(s, str) else getattr(s, "path", repr(s)))
              for s in specs]
    options = {k: describe(v) for k, v in sorted(vars(explainer).items())
               if not k.startswith("_") and k not in ("model", "layer_refs") and not callable(v)}
    return {"method": explainer.name, "layers": layers, "options": options,
            "model": model_fingerprint(explainer.model), "batch_size": batch_size,
            "targets": describe(targets),
            "dtype": str(np.dtype(dtype)), "data": {"kind": kind, "images": images}}
