"""Heatmap overlays: a map coloured with an OpenCV colormap and blended over its image."""
from __future__ import annotations

from typing import Any, List, Tuple, Union

import cv2
import numpy as np

from keras_cam._validation import close_matches, to_numpy
from keras_cam.visualize.boxes import draw_boxes
from keras_cam.visualize.drawing import check_alpha
from keras_cam.visualize.images import as_rgb, to_uint8

__all__ = ["colormap_code", "colormap_names", "overlay"]

_COLORMAPS = {name[len("COLORMAP_"):].lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")}


def _bwr() -> np.ndarray:
    """The diverging blue-white-red colormap (matplotlib's "bwr") as an OpenCV lookup table (256, 1, 3) BGR:
    0 blue, 0.5 white, 1 red, for signed maps such as LRP relevance."""
    t = np.linspace(0.0, 1.0, 256)
    red = np.clip(2 * t, 0, 1)
    blue = np.clip(2 - 2 * t, 0, 1)
    green = 1 - np.abs(2 * t - 1)
    return np.round(np.stack([blue, green, red], -1) * 255).astype(np.uint8)[:, None, :]


#: Colormaps of our own, given to `cv2.applyColorMap` as lookup tables.
_TABLES = {"bwr": _bwr()}


def colormap_names() -> List[str]:
    """Lists the OpenCV colormap names that `overlay` accepts.

    Returns:
        Sorted lower-case names: "autumn", "bone", ..., "jet", ..., "turbo", "viridis", ...

    Example:

    >>> from keras_cam.visualize import colormap_names
    >>> "jet" in colormap_names() and "viridis" in colormap_names()
    True
    """
    return sorted(set(_COLORMAPS) | set(_TABLES))


def colormap_code(colormap: Union[str, int]) -> Union[int, np.ndarray]:
    """The `cv2.COLORMAP_*` value for a name (case-insensitive) or a value; for "bwr" a lookup table that
    `cv2.applyColorMap` takes in its place."""
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool):
        if int(colormap) not in _COLORMAPS.values():
            raise ValueError(f"Unknown OpenCV colormap value {colormap}; use a cv2.COLORMAP_* constant or one of: "
                             f"{', '.join(colormap_names())}.")
        return int(colormap)
    key = str(colormap).lower()
    key = key[len("colormap_"):] if key.startswith("colormap_") else key
    if key in _TABLES:
        return _TABLES[key]
    if key not in _COLORMAPS:
        near = close_matches(key, _COLORMAPS)
        hint = f" Did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
        raise ValueError(f"Unknown colormap {colormap!r}.{hint} Available: {', '.join(colormap_names())}.")
    return _COLORMAPS[key]


def _shape(x: Any) -> Tuple[int, ...]:
    """The shape of an array-like, or () when it is not one (the checks that follow report that)."""
    try:
        return np.shape(to_numpy(x))
    except Exception:  # ragged lists and the like
        return ()


def _refuse_signals_and_volumes(image: Any, heatmap: Any) -> None:
    """One clear error pointing at `overlay_signal` or `volume_montage` when 1-D or 3-D data reach overlay.

    A 1-D heatmap (or a 1-D image) is a signal's. A rank-4 image, or a rank-3 image whose last axis is no
    channel axis (1, 3 or 4) given with a 3-D heatmap, is a volume (or a batch of images, which has the
    same shapes). Everything else goes on to the 2-D checks and their messages.
    """
    img, hm = _shape(image), _shape(heatmap)
    if len(img) == 1 or len(hm) == 1:
        raise ValueError(f"overlay blends a 2-D heatmap over an image; got image shape {img} and heatmap "
                         f"shape {hm}, a 1-D signal's. For a signal (T,) or (T, C) and its (T,) heatmap, use "
                         "kc.overlay_signal(signal, heatmap).")
    if len(img) >= 4 or (len(img) == 3 and img[-1] not in (1, 3, 4) and len(hm) == 3):
        raise ValueError(f"overlay blends a 2-D heatmap over one image; got image shape {img} and heatmap "
                         f"shape {hm}. For a volume (D, H, W) or (D, H, W, C) and its (D, H, W) heatmap, use "
                         "kc.volume_montage(volume, heatmap); for a batch of images, call overlay once per "
                         "image.")


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, colormap: Union[str, int] = "jet",
            signed: bool = False, boxes: Any = None, labels: Any = None, scores: Any = None) -> np.ndarray:
    """Blends a colored heatmap over an image.

    The heatmap is clipped to [0, 1], resized to the image with bilinear interpolation when sizes differ,
    colored with an OpenCV colormap and mixed in as a convex blend,
    `alpha * colored + (1 - alpha) * image`, so nothing saturates and `alpha` is the heatmap's weight.
    For signals use `overlay_signal`, for volumes `volume_montage`; given 1-D or 3-D data, overlay raises
    a ValueError that says so.

    Args:
        image: (H, W, 3) RGB or (H, W) / (H, W, 1) grayscale; float in [0, 1] or uint8.
        heatmap: (h, w) map with values in [0, 1], e.g. one map of an explainer's output.
        alpha: the heatmap's weight, in [0, 1]: 0 returns the image, 1 the colored heatmap.
        colormap: an OpenCV colormap name, case-insensitive ("jet", "viridis", "inferno", "turbo", "hot",
            ...; see `colormap_names()`), a `cv2.COLORMAP_*` value, or "bwr" (blue-white-red, for signed maps).
        signed: the heatmap is signed (e.g. LRP relevance): it is divided by its largest |value|, so 0 is the
            colormap's middle (white with "bwr"), positive values red and negative blue, and each pixel's
            weight is `alpha * |value|`, so where the relevance is 0 the image shows through.
        boxes: boxes to draw over the blend, (K, 4) x0, y0, x1, y1 in the image's pixels (e.g. those of
            `kc.targets.detection`), each captioned with its entry of `labels` (ints or names) and `scores`.

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
    alpha = check_alpha(alpha)
    _refuse_signals_and_volumes(image, heatmap)
    img = as_rgb(image)
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
    code = colormap_code(colormap)
    if hm.shape != img.shape[:2]:
        hm = cv2.resize(hm, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    weight = float(alpha)
    if signed:  # [-1, 1] by the largest |value|, shown as [0, 1] with 0 in the middle
        scale = float(np.abs(hm).max())
        hm = hm / scale if scale > 0 else hm
        weight = float(alpha) * np.abs(hm)[..., None]
        hm = (hm + 1.0) / 2.0
    colored = cv2.cvtColor(cv2.applyColorMap(to_uint8(np.clip(hm, 0.0, 1.0)), code), cv2.COLOR_BGR2RGB)
    blended = weight * colored.astype(np.float32) + (1.0 - weight) * img.astype(np.float32)
    blended = np.round(blended).astype(np.uint8)
    return blended if boxes is None else draw_boxes(blended, boxes, labels, scores)
