"""`explain_dataset`: heatmaps for a whole dataset, batch by batch, in memory or into a store on disk.

One batch loop (`Pipeline`) reads the data from a source (`keras_cam.streaming_sources`: arrays, datasets,
image files), pads each batch to one compiled signature, explains it, and hands it to its sinks
(`keras_cam.streaming_sinks`: memory, a store, overlay pictures); `explain_dataset` and `keras-cam explain`
are that loop with different sinks. The data is read in a background thread (a queue of two batches) while
the current batch is explained, and files are written by a second thread, so neither decoding nor PNG
encoding waits for the model, and memory holds a few batches whatever the dataset's size. With a `store`
(`keras_cam.store`), each finished batch is recorded, and the same call after an interruption resumes after
the last finished batch (docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
import warnings
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam._batching import DEFAULT_BATCH_SIZE, check_batch_size, pad_rows
from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.store import open_store
from keras_cam.streaming_sinks import (QUEUE_DEPTH, Explained, MemorySink, OverlaySink, Sink, StoreSink,
                                       Writer, empty_rows)
from keras_cam.streaming_sources import (Batch, Source, check_targets, data_source, printable,  # noqa: F401
                                         skip_reason, targets_for)
from keras_cam.visualize.headers import DEFAULT_MAX_PIXELS

__all__ = ["DatasetExplanation", "Pipeline", "explain_dataset", "open_store"]

#: Reports a skipped image file: `(path, reason)`.
OnSkip = Callable[[str, str], None]


@dataclasses.dataclass
class DatasetExplanation(Explanation):
    """An `Explanation` of a whole dataset, with the image files explained (one per row) and those skipped."""

    paths: Optional[List[str]] = None
    skipped: List[str] = dataclasses.field(default_factory=list)


class _Reader:
    """Reads batches in a background thread, `QUEUE_DEPTH` ahead; its errors are raised by `__iter__`."""

    _END = object()

    def __init__(self, batches: Iterator[Batch]) -> None:
        self._queue: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches,), name="keras-cam-reader",
                                        daemon=True)
        self._thread.start()

    def _run(self, batches: Iterator[Batch]) -> None:
        read = 0
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

    def __iter__(self) -> Iterator[Batch]:
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


class _Padded:
    """Explains batches padded to the largest (the first) one's rows: one compiled signature, also on
    resume; checks that every batch has the first one's shapes."""

    def __init__(self, explainer: BaseCAM, targets: Any, batch_size: Optional[int], rows: int) -> None:
        self.explainer, self.targets, self.batch_size, self.rows = explainer, targets, batch_size, rows
        self.shapes: Optional[Tuple[Tuple[int, ...], ...]] = None

    def __call__(self, batch: Batch) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = batch.rows
        if not n:
            return empty_rows()
        found = tuple(tuple(a.shape[1:]) for a in keras.tree.flatten(batch.x))
        if self.shapes is not None and found != self.shapes:
            one = lambda s: s if len(s) > 1 else s[0]  # noqa: E731
            raise ValueError(f"Batch {batch.index} of the data has inputs of shape {one(found)} per example, "
                             f"but the earlier batches had {one(self.shapes)}: every batch must have the "
                             "same shape (resize the images to one size).")
        if self.shapes is None:  # the first batch, as given: errors name its own rows, not the padded ones
            self.explainer.check_inputs(batch.x)
        self.shapes, self.rows = found, max(self.rows, n)
        targets = targets_for(self.targets, batch, n)
        if isinstance(targets, np.ndarray):
            targets = pad_rows(targets, self.rows)
        try:
            x = keras.tree.map_structure(lambda a: pad_rows(a, self.rows), batch.x)
            result = self.explainer.compute(x, targets=targets, batch_size=self.batch_size)
        except Exception as e:
            e.add_note(f"(raised while keras-cam explained batch {batch.index} of the data)")
            raise
        return result.heatmaps[:n], result.targets[:n], result.scores[:n]


class _Progress:
    """A progress bar of the images read (explained or skipped) with images explained per second."""

    def __init__(self, target: Optional[int], verbose: int, seen: int) -> None:
        self.seen, self.done, self.started = seen, 0, time.perf_counter()
        self.bar = keras.utils.Progbar(target, verbose=verbose, stateful_metrics=["images/s"],
                                       unit_name="image") if verbose else None

    def update(self, explained: int, skipped: int) -> None:
        self.seen, self.done = self.seen + explained + skipped, self.done + explained
        if self.bar is not None:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.seen, values=[("images/s", rate)])

    def end(self) -> None:
        if self.bar is not None and self.bar.target is None:  # a known target has finished the bar
            self.bar.update(self.seen, finalize=True)


def _warn_skip(path: str, reason: str) -> None:
    warnings.warn(f"keras-cam: skipped {printable(path)}: {reason}", stacklevel=4)


def _run_all(jobs: List[Callable[[], None]]) -> None:
    for job in jobs:
        job()


class Pipeline:
    """The batch loop of `explain_dataset` and `keras-cam explain`: reads `source`'s batches ahead, explains
    each padded to one compiled signature, and hands it to every sink in order (memory, overlays, ...) and
    last to `store`, whose finished batches of an earlier run are compared, not explained.

    Args:
        explainer: any keras-cam explainer.
        source: the data (`streaming_sources.data_source`).
        targets: what `explain_dataset` takes (checked by `streaming_sources.check_targets`).
        sinks: where the explained batches go (`streaming_sinks`: `MemorySink`, `OverlaySink`, ...); their
            files are written in a background thread, a batch's in the order of the sinks.
        store: a `StoreSink`, new or resumed.
        batch_size: rows per compiled call (`explainer.compute`'s).
        size: the rows arrays and image files are read in per batch (what they are padded to).
        verbose: 0 silent, 1 a progress bar, 2 one line at the end.
        on_skip: told of each image file that cannot be read, `(path, reason)` (default: a warning).

    Example:

    ```python
    source = data_source(explainer, images, size=8)
    memory = MemorySink()
    skipped = Pipeline(explainer, source, sinks=[memory], size=8, verbose=0).run()
    heatmaps, targets, scores = memory.arrays()
    ```
    """

    def __init__(self, explainer: BaseCAM, source: Source, targets: Any = None, sinks: Sequence[Sink] = (),
                 store: Optional[StoreSink] = None, batch_size: Optional[int] = None,
                 size: int = DEFAULT_BATCH_SIZE, verbose: int = 1, on_skip: Optional[OnSkip] = None) -> None:
        self.explainer, self.source, self.targets = explainer, source, targets
        self.sinks, self.store = list(sinks) + ([store] if store is not None else []), store
        self.batch_size, self.size, self.verbose = batch_size, size, verbose
        self.on_skip = on_skip or _warn_skip

    def run(self) -> List[str]:
        """Explains the data; returns the image files skipped. A complete store is only compared with the
        data (read again, not explained), and nothing is written."""
        store = self.store
        if store is not None and store.writer.complete:
            for batch in self.source.batches(store.writer.batches_done, True):
                store.check.see(batch)
            store.check.verify()
            return []
        row = store.rows if store is not None else 0
        progress = _Progress(self.source.n, self.verbose, store.seen if store is not None else 0)
        fixed = self.source.kind in ("array", "files")
        explain = _Padded(self.explainer, self.targets, self.batch_size,
                          self.size if fixed else store.writer.padded if store is not None else 0)
        reader = _Reader(self.source.batches(store.writer.batches_done if store else 0, store is not None))
        background: Optional[Writer] = None
        skipped: List[str] = []
        try:
            for batch in reader:
                if store is not None and store.finished(batch):
                    continue  # finished in the store: its hash is compared before anything new is written
                for path, reason in batch.skipped:
                    self.on_skip(path, reason)
                skipped += [path for path, _ in batch.skipped]
                explained = Explained(batch, *explain(batch), row=row, padded=explain.rows)
                jobs = [job for job in (sink.take(explained) for sink in self.sinks) if job is not None]
                if jobs:
                    background = background or Writer()
                    background.submit(functools.partial(_run_all, jobs))
                row += explained.rows
                progress.update(explained.rows, len(batch.skipped))
            if store is not None:
                store.end_of_data()
            if background is not None:
                background, writing = None, background
                writing.close()
            for sink in self.sinks:
                sink.finish()
        finally:
            reader.close()
            if background is not None:  # an error or an interrupt: finish the writes of the batches explained
                try:
                    background.close()
                except Exception:  # the error being raised says more
                    pass
        progress.end()
        return skipped


def file_stems(explainer: BaseCAM, files: Sequence[str], folder: str) -> dict:
    """`{file: output path without suffix}` in `folder` (`visualize.images.output_stems`)."""
    from keras_cam.visualize.images import output_stems

    return dict(zip(files, output_stems(list(files), str(folder), explainer.name.replace("+", "p"))))


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
    source = data_source(explainer, data, size, preprocess, max_pixels,
                         keep_pictures=overlays_dir is not None, exclude=overlays_dir)
    targets = check_targets(targets, source)
    sinks: List[Sink] = []
    if store is None:
        sinks.append(MemorySink())
    else:
        store = StoreSink(explainer, source, store, targets, batch_size, size, dtype, resume, preprocess)
    if overlays_dir is not None:  # before the store's rows: a batch recorded as finished has all its PNGs
        stems = None if source.files is None else file_stems(explainer, source.files, overlays_dir)
        sinks.append(OverlaySink(explainer, overlays_dir, stems))
    skipped = Pipeline(explainer, source, targets, sinks, store, batch_size, size, verbose).run()
    if store is not None:
        return open_store(store.writer.path)
    memory = sinks[0]
    return DatasetExplanation(*memory.arrays(), paths=memory.paths if source.files is not None else None,
                              skipped=skipped)
