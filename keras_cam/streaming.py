"""`explain_dataset`: heatmaps for a whole dataset, batch by batch, in memory or into a store on disk.

The data is read in a background thread (a queue of two batches) while the current batch is explained, and
overlays are written by a second thread, so neither decoding nor PNG encoding waits for the model, and memory
holds a few batches whatever the dataset's size. With a `store` (`keras_cam.store`), each finished batch is
recorded, and the same call after an interruption resumes after the last finished batch. Data sources are
recognised by what they offer (duck typing), so neither TensorFlow nor torch is imported here
(docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import math
import os
import queue
import threading
import time
import warnings
from typing import Any, Callable, Iterator, List, Optional, Tuple

import keras
import numpy as np

from keras_cam import capture
from keras_cam._batching import DEFAULT_BATCH_SIZE, check_batch_size, pad_rows
from keras_cam._inputs import image_input, pictures_to_input
from keras_cam._validation import to_numpy
from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.store import (UNCHECKED, StoreWriter, batch_digest, chain, data_content, describe,
                             files_digest, open_store, settings)
from keras_cam.visualize.headers import DEFAULT_MAX_PIXELS

__all__ = ["DatasetExplanation", "explain_dataset", "open_store"]

#: Batches read ahead of the one being explained, and batches of overlays waiting to be written.
QUEUE_DEPTH = 2


@dataclasses.dataclass
class DatasetExplanation(Explanation):
    """An `Explanation` of a whole dataset, with the image files explained (one per row) and those skipped."""

    paths: Optional[List[str]] = None
    skipped: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Batch:
    index: int
    x: Any  # the model's input (an array, a list or a dict of arrays); None when every file was unreadable
    y: Any = None
    start: int = 0  # the first row in the data (array data: per-image targets are sliced from it)
    pictures: Optional[np.ndarray] = None  # decoded images in [0, 1], for overlays of image files
    paths: Optional[List[str]] = None
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    digest: Optional[str] = None  # a hash of what the batch read (with a store): `store.batch_digest`
    labels: Optional[str] = None  # a hash of its labels y (they make the maps with targets="labels")
    done: bool = False  # finished in the store being resumed: read again only to compare its hash


@dataclasses.dataclass
class _Source:
    kind: str
    n: Optional[int]  # images, when known before reading
    # batches(skip, hashing): every batch; the first `skip` are finished ones (`done`, hashed, not kept)
    batches: Callable[[int, bool], Iterator[_Batch]]
    files: Optional[List[str]] = None
    content: Optional[str] = None  # what identifies the data for resuming (`store.data_content`)
    # The model's input for the first example, read apart from the batches (None where the data can be
    # read only once): a subclassed model's automatic layer is found on a call, and the store records it.
    first: Optional[Callable[[], Any]] = None



def printable(path: Any) -> str:
    """A path on one line: control characters (a newline in a file name) escaped as Python writes them, so
    one-line-per-file output stays one line per file."""
    text = os.fspath(path)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def skip_reason(error: BaseException) -> str:
    """Why an image file is skipped, in one line without its path: the same words with and without a store,
    and on the command line."""
    from keras_cam._validation import one_line
    from keras_cam.visualize.headers import ImageFileError

    return " ".join(error.reason.split()) if isinstance(error, ImageFileError) else one_line(error)


def _numpy(x: Any) -> Any:
    return keras.tree.map_structure(to_numpy, x)  # one array, or a list / dict of them (several inputs)


def _first_x(elements: Iterator[Any]) -> Any:
    """The first example's `x` of an iterator of Keras-style batches (None when it is empty)."""
    element = next(elements, None)
    if element is None:
        return None
    x, _, _ = keras.utils.unpack_x_y_sample_weight(element)
    return keras.tree.map_structure(lambda a: to_numpy(a)[:1], x)


def _elements(elements: Callable[[], Iterator[Any]]) -> Callable[[int, bool], Iterator[_Batch]]:
    """Batches from a source of Keras-style elements, `x` or `(x, y[, sample_weight])`. Finished batches of
    a resumed run are read too (an iterator cannot seek; the others are compared by their hash)."""

    def batches(skip: int, hashing: bool) -> Iterator[_Batch]:
        for i, element in enumerate(elements()):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
            x, y = _numpy(x), None if y is None else to_numpy(y)
            batch = _Batch(i, x, y, done=i < skip)
            if hashing:
                batch.digest, batch.labels = batch_digest(x), batch_digest(y)
            if batch.done:
                batch.x = batch.y = None
            yield batch

    return batches


def _files_source(explainer: BaseCAM, files: List[str], size: int, preprocess: Optional[Callable],
                  max_pixels: Optional[int], keep_pictures: bool) -> _Source:
    import cv2

    from keras_cam.visualize.images import read_image

    hw, channels, channels_first = image_input(explainer.model)

    def batches(skip: int, hashing: bool) -> Iterator[_Batch]:
        for i in range(math.ceil(len(files) / size)):
            names = files[i * size:(i + 1) * size]
            digest = files_digest(names) if hashing else None  # sizes and times: a stat, nothing decoded
            if i < skip:
                yield _Batch(i, None, start=i * size, digest=digest, done=True)
                continue
            pictures, paths, skipped = [], [], []
            for path in names:
                try:
                    pictures.append(read_image(path, hw, max_pixels=max_pixels))
                    paths.append(path)
                except (ValueError, OSError, MemoryError, cv2.error) as e:
                    skipped.append((path, skip_reason(e)))
            x = kept = None
            if pictures:
                stacked = np.stack(pictures)
                x = pictures_to_input(stacked, channels, channels_first, preprocess)
                kept = stacked if keep_pictures else None
            yield _Batch(i, x, start=i * size, pictures=kept, paths=paths, skipped=skipped, digest=digest)

    def first() -> Any:
        for path in files[:size]:
            try:
                picture = read_image(path, hw, max_pixels=max_pixels)
            except (ValueError, OSError, MemoryError, cv2.error):
                continue
            return pictures_to_input(picture[None], channels, channels_first, preprocess)
        return None

    return _Source("files", len(files), batches, files, data_content(files=files), first)


def _source(explainer: BaseCAM, data: Any, size: int, preprocess: Optional[Callable],
            max_pixels: Optional[int], keep_pictures: bool, exclude: Any = None) -> _Source:
    """What `data` is, recognised by what it offers (no backend is imported to recognise it). A folder is
    searched leaving out `exclude` (the overlays: a second run must not take the first one's pictures)."""
    from keras_cam.visualize.images import image_files

    is_path = lambda v: isinstance(v, (str, os.PathLike))  # noqa: E731
    if is_path(data) or (isinstance(data, (list, tuple)) and data and all(is_path(v) for v in data)):
        items = [data] if is_path(data) else list(data)
        missing = [os.fspath(v) for v in items if not os.path.exists(v)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(f"`data` names a file or folder that does not exist: "
                             f"'{printable(missing[0])}'{more}; check the path.")
        files, empty = image_files(items, exclude=exclude)
        for folder in empty:
            warnings.warn(f"keras-cam: skipped {printable(folder)}: a folder without image files",
                          stacklevel=3)
        return _files_source(explainer, files, size, preprocess, max_pixels, keep_pictures)
    if hasattr(data, "as_numpy_iterator") and hasattr(data, "cardinality"):  # tf.data.Dataset
        if int(data.cardinality()) == -1:
            raise ValueError("`data` is an infinite tf.data.Dataset (e.g. .repeat() without a count); pass a "
                             "finite one, e.g. dataset.take(n).")
        return _Source("tf.data", None, _elements(data.as_numpy_iterator),
                       first=lambda: _first_x(data.take(1).as_numpy_iterator()))
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        if count is None:
            raise ValueError("`data` is an infinite keras.utils.PyDataset (num_batches is None); give it a "
                             "length (__len__) to explain it.")
        return _Source("PyDataset", None, _elements(lambda: (data[i] for i in range(count))),
                       first=lambda: _first_x(data[i] for i in range(min(count, 1))))
    if hasattr(data, "shape") and hasattr(data, "__getitem__") and len(getattr(data, "shape", ())) >= 2:
        n = int(data.shape[0])  # numpy (also memory-mapped), a backend tensor, a zarr array: sliced per batch

        def arrays(skip: int, hashing: bool) -> Iterator[_Batch]:
            for i in range(math.ceil(n / size)):
                x = to_numpy(data[i * size:(i + 1) * size])
                digest = batch_digest(x) if hashing else None
                yield _Batch(i, None if i < skip else x, start=i * size, digest=digest, done=i < skip)

        return _Source("array", n, arrays, content=data_content(data=data),
                       first=lambda: to_numpy(data[:1]) if n else None)
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        kind = "DataLoader" if hasattr(data, "dataset") and hasattr(data, "batch_size") else "iterable"
        once = isinstance(data, collections.abc.Iterator)  # a generator; a list or DataLoader starts afresh
        return _Source(kind, None, _elements(lambda: iter(data)),
                       first=None if once else lambda: _first_x(iter(data)))
    raise ValueError("`data` must be an array of images, a tf.data.Dataset, a keras.utils.PyDataset, a torch "
                     "DataLoader, an iterable of batches, image paths or a folder; got "
                     f"{type(data).__name__}.")


class _Reader:
    """Reads batches in a background thread, `QUEUE_DEPTH` ahead; its errors are raised by `__iter__`."""

    _END = object()

    def __init__(self, batches: Iterator[_Batch], first: int) -> None:
        self._queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._stop = threading.Event()
        self._first = first
        self._thread = threading.Thread(target=self._run, args=(batches,), name="keras-cam-reader",
                                        daemon=True)
        self._thread.start()

    def _run(self, batches: Iterator[_Batch]) -> None:
        read = self._first
        try:
            for batch in batches:
                read += 1
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the caller's thread
            e.add_note(f"(raised while keras-cam read batch {read} of the data)")
            self._put(e)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class _Writer:
    """Runs jobs (writing store rows and overlays) in a background thread, in order; the first error is raised
    by `check`. The bounded queue keeps memory to a few batches when writing is slower than explaining."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="keras-cam-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self.error is None:
                try:
                    job()
                except BaseException as e:
                    e.add_note("(raised while keras-cam wrote the store or overlays)")
                    self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, job: Callable[[], None]) -> None:
        self.check()
        while self._thread.is_alive():
            try:
                self._queue.put(job, timeout=0.1)
                return
            except queue.Full:
                self.check()

    def close(self) -> None:
        """Waits for the jobs submitted, then raises the first error."""
        self._queue.put(None)
        self._thread.join()
        self.check()


def _overlay_job(names: List[str], pictures: np.ndarray, heatmaps: np.ndarray,
                 channels_first: bool) -> Callable:
    """Writes overlays of `heatmaps` on `pictures` (inputs out of [0, 1] are min-max scaled to show them)."""
    from keras_cam.visualize import overlay, save_image

    def job() -> None:
        for name, picture, heatmap in zip(names, pictures, heatmaps):
            picture = np.moveaxis(picture, 0, -1) if channels_first else picture
            if picture.dtype != np.uint8 and picture.size and (picture.min() < 0 or picture.max() > 1):
                picture = (picture - picture.min()) / max(float(picture.max() - picture.min()), 1e-12)
            save_image(name, overlay(picture, heatmap))

    return job


def _labels(y: Any, index: int) -> np.ndarray:
    if y is None:
        raise ValueError(f'targets="labels" explains the labels y of (x, y) batches; batch {index} of the '
                         "data has none. Yield (x, y) pairs, or pass targets=None (the predicted class).")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot (or probabilities)
        return np.argmax(y, axis=1).astype(np.int32)
    if y.ndim > 2:
        raise ValueError(f'targets="labels" needs class labels (N,) or one-hot (N, K); batch {index} has '
                         f"labels of shape {y.shape}.")
    return np.rint(y.reshape(-1)).astype(np.int32)


def _targets_for(targets: Any, batch: _Batch, rows: int) -> Any:
    if isinstance(targets, str) and targets == "labels":
        return _labels(batch.y, batch.index)
    if isinstance(targets, np.ndarray):
        return targets[batch.start:batch.start + rows]
    return targets


def explain_dataset(explainer: BaseCAM, data: Any, targets: Any = None, store: Optional[str] = None,
                    overlays_dir: Optional[str] = None, batch_size: Optional[int] = None, resume: bool = True,
                    verbose: int = 1, dtype: str = "float16", preprocess: Optional[Callable] = None,
                    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Any:
    """Explains a whole dataset batch by batch, with memory bounded by a few batches.

    Args:
        explainer: any keras-cam explainer (`kc.GradCAM(model)`, `kc.get_explainer(name, model)`, ...).
        data: an array of images (numpy, memory-mapped, a backend tensor), a `tf.data.Dataset` yielding `x`
            or `(x, y[, w])`, a `keras.utils.PyDataset`, a torch `DataLoader`, any iterable of batches (arrays
            or `(x, y)` tuples; a multi-input `x` is a list or dict), or image files: a list of paths or a
            folder (searched recursively, leaving out `overlays_dir`), decoded as RGB in [0, 1] and resized
            to the model's input size; files that cannot be read are skipped with one warning each, a path
            that does not exist is an error.
        targets: None (the predicted class), an int, `"labels"` (the `y` of each `(x, y)` batch: class
            indices or one-hot), a callable `(outputs) -> (N,)` scores, or, for array data only, one int per
            image.
        store: a folder for a zarr store (`"heatmaps.zarr"`, needs `pip install "keras-cam[zarr]"`): arrays
            `heatmaps`, `targets`, `scores` (and `paths` for files), chunked by batch, read back with
            `kc.open_store`. None keeps everything in memory.
        overlays_dir: a folder for one PNG overlay per image (`kc.overlay` + `kc.save_image`), written in a
            background thread: image files keep their names (`<name>_<method>.png`, folders relative to their
            common parent), other data gets `<row>_<method>.png`.
        batch_size: images per batch for arrays and files (default 32), and per compiled call for datasets,
            which keep their own batches.
        resume: with a store that exists, skip the batches it has finished (the same call after an
            interruption ends with the store an uninterrupted run gives; a complete store is returned as it
            is, and nothing is written). A store made with other settings, another model or other data is
            refused: the finished batches are read again (not explained) and compared with a hash recorded
            with them (image files: by size and modification time), `preprocess` by its code and the values
            it reads. False overwrites the store.
        verbose: 0 silent, 1 a progress bar with images per second, 2 one line at the end.
        dtype: heatmaps in the store: "float16" (default), "uint8" (x255, rounded) or "float32".
        preprocess: for image files, a function applied to each batch of decoded images (float32 in [0, 1])
            before the model sees it, e.g. `keras.applications.resnet.preprocess_input` after x255.
        max_pixels: for image files, the most pixels a file may declare (image bombs are skipped).

    Returns:
        Without `store`, a `DatasetExplanation` (an `Explanation` with `heatmaps`, `targets`, `scores` of the
        whole dataset, plus `paths` and `skipped` for files); with `store`, the `HeatmapStore` written.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), kc.CAMHead(2)])
    result = kc.explain_dataset(kc.GradCAM(model), np.random.rand(40, 16, 16, 3), batch_size=8, verbose=0)
    result.heatmaps.shape   # (40, 16, 16)
    store = kc.explain_dataset(kc.GradCAM(model), np.random.rand(40, 16, 16, 3), store="maps.zarr")
    store["heatmaps"][:4]   # float16 (4, 16, 16), read from disk
    ```
    """
    if not isinstance(explainer, BaseCAM):
        raise ValueError(f"`explainer` must be a keras-cam explainer (e.g. kc.GradCAM(model)), got "
                         f"{type(explainer).__name__}.")
    size = DEFAULT_BATCH_SIZE if batch_size is None else check_batch_size(batch_size)
    source = _source(explainer, data, size, preprocess, max_pixels, keep_pictures=overlays_dir is not None,
                     exclude=overlays_dir)
    if isinstance(targets, (list, tuple, np.ndarray)):
        targets = np.asarray(targets)
        fits = source.kind == "array" and targets.shape[:1] == (source.n,)
        if not fits or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError("Per-image `targets` need array data and one int per image; got targets of "
                             f"shape {targets.shape} for {source.kind} data of {source.n} images. Use "
                             "targets='labels' to explain the labels of (x, y) batches.")
    writer = check = None
    if store is not None:
        if getattr(explainer, "layer_refs", ()) is None and source.first is not None:
            sample = source.first()  # a subclassed model's automatic layer: found now, recorded resolved
            if sample is not None:
                explainer._resolve_on_first_call(explainer._prepare_inputs(sample))
        made = settings(explainer, source.kind, source.n, targets, batch_size, dtype)
        if source.content is not None:  # another file list or other arrays of the same size: not resumed
            made["data"]["content"] = source.content
        if preprocess is not None:  # other inputs, other maps: a store made without it is not resumed
            made["preprocess"] = describe(preprocess)
        writer = StoreWriter(store, made, resume, dtype)
        check = _ResumeCheck(writer, source.kind, labels=isinstance(targets, str) and targets == "labels")
        unchecked = [k for k in ("preprocess", "targets") if str(made.get(k, "")).endswith(UNCHECKED)]
        if writer.batches_done and unchecked:
            warnings.warn(f"keras-cam: resuming the store '{writer.path}' with {' and '.join(unchecked)} "
                          "that cannot be compared with the ones it was made with (a callable whose code or "
                          "state keras-cam cannot read): make sure they are the same, or pass resume=False.",
                          stacklevel=2)
        if writer.complete:  # read the data again (not the model) to check it is the store's; write nothing
            for batch in source.batches(writer.batches_done, True):
                check.see(batch)
            check.verify()
            return open_store(writer.path)
    first = writer.batches_done if writer is not None else 0
    rows = int(writer.progress["rows"]) if writer is not None else 0
    parts: List[Tuple[np.ndarray, ...]] = []
    paths: List[str] = []
    skipped: List[str] = []
    progbar = None
    seen = rows + (len(writer.progress["skipped"]) if writer is not None else 0)  # images read, or skipped
    if verbose:
        target = source.n
        progbar = keras.utils.Progbar(target, verbose=verbose, stateful_metrics=["images/s"],
                                      unit_name="image")
    tag = explainer.name.replace("+", "p")
    stems = None
    if overlays_dir is not None and source.files is not None:
        from keras_cam.visualize.images import output_stems

        stems = dict(zip(source.files, output_stems(source.files, os.fspath(overlays_dir), tag)))
    channels_first = overlays_dir is not None and capture.input_layout(explainer.model, 4).channels_first
    # Overlays and store writes run in one background thread, in order, so neither waits for the model nor
    # the model for them; a batch is recorded as finished after its overlays and then its rows are written.
    background = _Writer() if overlays_dir is not None or writer is not None else None
    reader = _Reader(source.batches(first, writer is not None), 0)
    # Batches smaller than the largest (the first) are padded to it: one compiled signature, also on resume.
    padded_rows = size if source.kind in ("array", "files") else writer.padded if writer is not None else 0
    shapes, started, done = None, time.perf_counter(), 0
    try:
        for batch in reader:
            if check is not None and check.see(batch):
                continue  # finished in the store: its hash is compared before anything new is written
            if check is not None:
                check.verify()
            for path, reason in batch.skipped:
                warnings.warn(f"keras-cam: skipped {printable(path)}: {reason}", stacklevel=2)
            skipped += [path for path, _ in batch.skipped]
            n = 0 if batch.x is None else len(keras.tree.flatten(batch.x)[0])
            if n:
                found = tuple(tuple(a.shape[1:]) for a in keras.tree.flatten(batch.x))
                if shapes is not None and found != shapes:
                    raise ValueError(f"Batch {batch.index} of the data has inputs of shape "
                                     f"{found if len(found) > 1 else found[0]} per example, but the earlier "
                                     f"batches had {shapes if len(shapes) > 1 else shapes[0]}: every batch "
                                     "must have the same shape (resize the images to one size).")
                if shapes is None:  # the first batch, as given: errors name its own rows, not the padded ones
                    explainer.check_inputs(batch.x)
                shapes, padded_rows = found, max(padded_rows, n)
                batch_targets = _targets_for(targets, batch, n)
                if isinstance(batch_targets, np.ndarray):
                    batch_targets = pad_rows(batch_targets, padded_rows)
                try:
                    x = keras.tree.map_structure(lambda a: pad_rows(a, padded_rows), batch.x)
                    result = explainer.compute(x, targets=batch_targets, batch_size=batch_size)
                except Exception as e:
                    e.add_note(f"(raised while keras-cam explained batch {batch.index} of the data)")
                    raise
                maps, idx, scores = result.heatmaps[:n], result.targets[:n], result.scores[:n]
            else:
                maps, idx, scores = _empty()
            jobs = []
            if overlays_dir is not None and n:
                if maps.ndim != 3:
                    raise ValueError(f"`overlays_dir` writes pictures of one 2-D map per image; these maps "
                                     f"have shape {maps.shape[1:]} per image. Leave overlays_dir out.")
                folder = os.fspath(overlays_dir)
                names = ([stems[p] + ".png" for p in batch.paths] if stems is not None else
                         [os.path.join(folder, f"{rows + j:06d}_{tag}.png") for j in range(n)])
                pictures = batch.pictures if batch.pictures is not None else keras.tree.flatten(batch.x)[0]
                jobs.append(_overlay_job(names, pictures, maps, channels_first and batch.pictures is None))
            if writer is not None:  # after the overlays: a batch recorded as finished has all its PNGs
                unreadable = [p for p, _ in batch.skipped]
                jobs.append(functools.partial(writer.write, maps, idx, scores, batch.paths, unreadable, size,
                                              padded_rows, check.running))
            else:
                parts.append((maps, idx, scores))
                paths += batch.paths or []
            if jobs:
                background.submit(functools.partial(_run_all, jobs))
            rows, done, seen = rows + n, done + n, seen + n + len(batch.skipped)
            if progbar is not None:
                rate = done / max(time.perf_counter() - started, 1e-9)
                progbar.update(seen, values=[("images/s", rate)])
        if check is not None:
            check.verify()
        if background is not None:
            background.close()
            background = None
        if writer is not None:
            writer.finish()
    finally:
        reader.close()
        if background is not None:  # an error or an interrupt: finish the writes of the batches explained
            try:
                background.close()
            except Exception:  # the error being raised says more
                pass
    if progbar is not None and progbar.target is None:  # a known target has finished the bar
        progbar.update(seen, finalize=True)
    if writer is not None:
        return open_store(writer.path)
    kept = [p for p in parts if len(p[0])] or [_empty()]
    return DatasetExplanation(*(np.concatenate([p[i] for p in kept]) for i in range(3)),
                              paths=paths if source.files is not None else None, skipped=skipped)


def _run_all(jobs: List[Callable[[], None]]) -> None:
    for job in jobs:
        job()


class _ResumeCheck:
    """Compares the data with the store's: the running hash (`store.chain`) of the batches read, after the
    store's finished batches, against the one recorded with them; refuses a resume of other data."""

    def __init__(self, writer: StoreWriter, kind: str, labels: bool) -> None:
        self.writer, self.kind, self.labels = writer, kind, labels
        self.finished = writer.batches_done
        self.running = self.at_finished = ""
        self.read, self.verified = 0, self.finished == 0 and not writer.complete

    def see(self, batch: _Batch) -> bool:
        """Adds a batch to the running hash; True when the store has finished it (nothing to explain)."""
        if not batch.done and self.writer.complete:
            self.refuse(f"the data has more batches than the {self.finished} of this complete store")
        digest = batch.digest + (f":{batch.labels}" if self.labels else "")
        self.running, self.read = chain(self.running, digest), self.read + 1
        if self.read == self.finished:
            self.at_finished = self.running
        return batch.done

    def verify(self) -> None:
        """Once the finished batches are read (at the first new batch, or the end of the data)."""
        if self.verified:
            return
        self.verified = True
        if self.read < self.finished:
            self.refuse(f"the data has {self.read} batches, and the store has finished {self.finished}")
        if self.writer.digest is None:  # a store written before the hashes
            warnings.warn(f"keras-cam: the store '{self.writer.path}' does not record what its data was, so "
                          "the data cannot be compared with it: make sure it is the same, or pass "
                          "resume=False.", stacklevel=3)
        elif self.writer.digest != self.at_finished:
            what = ("the image files of its finished batches changed since (other sizes or modification "
                    "times: other pixels under the same names?)" if self.kind == "files" else
                    f"the first {self.finished} batches of the data differ from those it was made from "
                    "(other data, or a shuffled or randomly augmented dataset, which cannot be resumed)")
            self.refuse(what)

    def refuse(self, what: str) -> None:
        raise ValueError(f"Cannot resume the store '{self.writer.path}': {what}. Pass another `store` path, "
                         "or resume=False to overwrite it.")


def _empty() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0,), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32)
