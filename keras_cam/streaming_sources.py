"""The sources of `explain_dataset`: what the data is, read as batches of the model's input.

Data sources are recognised by what they offer (duck typing), so neither TensorFlow nor torch is imported
here. Each source yields `Batch`es; with a store, each batch also carries a hash of what it read, which a
resumed run compares with the store's (docs/architecture.md, "Whole datasets").
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import warnings
from typing import Any, Callable, Iterator, List, Optional, Tuple

import keras
import numpy as np

from keras_cam._inputs import image_input, pictures_to_input
from keras_cam._validation import to_numpy
from keras_cam.store_checks import batch_digest, data_content, files_digest

__all__ = ["Batch", "Source", "data_source", "printable", "skip_reason", "targets_for"]

#: Reads one image file as RGB in [0, 1] at (height, width): `(path, hw, max_pixels) -> (H, W, 3)`.
Decode = Callable[[str, Tuple[int, int], Optional[int]], np.ndarray]


@dataclasses.dataclass
class Batch:
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

    @property
    def rows(self) -> int:
        return 0 if self.x is None else len(keras.tree.flatten(self.x)[0])


@dataclasses.dataclass
class Source:
    kind: str
    n: Optional[int]  # images, when known before reading
    # batches(skip, hashing): every batch; the first `skip` are finished ones (`done`, hashed, not kept)
    batches: Callable[[int, bool], Iterator[Batch]]
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


def _elements(elements: Callable[[], Iterator[Any]]) -> Callable[[int, bool], Iterator[Batch]]:
    """Batches from a source of Keras-style elements, `x` or `(x, y[, sample_weight])`. Finished batches of
    a resumed run are read too (an iterator cannot seek; the others are compared by their hash)."""

    def batches(skip: int, hashing: bool) -> Iterator[Batch]:
        for i, element in enumerate(elements()):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
            x, y = _numpy(x), None if y is None else to_numpy(y)
            batch = Batch(i, x, y, done=i < skip)
            if hashing:
                batch.digest, batch.labels = batch_digest(x), batch_digest(y)
            if batch.done:
                batch.x = batch.y = None
            yield batch

    return batches


def _read_image(path: str, hw: Tuple[int, int], max_pixels: Optional[int]) -> np.ndarray:
    from keras_cam.visualize.images import read_image

    return read_image(path, hw, max_pixels=max_pixels)


def _image_layout(model: Any, hw: Optional[Tuple[int, int]]) -> Tuple[Tuple[int, int], int, bool]:
    """(height, width), channels and channels-first of the input image files become. A given `hw` also
    serves models that take any image size (RGB, channels last, as given)."""
    if hw is None:
        return image_input(model)
    try:
        _, channels, channels_first = image_input(model)
    except ValueError:
        channels, channels_first = 3, False
    return (int(hw[0]), int(hw[1])), channels, channels_first


def _files_source(explainer: Any, files: List[str], size: int, preprocess: Optional[Callable],
                  max_pixels: Optional[int], keep_pictures: bool, hw: Optional[Tuple[int, int]] = None,
                  decode: Optional[Decode] = None) -> Source:
    import cv2

    hw, channels, channels_first = _image_layout(explainer.model, hw)
    decode = decode or _read_image

    def batches(skip: int, hashing: bool) -> Iterator[Batch]:
        for i in range(math.ceil(len(files) / size)):
            names = files[i * size:(i + 1) * size]
            digest = files_digest(names) if hashing else None  # sizes and times: a stat, nothing decoded
            if i < skip:
                yield Batch(i, None, start=i * size, digest=digest, done=True)
                continue
            pictures, paths, skipped = [], [], []
            for path in names:
                try:
                    pictures.append(decode(path, hw, max_pixels))
                    paths.append(path)
                except (ValueError, OSError, MemoryError, cv2.error) as e:
                    skipped.append((path, skip_reason(e)))
            x = kept = None
            if pictures:
                stacked = np.stack(pictures)
                x = pictures_to_input(stacked, channels, channels_first, preprocess)
                kept = stacked if keep_pictures else None
            yield Batch(i, x, start=i * size, pictures=kept, paths=paths, skipped=skipped, digest=digest)

    def first() -> Any:
        for path in files[:size]:
            try:
                picture = decode(path, hw, max_pixels)
            except (ValueError, OSError, MemoryError, cv2.error):
                continue
            return pictures_to_input(picture[None], channels, channels_first, preprocess)
        return None

    return Source("files", len(files), batches, files, data_content(files=files), first)


def _array_source(data: Any, size: int) -> Source:
    n = int(data.shape[0])  # numpy (also memory-mapped), a backend tensor, a zarr array: sliced per batch

    def arrays(skip: int, hashing: bool) -> Iterator[Batch]:
        for i in range(math.ceil(n / size)):
            x = to_numpy(data[i * size:(i + 1) * size])
            digest = batch_digest(x) if hashing else None
            yield Batch(i, None if i < skip else x, start=i * size, digest=digest, done=i < skip)

    return Source("array", n, arrays, content=data_content(data=data),
                  first=lambda: to_numpy(data[:1]) if n else None)


def _image_paths(data: Any) -> Optional[List[Any]]:
    is_path = lambda v: isinstance(v, (str, os.PathLike))  # noqa: E731
    if is_path(data):
        return [data]
    if isinstance(data, (list, tuple)) and data and all(is_path(v) for v in data):
        return list(data)
    return None


def data_source(explainer: Any, data: Any, size: int, preprocess: Optional[Callable] = None,
                max_pixels: Optional[int] = None, keep_pictures: bool = False, exclude: Any = None,
                hw: Optional[Tuple[int, int]] = None, decode: Optional[Decode] = None) -> Source:
    """What `data` is, recognised by what it offers (no backend is imported to recognise it). A folder is
    searched leaving out `exclude` (the overlays: a second run must not take the first one's pictures);
    image files are resized to `hw` (default: the model's input size) and read by `decode`."""
    from keras_cam.visualize.images import image_files

    items = _image_paths(data)
    if items is not None:
        missing = [os.fspath(v) for v in items if not os.path.exists(v)]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(f"`data` names a file or folder that does not exist: "
                             f"'{printable(missing[0])}'{more}; check the path.")
        files, empty = image_files(items, exclude=exclude)
        for folder in empty:
            warnings.warn(f"keras-cam: skipped {printable(folder)}: a folder without image files",
                          stacklevel=3)
        return _files_source(explainer, files, size, preprocess, max_pixels, keep_pictures, hw, decode)
    if hasattr(data, "as_numpy_iterator") and hasattr(data, "cardinality"):  # tf.data.Dataset
        if int(data.cardinality()) == -1:
            raise ValueError("`data` is an infinite tf.data.Dataset (e.g. .repeat() without a count); pass a "
                             "finite one, e.g. dataset.take(n).")
        return Source("tf.data", None, _elements(data.as_numpy_iterator),
                      first=lambda: _first_x(data.take(1).as_numpy_iterator()))
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        if count is None:
            raise ValueError("`data` is an infinite keras.utils.PyDataset (num_batches is None); give it a "
                             "length (__len__) to explain it.")
        return Source("PyDataset", None, _elements(lambda: (data[i] for i in range(count))),
                      first=lambda: _first_x(data[i] for i in range(min(count, 1))))
    if hasattr(data, "shape") and hasattr(data, "__getitem__") and len(getattr(data, "shape", ())) >= 2:
        return _array_source(data, size)
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        kind = "DataLoader" if hasattr(data, "dataset") and hasattr(data, "batch_size") else "iterable"
        once = isinstance(data, collections.abc.Iterator)  # a generator; a list or DataLoader starts afresh
        return Source(kind, None, _elements(lambda: iter(data)),
                      first=None if once else lambda: _first_x(iter(data)))
    raise ValueError("`data` must be an array of images, a tf.data.Dataset, a keras.utils.PyDataset, a torch "
                     "DataLoader, an iterable of batches, image paths or a folder; got "
                     f"{type(data).__name__}.")


def check_targets(targets: Any, source: Source) -> Any:
    """`targets` as the batches use them: per-image ints need array data, one per image."""
    if not isinstance(targets, (list, tuple, np.ndarray)):
        return targets
    targets = np.asarray(targets)
    fits = source.kind == "array" and targets.shape[:1] == (source.n,)
    if not fits or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError("Per-image `targets` need array data and one int per image; got targets of "
                         f"shape {targets.shape} for {source.kind} data of {source.n} images. Use "
                         "targets='labels' to explain the labels of (x, y) batches.")
    return targets


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


def targets_for(targets: Any, batch: Batch, rows: int) -> Any:
    """The targets of one batch: its labels, its rows of per-image targets, or the same for every batch."""
    if isinstance(targets, str) and targets == "labels":
        return _labels(batch.y, batch.index)
    if isinstance(targets, np.ndarray):
        return targets[batch.start:batch.start + rows]
    return targets
