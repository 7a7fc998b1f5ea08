"""The sinks of `explain_dataset`: where each explained batch goes (memory, a store, overlay pictures).

The batch loop (`keras_cam.streaming`) hands every sink each explained batch, in order, on its own thread;
a sink keeps what it needs there and returns the slow part (writing files) as a job, which runs in one
background thread (`Writer`), in the order of the sinks: the overlays of a batch are written before the
store records it as finished (docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import dataclasses
import functools
import os
import queue
import threading
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np

from keras_cam.store import StoreWriter
from keras_cam.store_checks import UNCHECKED, chain, describe, settings
from keras_cam.streaming_sources import Batch, Source

__all__ = ["Explained", "MemorySink", "OverlaySink", "Sink", "StoreSink", "Writer"]

#: Batches of jobs (store rows, overlays) waiting to be written.
QUEUE_DEPTH = 2

#: Reports one written overlay: `(input path or None, output file, explained target, its score)`.
Report = Callable[[Optional[str], str, Any, float], None]


@dataclasses.dataclass
class Explained:
    """One batch, explained: its maps, targets and scores (its own rows, without the padding)."""

    batch: Batch
    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    row: int  # the batch's first row in the results
    padded: int  # the rows the batch was padded to (a resumed store pads as its first run did)

    @property
    def rows(self) -> int:
        return len(self.heatmaps)


class Sink:
    """A part of the pipeline that takes each explained batch; `take` runs on the loop's thread and returns
    a job for the background writer (or None), `finish` runs once the data ended and every job ran."""

    def take(self, explained: Explained) -> Optional[Callable[[], None]]:
        raise NotImplementedError

    def finish(self) -> None:
        pass


class Writer:
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


class MemorySink(Sink):
    """Keeps every batch's maps, targets and scores (and file paths) in memory."""

    def __init__(self) -> None:
        self.parts: List[Tuple[np.ndarray, ...]] = []
        self.paths: List[str] = []

    def take(self, explained: Explained) -> None:
        self.parts.append((explained.heatmaps, explained.targets, explained.scores))
        self.paths += explained.batch.paths or []

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        kept = [p for p in self.parts if len(p[0])] or [empty_rows()]
        return tuple(np.concatenate([p[i] for p in kept]) for i in range(3))


def empty_rows() -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0,), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32)


class OverlaySink(Sink):
    """One overlay PNG per image (`kc.overlay` + `kc.save_image`), and with `save_raw` its map as .npy beside
    it. Image files are named by `stems` (`{path: output path without suffix}`), other data `<row>_<tag>`
    in `folder`; `report` is told of each image written (the command line prints a line)."""

    def __init__(self, explainer: Any, folder: str, stems: Optional[Dict[str, str]] = None,
                 alpha: float = 0.4, colormap: str = "jet", save_raw: bool = False,
                 report: Optional[Report] = None) -> None:
        from keras_cam import capture

        self.folder, self.stems, self.report = os.fspath(folder), stems, report
        self.tag = explainer.name.replace("+", "p")
        self.style = {"alpha": alpha, "colormap": colormap}
        self.save_raw = save_raw
        self.channels_first = capture.input_layout(explainer.model, 4).channels_first

    def take(self, explained: Explained) -> Optional[Callable[[], None]]:
        batch, maps = explained.batch, explained.heatmaps
        if not explained.rows:
            return None
        if maps.ndim != 3:
            raise ValueError(f"`overlays_dir` writes pictures of one 2-D map per image; these maps "
                             f"have shape {maps.shape[1:]} per image. Leave overlays_dir out.")
        paths = batch.paths or [None] * explained.rows
        stems = ([self.stems[p] for p in paths] if self.stems is not None and batch.paths else
                 [os.path.join(self.folder, f"{explained.row + j:06d}_{self.tag}") for j in range(len(maps))])
        pictures = batch.pictures if batch.pictures is not None else keras.tree.flatten(batch.x)[0]
        moved = self.channels_first and batch.pictures is None
        return functools.partial(self._write, paths, stems, pictures, moved, maps, explained.targets,
                                 explained.scores)

    def _write(self, paths: List[Optional[str]], stems: List[str], pictures: np.ndarray, moved: bool,
               maps: np.ndarray, targets: np.ndarray, scores: np.ndarray) -> None:
        from keras_cam import visualize  # looked up per batch: its functions can be replaced (tests)

        for path, stem, picture, heatmap, target, score in zip(paths, stems, pictures, maps, targets, scores):
            picture = np.moveaxis(picture, 0, -1) if moved else picture
            if picture.dtype != np.uint8 and picture.size and (picture.min() < 0 or picture.max() > 1):
                picture = (picture - picture.min()) / max(float(picture.max() - picture.min()), 1e-12)
            visualize.save_image(stem + ".png", visualize.overlay(picture, heatmap, **self.style))
            if self.save_raw:
                np.save(stem + ".npy", heatmap)
            if self.report is not None:
                self.report(path, stem + ".png", target, float(score))


class StoreSink(Sink):
    """Writes each batch's rows into a store (`keras_cam.store.StoreWriter`), new or resumed: the finished
    batches of a resumed store are read again (not explained) and compared by their hash (`ResumeCheck`)."""

    def __init__(self, explainer: Any, source: Source, path: str, targets: Any, batch_size: Optional[int],
                 size: int, dtype: str, resume: bool, preprocess: Optional[Callable],
                 extra: Optional[Dict[str, Any]] = None) -> None:
        if getattr(explainer, "layer_refs", ()) is None and source.first is not None:
            sample = source.first()  # a subclassed model's automatic layer: found now, recorded resolved
            if sample is not None:
                explainer._resolve_on_first_call(explainer._prepare_inputs(sample))
        made = settings(explainer, source.kind, source.n, targets, batch_size, dtype)
        if source.content is not None:  # another file list or other arrays of the same size: not resumed
            made["data"]["content"] = source.content
        if preprocess is not None:  # other inputs, other maps: a store made without it is not resumed
            made["preprocess"] = describe(preprocess)
        made.update(extra or {})
        self.writer, self.size = StoreWriter(path, made, resume, dtype), size
        labels = isinstance(targets, str) and targets == "labels"
        self.check = ResumeCheck(self.writer, source.kind, labels=labels)
        unchecked = [k for k in ("preprocess", "targets") if str(made.get(k, "")).endswith(UNCHECKED)]
        if self.writer.batches_done and unchecked:
            warnings.warn(f"keras-cam: resuming the store '{self.writer.path}' with "
                          f"{' and '.join(unchecked)} that cannot be compared with the ones it was made with "
                          "(a callable whose code or state keras-cam cannot read): make sure they are the "
                          "same, or pass resume=False.", stacklevel=3)

    @property
    def rows(self) -> int:
        return int(self.writer.progress["rows"])

    @property
    def seen(self) -> int:
        """Images the store has read, explained or skipped (where a progress bar starts)."""
        return self.rows + len(self.writer.progress["skipped"])

    def finished(self, batch: Batch) -> bool:
        """True for a batch the store has finished (after comparing its hash); the first new batch is
        compared with the store's finished ones before anything is written."""
        if self.check.see(batch):
            return True
        self.check.verify()
        return False

    def take(self, explained: Explained) -> Callable[[], None]:
        unreadable = [p for p, _ in explained.batch.skipped]
        return functools.partial(self.writer.write, explained.heatmaps, explained.targets, explained.scores,
                                 explained.batch.paths, unreadable, self.size, explained.padded,
                                 self.check.running)

    def end_of_data(self) -> None:
        self.check.verify()

    def finish(self) -> None:
        self.writer.finish()


class ResumeCheck:
    """Compares the data with the store's: the running hash (`store.chain`) of the batches read, after the
    store's finished batches, against the one recorded with them; refuses a resume of other data."""

    def __init__(self, writer: StoreWriter, kind: str, labels: bool) -> None:
        self.writer, self.kind, self.labels = writer, kind, labels
        self.finished = writer.batches_done
        self.running = self.at_finished = ""
        self.read, self.verified = 0, self.finished == 0 and not writer.complete

    def see(self, batch: Batch) -> bool:
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
                          "resume=False.", stacklevel=5)
        elif self.writer.digest != self.at_finished:
            what = ("the image files of its finished batches changed since (other sizes or modification "
                    "times: other pixels under the same names?)" if self.kind == "files" else
                    f"the first {self.finished} batches of the data differ from those it was made from "
                    "(other data, or a shuffled or randomly augmented dataset, which cannot be resumed)")
            self.refuse(what)

    def refuse(self, what: str) -> None:
        raise ValueError(f"Cannot resume the store '{self.writer.path}': {what}. Pass another `store` path, "
                         "or resume=False to overwrite it.")
