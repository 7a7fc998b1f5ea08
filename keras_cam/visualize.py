"""Pictures with OpenCV: heatmap overlays, mosaics, atomic image writes. RGB in, RGB out."""
from __future__ import annotations

import math
import os
import pathlib
import tempfile
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

from keras_cam._validation import to_numpy

__all__ = ["image_grid", "overlay", "read_image", "save_image", "to_uint8", "colormap_names"]

_COLORMAPS = {name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")}
_SUFFIXES = (".png", ".jpg", ".jpeg")


def colormap_names() -> list:
    """The OpenCV colormap names accepted by `overlay` ("jet", "viridis", "turbo", ...)."""
    return sorted(_COLORMAPS)


def to_uint8(image: Any) -> np.ndarray:
    """A float image in [0, 1] (or a uint8 image) as a new uint8 array, (H, W) or (H, W, C)."""
    arr = np.asarray(to_numpy(image))
    if arr.dtype == np.uint8:
        return arr.copy()
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"Expected a numeric image, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("The image contains NaN or infinite values.")
    if arr.size and (arr.max() > 1.0 + 1e-6 or arr.min() < -1e-6):
        raise ValueError(
            f"Float images must be in [0, 1] (got values in [{arr.min():.3g}, {arr.max():.3g}]); "
            "scale them (e.g. image / 255) or pass uint8."
        )
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def _rgb(image: Any) -> np.ndarray:
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an image (H, W), (H, W, 1) or (H, W, 3), got shape {img.shape}.")
    return img[..., :3]


def _colormap(colormap: Union[str, int]) -> int:
    if isinstance(colormap, (int, np.integer)):
        return int(colormap)
    key = str(colormap).lower()
    if key not in _COLORMAPS:
        raise ValueError(f"Unknown colormap '{colormap}'. Available: {', '.join(colormap_names())}.")
    return _COLORMAPS[key]


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, colormap: Union[str, int] = "jet") -> np.ndarray:
    """Blends a colored heatmap over an image (seed 000's OpenCV recipe, as a convex blend).

    Args:
        image: (H, W, 3) RGB or (H, W) grayscale; float in [0, 1] or uint8.
        heatmap: (h, w) values in [0, 1] (clipped), resized to the image with bilinear interpolation.
        alpha: the heatmap's weight in [0, 1]: `alpha * colored + (1 - alpha) * image`.
        colormap: an OpenCV colormap name ("jet", "viridis", "turbo", ...) or a `cv2.COLORMAP_*` value.

    Returns:
        uint8 (H, W, 3) RGB.

    Example:

    ```python
    picture = kc.overlay(images[0], heatmaps[0], alpha=0.4, colormap="jet")
    ```
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    img = _rgb(image)
    hm = np.asarray(to_numpy(heatmap), np.float32)
    if hm.ndim == 3 and hm.shape[-1] == 1:
        hm = hm[..., 0]
    if hm.ndim != 2:
        raise ValueError(f"`heatmap` must be 2-D (h, w), got shape {hm.shape}.")
    if not np.all(np.isfinite(hm)):
        raise ValueError("`heatmap` contains NaN or infinite values.")
    if hm.shape != img.shape[:2]:
        hm = cv2.resize(hm, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = np.round(np.clip(hm, 0.0, 1.0) * 255.0).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(heat, _colormap(colormap)), cv2.COLOR_BGR2RGB)
    blended = float(alpha) * colored.astype(np.float32) + (1.0 - float(alpha)) * img.astype(np.float32)
    return np.round(blended).astype(np.uint8)


def image_grid(
    images: Any,
    cols: Optional[int] = None,
    margin: int = 5,
    background: int = 0,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Tiles same-sized images into one mosaic (seed 004's grid: `margin` px between tiles, none outside).

    Args:
        images: a sequence or array of (H, W, 3) / (H, W) images, float in [0, 1] or uint8.
        cols: tiles per row (default: ceil(sqrt(N))).
        margin: pixels between tiles.
        background: grey level of the margins (0-255).
        labels: optional text per tile, drawn at its top-left corner.

    Returns:
        uint8 (rows * H + (rows - 1) * margin, cols * W + (cols - 1) * margin, 3).
    """
    tiles = [_rgb(img) for img in images]
    if not tiles:
        raise ValueError("`images` is empty; pass at least one image.")
    if len({t.shape for t in tiles}) != 1:
        raise ValueError(f"All images must have the same size, got {sorted({t.shape for t in tiles})}.")
    if labels is not None and len(labels) != len(tiles):
        raise ValueError(f"Got {len(labels)} labels for {len(tiles)} images.")
    if int(margin) < 0:
        raise ValueError(f"`margin` must be >= 0, got {margin}.")
    n = len(tiles)
    cols = int(cols) if cols is not None else math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"`cols` must be >= 1, got {cols}.")
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    out = np.full((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3), background, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + margin), c * (w + margin)
        out[y : y + h, x : x + w] = tile
        if labels is not None and labels[i]:
            _label(out, str(labels[i]), x, y, w)
    return out


def _label(canvas: np.ndarray, text: str, x: int, y: int, width: int) -> None:
    scale = max(0.3, min(0.5, width / 200.0))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(canvas, (x, y), (x + min(tw + 4, width), y + th + base + 3), (0, 0, 0), thickness=-1)
    cv2.putText(canvas, text, (x + 2, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def save_image(path: Union[str, os.PathLike], image: Any) -> pathlib.Path:
    """Writes an RGB (or grayscale) image as PNG or JPEG (by suffix), atomically; returns the path.

    The parent directory is created. The image is written to a temporary file beside the target and moved
    into place, so readers never see a half-written file and a failure leaves nothing behind.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"Cannot save '{path}': use a .png, .jpg or .jpeg file name.")
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        if img.shape[-1] != 3:
            raise ValueError(f"Expected an (H, W, 3) RGB or (H, W) image, got shape {img.shape}.")
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    except OSError as e:
        raise OSError(f"Cannot write '{path}': {e.strerror or e}") from None
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, img):
            raise OSError(f"Cannot write '{path}': OpenCV failed to encode the image.")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_image(path: Union[str, os.PathLike], size: Optional[Sequence[int]] = None) -> np.ndarray:
    """Reads an image file as float32 RGB in [0, 1], optionally resized to `size = (H, W)`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Image file '{path}' does not exist.")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"Cannot read '{path}' as an image (unsupported or corrupt file).")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None:
        h, w = int(size[0]), int(size[1])
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if h < img.shape[0] else cv2.INTER_LINEAR)
    return img.astype(np.float32) / 255.0
