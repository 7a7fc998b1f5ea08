"""Image files and pixel conversions: RGB in, RGB out (OpenCV's BGR order stays inside this module).

Images are float arrays in [0, 1] or uint8 arrays, (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale; every
function returns new arrays and leaves its inputs alone.
"""
from __future__ import annotations

import collections
import os
import pathlib
import uuid
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from keras_cam._validation import to_numpy
from keras_cam.visualize.headers import DEFAULT_MAX_PIXELS, ImageFileError, check_image_file, check_max_pixels

__all__ = ["as_rgb", "deprocess_image", "image_files", "output_stems", "read_image", "save_image", "to_uint8"]

_SUFFIXES = (".png", ".jpg", ".jpeg")
#: What is taken from a folder (`image_files`): the suffixes of the formats OpenCV decodes.
IMAGE_SUFFIXES = frozenset([".avif", ".bmp", ".dib", ".exr", ".gif", ".hdr", ".jp2", ".jpe", ".jpeg", ".jpg",
                            ".pbm", ".pfm", ".pgm", ".pic", ".png", ".pnm", ".ppm", ".pxm", ".ras", ".sr",
                            ".tif", ".tiff", ".webp"])
PathLike = Union[str, "os.PathLike[str]"]


def to_uint8(image: Any) -> np.ndarray:
    """Converts an image (or a batch) to a new uint8 array of the same shape.

    Floats must be in [0, 1] and are scaled by 255 and rounded; uint8 is copied as is; other integer types
    must hold 0-255; bool becomes 0/255.

    Args:
        image: array-like of any shape, e.g. (H, W, 3), (H, W) or (N, H, W, 3).

    Returns:
        A uint8 array with the same shape.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import to_uint8
    >>> to_uint8(np.array([0.0, 0.5, 1.0])).tolist()
    [0, 128, 255]
    """
    try:
        arr = np.asarray(to_numpy(image))
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"Expected an image array; could not convert it: {e}") from None
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"Expected a numeric image (float in [0, 1] or uint8), got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"Integer images must hold values in 0..255 (got {arr.min()}..{arr.max()}); "
                             "rescale them, or pass floats in [0, 1].")
        return arr.astype(np.uint8)
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("The image contains NaN or infinite values; clean it first (e.g. np.nan_to_num).")
    # A little slack for float round-off; 0..255 floats are a mistake to report, not to guess at.
    if arr.size and (arr.max() > 1.0 + 1e-6 or arr.min() < -1e-6):
        raise ValueError(
            f"Float images must be in [0, 1] (got values in [{arr.min():.3g}, {arr.max():.3g}]); "
            "scale them (e.g. image / 255.0) or pass uint8."
        )
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def as_rgb(image: Any, name: str = "image") -> np.ndarray:
    """A uint8 (H, W, 3) copy of an RGB, RGBA or grayscale image."""
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"`{name}` must be (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale, got shape {img.shape}.")
    return np.ascontiguousarray(img[..., :3])  # RGBA: the alpha channel is dropped


def _bgr(image: Any) -> np.ndarray:
    """uint8 BGR (H, W, 3) or grayscale (H, W), as cv2 encoders expect."""
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return img
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"`image` must be (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale, got shape {img.shape}.")
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def save_image(path: PathLike, image: Any) -> pathlib.Path:
    """Writes an RGB or grayscale image as PNG or JPEG (chosen by the suffix), atomically.

    Missing parent directories are created. The file is encoded in memory, written to a hidden temporary file
    beside the target and moved into place with `os.replace`, so readers never see a half-written image and
    a failure leaves nothing behind.

    Args:
        path: target file; the suffix must be .png, .jpg or .jpeg (any case).
        image: (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale; float in [0, 1] or uint8.

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        ValueError: for an unsupported suffix or a bad image.
        OSError: when the directory or file cannot be written (naming the path).

    Example:

    >>> import tempfile, numpy as np
    >>> from keras_cam.visualize import save_image
    >>> save_image(tempfile.mkdtemp() + "/red.png", np.array([[[1.0, 0.0, 0.0]]])).name
    'red.png'
    """
    path = pathlib.Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"Cannot save '{path}': the suffix must be .png, .jpg or .jpeg, got {path.suffix!r}.")
    ok, encoded = cv2.imencode(suffix, _bgr(image))
    if not ok:
        raise ValueError(f"OpenCV could not encode the image for '{path}' as {suffix}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"Cannot create the directory of '{path}': {e.strerror or e}.") from None
    # O_EXCL on a unique name: no clash with a concurrent writer; mode 0o666 lets the umask decide the final
    # permissions (mkstemp's 0o600 would make the image private to this user).
    tmp = path.parent / f".tmp-{uuid.uuid4().hex[:12]}{path.suffix}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(f"Cannot write '{path}': {e.strerror or e}.") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_image(path: PathLike, size: Optional[Union[int, Tuple[int, int]]] = None,
               max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Reads an image file as float32 RGB in [0, 1], refusing image bombs before decoding them.

    Grayscale files come back with 3 equal channels; an alpha channel is dropped. The size a PNG, JPEG,
    BMP, GIF or WebP file declares is read from its header and checked against `max_pixels` before
    anything is decoded; other formats rely on OpenCV's own limit (`OPENCV_IO_MAX_IMAGE_PIXELS`, see
    `keras_cam.visualize.headers`).

    Args:
        path: an image file OpenCV can decode (PNG, JPEG, BMP, TIFF, WebP, ...).
        size: optional `(height, width)` (or one int for a square) to resize to; area interpolation when
            shrinking, bilinear when enlarging.
        max_pixels: the most pixels (height x width) of the file and of `size`; None for no limit of ours.
            The default, 178,956,970, is Pillow's decompression-bomb threshold (about 13,400 x 13,400).

    Returns:
        float32 (H, W, 3) RGB in [0, 1].

    Raises:
        ValueError: the file does not exist, cannot be read or decoded, or has more than `max_pixels`
            pixels (an `ImageFileError`, whose `reason` leaves out the path); or `size` is invalid or above
            `max_pixels`, or `max_pixels` is invalid.

    Example:

    >>> import tempfile, numpy as np
    >>> from keras_cam.visualize import read_image, save_image
    >>> path = save_image(tempfile.mkdtemp() + "/red.png", np.array([[[1.0, 0.0, 0.0]]]))
    >>> read_image(path, size=(2, 3)).shape
    (2, 3, 3)
    """
    check_max_pixels(max_pixels)
    if size is not None:
        pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size) if isinstance(size, (tuple, list)) else ()
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in pair):
            raise ValueError(f"`size` must be (height, width) with positive integers, or one int, got {size!r}.")
        pixels = int(pair[0]) * int(pair[1])
        if max_pixels is not None and pixels > max_pixels:  # a resize allocates too
            raise ValueError(f"`size` {tuple(int(v) for v in pair)} is {pixels:,} pixels, above "
                             f"max_pixels={max_pixels:,}; pass a smaller size (or raise max_pixels).")
    name = os.fspath(path)
    check_image_file(name, max_pixels)  # exists, header readable, within the limit: before decoding
    try:
        # imdecode on the bytes, not imread: the same result, and non-ASCII paths work on every platform.
        data = np.fromfile(name, dtype=np.uint8)
    except OSError as e:
        raise ImageFileError(name, f"cannot be read ({e.strerror or e})") from None
    except MemoryError:
        raise ImageFileError(name, "not enough memory to read the file") from None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as e:  # OpenCV's own limits and allocation failures raise, corrupt data returns None
        raise ImageFileError(name, _opencv_reason(e)) from None
    except MemoryError:
        raise ImageFileError(name, "not enough memory to decode it") from None
    if img is None:
        why = "unsupported format, or a corrupt or truncated file"
        raise ImageFileError(name, f"OpenCV cannot decode it ({why})",
                             f"Cannot decode '{name}' as an image ({why}).")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None:
        h, w = int(pair[0]), int(pair[1])
        shrink = h * w < img.shape[0] * img.shape[1]
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return img.astype(np.float32) / 255.0


def image_files(items: Sequence[PathLike], exclude: Optional[PathLike] = None) -> Tuple[List[str], List[str]]:
    """The image files among files and folders, each once, in order; folders are searched recursively.

    Files are kept as given (missing or unreadable ones are reported when they are read); a folder gives
    its files with an image suffix (`IMAGE_SUFFIXES`, any case), sorted, leaving out the folder `exclude`
    (an output folder inside an input folder: a second run must not take the first one's pictures).

    Args:
        items: image files and folders.
        exclude: a folder to leave out of the search, e.g. where the outputs go.

    Returns:
        `(files, empty_folders)`: the files, each once (by absolute path), and the folders without images.

    Example:

    >>> import os, tempfile, numpy as np
    >>> from keras_cam.visualize.images import image_files, save_image
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_image(os.path.join(folder, "b", "y.png"), np.zeros((2, 2)))
    >>> _ = save_image(os.path.join(folder, "a.png"), np.zeros((2, 2)))
    >>> files, empty = image_files([folder])
    >>> [os.path.relpath(f, folder) for f in files], empty
    (['a.png', 'b/y.png'], [])
    """
    out_dir = None if exclude is None else os.path.normcase(os.path.abspath(os.fspath(exclude)))
    files: List[str] = []
    empty: List[str] = []
    for item in (os.fspath(i) for i in items):
        if not os.path.isdir(item):
            files.append(item)
            continue
        found = []
        for root, dirs, names in os.walk(item):
            dirs[:] = [d for d in dirs if os.path.normcase(os.path.abspath(os.path.join(root, d))) != out_dir]
            found += [os.path.join(root, n) for n in names
                      if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
        if not found:
            empty.append(item)
        files += sorted(found)
    seen = set()
    unique = []
    for path in files:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, empty


def output_stems(paths: Sequence[str], out: str, tag: str) -> List[str]:
    """One output path without suffix per input: `out/<its folder relative to the inputs' common parent
    folder>/<name>_<tag>`. Distinct inputs get distinct outputs, and no output is an input: names that would
    clash (x.png and x.jpg, or names equal but for case) get the input's extension, then "-2", "-3", ...

    Args:
        paths: the input files, each once.
        out: the output folder.
        tag: what the outputs are (e.g. the method's name).

    Returns:
        The stems, in the order of `paths`; add ".png" or ".npy".

    Example:

    >>> from keras_cam.visualize.images import output_stems
    >>> output_stems(["in/a/x.png", "in/b/x.png", "in/b/x.jpg"], "out", "gradcam")
    ['out/a/x_gradcam', 'out/b/x_png_gradcam', 'out/b/x_jpg_gradcam']
    """
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    try:
        common: Optional[str] = os.path.commonpath(folders) if folders else None
    except ValueError:  # different drives (Windows): no common parent, names alone
        common = None

    def place(i: int, name: str) -> str:
        folder = os.path.relpath(folders[i], common) if common else ""
        return os.path.normpath(os.path.join(out, folder, name))

    def key(path: str) -> str:  # case-insensitive: x.png and X.png are one file on macOS and Windows
        return os.path.normcase(os.path.abspath(path)).casefold()

    names = [os.path.splitext(os.path.basename(p)) for p in paths]
    primary = [place(i, f"{stem}_{tag}") for i, (stem, _) in enumerate(names)]
    counts = collections.Counter(key(p) for p in primary)
    inputs = {key(p) for p in paths}
    reserved = {key(p) for p in primary if counts[key(p)] == 1}
    taken: set = set()

    def clashes(stem: str) -> bool:
        return key(stem) in taken or key(stem + ".png") in inputs or key(stem + ".npy") in inputs

    stems = []
    for i, (stem, ext) in enumerate(names):
        chosen = primary[i]
        if counts[key(chosen)] > 1 or clashes(chosen):
            base = place(i, f"{stem}_{ext[1:]}_{tag}" if ext[1:] else f"{stem}_{tag}")
            chosen, number = base, 2
            while clashes(chosen) or key(chosen) in reserved:
                chosen, number = f"{base}-{number}", number + 1
        taken.add(key(chosen))
        stems.append(chosen)
    return stems


def _opencv_reason(error: Exception) -> str:
    """Why OpenCV refused to decode a file, from its multi-line `cv2.error`, as one short clause."""
    text = " ".join(str(error).split())
    if "CV_IO_MAX_IMAGE" in text:
        return ("OpenCV refuses it: it is larger than the OPENCV_IO_MAX_IMAGE_PIXELS (or _WIDTH / _HEIGHT) "
                "environment variable allows, which OpenCV reads once, when cv2 is imported; set it before "
                "starting Python if you trust the file")
    detail = text.split(" error: ", 1)[-1]  # drop "OpenCV(5.0.0) /path/to/file.cpp:79:"
    if "Failed to allocate" in detail or "Insufficient memory" in detail:
        return f"not enough memory to decode it ({detail})"
    return f"OpenCV cannot decode it ({detail})"


def deprocess_image(x: Any) -> np.ndarray:
    """The keras.io recipe's `deprocess_image`, per image: standardize, x0.1, +0.5, clip to [0, 1], x255, uint8.

    Args:
        x: one image (H, W, C) or a batch (N, H, W, C), any range. Not modified.

    Returns:
        uint8 array of the same shape; each image is standardized over all its pixels and channels.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import deprocess_image
    >>> picture = deprocess_image(np.random.default_rng(0).random((64, 64, 3)) * 255)
    >>> str(picture.dtype), bool(120 <= picture.mean() <= 135)
    ('uint8', True)
    """
    x = np.asarray(to_numpy(x), dtype=np.float64)
    if x.ndim not in (3, 4):
        raise ValueError(f"Expected an image (H, W, C) or a batch (N, H, W, C), got shape {x.shape}.")
    axes = tuple(range(x.ndim - 3, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5)
    x = np.clip(x * 0.1 + 0.5, 0.0, 1.0) * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)  # truncation, as the recipe's astype("uint8")
