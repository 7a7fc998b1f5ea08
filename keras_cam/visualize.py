"""Pictures with OpenCV: heatmap overlays, mosaics, and image files. RGB in, RGB out.

Images are float arrays in [0, 1] or uint8 arrays, (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale; every
function returns new arrays and leaves its inputs alone. OpenCV's BGR order stays inside this module.
"""
from __future__ import annotations

import math
import os
import pathlib
import uuid
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from keras_cam._validation import close_matches, to_numpy

__all__ = ["colormap_names", "image_grid", "overlay", "read_image", "save_image", "to_uint8"]

_COLORMAPS = {name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")}
_SUFFIXES = (".png", ".jpg", ".jpeg")
PathLike = Union[str, "os.PathLike[str]"]


def colormap_names() -> List[str]:
    """Lists the OpenCV colormap names that `overlay` accepts.

    Returns:
        Sorted lower-case names: "autumn", "bone", ..., "jet", ..., "turbo", "viridis", ...

    Example:

    >>> from keras_cam.visualize import colormap_names
    >>> "jet" in colormap_names() and "viridis" in colormap_names()
    True
    """
    return sorted(_COLORMAPS)


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


def _rgb(image: Any, name: str = "image") -> np.ndarray:
    """A uint8 (H, W, 3) copy of an RGB, RGBA or grayscale image."""
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"`{name}` must be (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale, got shape {img.shape}.")
    return np.ascontiguousarray(img[..., :3])  # RGBA: the alpha channel is dropped


def _colormap(colormap: Union[str, int]) -> int:
    """The `cv2.COLORMAP_*` value for a name (case-insensitive) or a value."""
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool):
        if int(colormap) not in _COLORMAPS.values():
            raise ValueError(f"Unknown OpenCV colormap value {colormap}; use a cv2.COLORMAP_* constant or one of: "
                             f"{', '.join(colormap_names())}.")
        return int(colormap)
    key = str(colormap).lower()
    key = key[len("colormap_"):] if key.startswith("colormap_") else key
    if key not in _COLORMAPS:
        near = close_matches(key, _COLORMAPS)
        hint = f" Did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
        raise ValueError(f"Unknown colormap {colormap!r}.{hint} Available: {', '.join(colormap_names())}.")
    return _COLORMAPS[key]


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, colormap: Union[str, int] = "jet") -> np.ndarray:
    """Blends a colored heatmap over an image.

    The heatmap is clipped to [0, 1], resized to the image with bilinear interpolation when sizes differ,
    colored with an OpenCV colormap and mixed in as a convex blend,
    `alpha * colored + (1 - alpha) * image`, so nothing saturates and `alpha` is the heatmap's weight.

    Args:
        image: (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale; float in [0, 1] or uint8.
        heatmap: (h, w) map with values in [0, 1], e.g. one map of an explainer's output.
        alpha: the heatmap's weight, in [0, 1]: 0 returns the image, 1 the colored heatmap.
        colormap: an OpenCV colormap name, case-insensitive ("jet", "viridis", "inferno", "turbo", "hot",
            ...; see `colormap_names()`), or a `cv2.COLORMAP_*` value.

    Returns:
        uint8 (H, W, 3) RGB.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import overlay
    >>> image = np.zeros((32, 32, 3), np.float32)
    >>> heatmap = np.ones((4, 4), np.float32)   # resized to 32x32
    >>> overlay(image, heatmap, alpha=1.0)[0, 0].tolist()   # jet at 1.0: dark red
    [128, 0, 0]
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` (the heatmap's weight) must be a number in [0, 1], got {alpha!r}.")
    img = _rgb(image)
    try:
        hm = np.array(to_numpy(heatmap), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`heatmap` must be a numeric (h, w) array; could not convert it: {e}") from None
    if hm.ndim == 3 and hm.shape[-1] == 1:
        hm = hm[..., 0]
    if hm.ndim != 2 or 0 in hm.shape:
        raise ValueError(f"`heatmap` must be one 2-D map (h, w), got shape {hm.shape}. "
                         "For a batch, call overlay once per image.")
    if not np.all(np.isfinite(hm)):
        raise ValueError("`heatmap` contains NaN or infinite values; check the explainer's input.")
    code = _colormap(colormap)
    if hm.shape != img.shape[:2]:
        hm = cv2.resize(hm, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.cvtColor(cv2.applyColorMap(to_uint8(np.clip(hm, 0.0, 1.0)), code), cv2.COLOR_BGR2RGB)
    blended = float(alpha) * colored.astype(np.float32) + (1.0 - float(alpha)) * img.astype(np.float32)
    return np.round(blended).astype(np.uint8)


def image_grid(
    images: Any,
    cols: Optional[int] = None,
    margin: int = 5,
    background: int = 0,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Tiles same-sized images into one mosaic, row by row.

    Tiles are separated by `margin` pixels, with no margin around the outside, so the mosaic is
    `rows * H + (rows - 1) * margin` by `cols * W + (cols - 1) * margin`. Unused cells of the last row are
    left at `background`.

    Args:
        images: a sequence of images, or an (N, H, W, 3) / (N, H, W) array; each (H, W, 3) RGB or (H, W) /
            (H, W, 1) grayscale, float in [0, 1] or uint8, all of the same height and width.
        cols: tiles per row (default: `ceil(sqrt(N))`).
        margin: pixels between tiles (>= 0).
        background: grey level (0-255) of the margins and unused cells.
        labels: optional text per tile (`None` or "" for none), drawn in white on a dark box at the tile's
            top-left corner.

    Returns:
        uint8 (rows * H + (rows - 1) * margin, cols * W + (cols - 1) * margin, 3) RGB.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import image_grid
    >>> image_grid(np.zeros((5, 8, 8, 3), np.float32), cols=3, margin=2).shape
    (18, 28, 3)
    """
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise ValueError(f"`images` must be a sequence of images or an (N, H, W[, C]) array, got an array of shape "
                         f"{images.shape}." + (" For a single image, pass [image]." if images.ndim == 2 else ""))
    tiles = [_rgb(img, name=f"images[{i}]") for i, img in enumerate(images)]
    if not tiles:
        raise ValueError("`images` is empty; pass at least one image.")
    sizes = sorted({t.shape[:2] for t in tiles})
    if len(sizes) != 1:
        raise ValueError(f"All images must have the same size (height, width), got {sizes}; resize them first.")
    n = len(tiles)
    if labels is not None and (isinstance(labels, str) or len(labels) != n):
        raise ValueError(f"`labels` must be a list of {n} strings (one per image), got {labels!r}.")
    for arg, value, low, high in (("margin", margin, 0, None), ("background", background, 0, 255),
                                  ("cols", 1 if cols is None else cols, 1, None)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
                or (high is not None and value > high):
            bounds = f"in {low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"`{arg}` must be an integer {bounds}, got {value!r}.")
    cols = int(cols) if cols is not None else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    out = np.full((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3), int(background), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + margin), c * (w + margin)
        out[y : y + h, x : x + w] = tile
        if labels is not None and labels[i]:
            _label(out, str(labels[i]), x, y, w, h)
    return out


def _label(canvas: np.ndarray, text: str, x: int, y: int, width: int, height: int) -> None:
    """Draws `text` at a tile's top-left corner, on a black box, clipped to the tile."""
    scale = max(0.3, min(0.5, width / 200.0))  # legible on 32 px tiles, not huge on 512 px ones
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    tile = canvas[y : y + height, x : x + width]  # a view: drawing on it cannot spill into the next tile
    cv2.rectangle(tile, (0, 0), (tw + 3, th + base + 2), (0, 0, 0), thickness=-1)
    cv2.putText(tile, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


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


def read_image(path: PathLike, size: Optional[Union[int, Tuple[int, int]]] = None) -> np.ndarray:
    """Reads an image file as float32 RGB in [0, 1].

    Grayscale files come back with 3 equal channels; an alpha channel is dropped.

    Args:
        path: an image file OpenCV can decode (PNG, JPEG, BMP, TIFF, WebP, ...).
        size: optional `(height, width)` (or one int for a square) to resize to; area interpolation when
            shrinking, bilinear when enlarging.

    Returns:
        float32 (H, W, 3) RGB in [0, 1].

    Example:

    >>> import tempfile, numpy as np
    >>> from keras_cam.visualize import read_image, save_image
    >>> path = save_image(tempfile.mkdtemp() + "/red.png", np.array([[[1.0, 0.0, 0.0]]]))
    >>> read_image(path, size=(2, 3)).shape
    (2, 3, 3)
    """
    if size is not None:
        pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size) if isinstance(size, (tuple, list)) else ()
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in pair):
            raise ValueError(f"`size` must be (height, width) with positive integers, or one int, got {size!r}.")
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"Image file '{name}' does not exist (or is not a file).")
    try:
        # imdecode on the bytes, not imread: the same result, and non-ASCII paths work on every platform.
        data = np.fromfile(name, dtype=np.uint8)
    except OSError as e:
        raise ValueError(f"Cannot read '{name}': {e.strerror or e}.") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"Cannot decode '{name}' as an image (unsupported format or corrupt file).")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None:
        h, w = int(pair[0]), int(pair[1])
        shrink = h * w < img.shape[0] * img.shape[1]
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return img.astype(np.float32) / 255.0
