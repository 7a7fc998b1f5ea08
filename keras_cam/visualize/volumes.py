"""Volume pictures: slices of a 3-D volume, each overlaid with the same slice of its heatmap, in a mosaic."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Union

import cv2
import numpy as np

from keras_cam._validation import check_int, to_numpy
from keras_cam._resample import resize_linear
from keras_cam.visualize.grids import image_grid
from keras_cam.visualize.images import as_rgb
from keras_cam.visualize.overlays import colormap_code, overlay
from keras_cam.visualize.drawing import check_alpha, check_color, check_signed

__all__ = ["volume_montage"]

_AXIS_NAMES = "zyx"  # (D, H, W): depth is z, height y, width x
_MIN_TILE = 96  # scale=None: tiles at least this many pixels on their longer side, so labels stay legible


def _as_volume(volume: Any) -> np.ndarray:
    """A float32 (D, H, W, C) copy in [0, 1] for display: uint8 as is (/ 255), [0, 1] as is, any other range
    min-max scaled over the whole volume (all channels together, so slices stay comparable)."""
    try:
        arr = np.array(to_numpy(volume))
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"`volume` must be a numeric (D, H, W) or (D, H, W, C) array; could not convert it: "
                         f"{e}") from None
    if arr.dtype != bool and (not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr)):
        raise ValueError(f"`volume` must be numeric (float, integer or bool), got dtype {arr.dtype}.")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or 0 in arr.shape:
        hint = " For a batch, pass one volume, e.g. volumes[0]." if arr.ndim == 5 else ""
        raise ValueError(f"`volume` must be one volume, (D, H, W) or (D, H, W, C) with C = 1 or 3 channels "
                         f"last, got shape {arr.shape}.{hint}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("`volume` contains NaN or infinite values; clean it first (e.g. np.nan_to_num).")
    low, high = float(arr.min()), float(arr.max())
    if low >= 0.0 and high <= 1.0:
        return arr
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


def _spatial(name: str, value: Any, what: str) -> np.ndarray:
    """A (D, H, W) array from `value`, a trailing axis of 1 dropped, or one clear ValueError."""
    try:
        arr = np.array(to_numpy(value))
    except Exception as e:
        raise ValueError(f"`{name}` must be a (D, H, W) {what} array; could not convert it: {e}") from None
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or 0 in arr.shape:
        hint = f" For a batch, pass one, e.g. {name}s[0]." if arr.ndim == 4 else ""
        raise ValueError(f"`{name}` must be one 3-D {what} (D, H, W), got shape {arr.shape}.{hint}")
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"`{name}` must be a numeric {what}, got dtype {arr.dtype}.")
    return arr


def _default_slices(n: int, peak: int, count: int) -> List[int]:
    """`peak` first, then `count - 1` evenly spaced slices of `n` in increasing order, without duplicates.

    The `count` evenly spaced slices sit at the centres of `count` equal parts of the axis; the one nearest
    the peak (the first of two as near) gives its place to the peak, so the spacing stays even.
    """
    if count >= n:
        return [peak] + [i for i in range(n) if i != peak]
    even = [int((k + 0.5) * n / count) for k in range(count)]  # distinct: the step n / count is > 1
    nearest = min(even, key=lambda i: abs(i - peak))
    even.remove(nearest)
    return [peak] + even


def _check_slices(slices: Any, n: int, axis: int) -> List[int]:
    try:
        picked = [s for s in slices]
    except TypeError:
        picked = None
    if not picked or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < n
                         for s in picked):
        raise ValueError(f"`slices` must be a non-empty list of slice indices in 0..{n - 1} (the volume has "
                         f"{n} slices along axis {axis}), got {slices!r}; or None to choose them.")
    return [int(s) for s in picked]


def _volume_heatmap(heatmap: Any, shape: Any, signed: bool) -> np.ndarray:
    """The heatmap at the volume's size: clipped to [0, 1], or with `signed` divided by its largest |value|
    over the whole volume (slices stay comparable), so in [-1, 1]."""
    hm = _spatial("heatmap", heatmap, "map").astype(np.float64)
    if not np.all(np.isfinite(hm)):
        raise ValueError("`heatmap` contains NaN or infinite values; check the explainer's input.")
    if not signed:
        hm = np.clip(hm, 0.0, 1.0)
    if hm.shape != tuple(shape):
        hm = resize_linear(hm, tuple(shape))
    if signed:
        scale = float(np.abs(hm).max())
        hm = hm / scale if scale > 0 else hm
    return hm


def _signed_overlay(image: np.ndarray, values: np.ndarray, alpha: float,
                    colormap: Union[str, int]) -> np.ndarray:
    """`kc.overlay(..., signed=True)` for values already in [-1, 1], not rescaled per slice: 0 the colormap's
    middle, each pixel's weight `alpha * |value|` (where the map is 0 the slice shows through)."""
    img = as_rgb(image).astype(np.float32)
    shown = np.round((np.clip(values, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(shown, colormap_code(colormap)), cv2.COLOR_BGR2RGB)
    weight = alpha * np.abs(values).astype(np.float32)[..., None]
    return np.round(weight * colored.astype(np.float32) + (1.0 - weight) * img).astype(np.uint8)


def _check_mask(mask: Any, shape: Any) -> np.ndarray:
    marks = _spatial("mask", mask, "mask").astype(bool)
    if marks.shape != tuple(shape):
        raise ValueError(f"`mask` must have the volume's size {tuple(shape)}, got {marks.shape}.")
    return marks


def _pick_slices(hm: np.ndarray, axis: int, slices: Any, count: Any) -> List[int]:
    """The slices given, checked, or with `slices=None` the heatmap's maximum's and `count - 1` more."""
    if slices is not None:
        return _check_slices(slices, hm.shape[axis], axis)
    peak = int(np.unravel_index(int(np.argmax(hm)), hm.shape)[axis])
    return _default_slices(hm.shape[axis], peak, check_int("count", count, 1))


def _tile(image: np.ndarray, values: np.ndarray, outline: Optional[np.ndarray], scale: int, alpha: float,
          colormap: Union[str, int], signed: bool, color: Any) -> np.ndarray:
    """One slice, overlaid, upscaled by `scale` (nearest: voxels stay square), with the mask's outline."""
    if signed:
        tile = _signed_overlay(image, values, alpha, colormap)
    else:
        tile = overlay(image, values.astype(np.float32), alpha=alpha, colormap=colormap)
    if scale > 1:
        tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
    if outline is not None:
        outline = outline.astype(np.uint8)
        if scale > 1:
            outline = np.repeat(np.repeat(outline, scale, axis=0), scale, axis=1)
        # RETR_LIST: holes too (a torus's), drawn without anti-aliasing so the outline is exactly `color`.
        contours, _ = cv2.findContours(outline, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, color, 1)
    return tile


def volume_montage(
    volume: Any,
    heatmap: Any,
    axis: int = 0,
    slices: Optional[Sequence[int]] = None,
    count: int = 9,
    alpha: float = 0.4,
    colormap: Union[str, int] = "jet",
    cols: Optional[int] = None,
    labels: bool = True,
    mask: Any = None,
    mask_color: Sequence[int] = (255, 255, 255),
    scale: Optional[int] = None,
    margin: int = 2,
    signed: bool = False,
) -> np.ndarray:
    """Slices of a volume along one axis, each overlaid with the same slice of its heatmap, in one mosaic.

    The heatmap is clipped to [0, 1], resized trilinearly to the volume when sizes differ (pixel centres
    aligned, as `cv2.resize` does), and each slice blended as `overlay` does. With `signed=True` (e.g. LRP
    relevance, `colormap="bwr"`) it is divided by its largest |value| over the whole volume (not per slice)
    and blended as `kc.overlay(..., signed=True)` does: 0 the colormap's middle at weight 0 (the slice shows
    through), positive values red and negative blue at weight `alpha * |value|`. A slice along axis 0 is
    (H, W), along 1 (D, W), along 2 (D, H). uint8 volumes and volumes in [0, 1] are shown as they are; any
    other range is min-max scaled over the whole volume.

    Args:
        volume: (D, H, W) or (D, H, W, C) with C = 1 (grey) or 3 (RGB) channels last, e.g.
            `make_volumes(...)[0][i]`; not modified.
        heatmap: (d, h, w) (or (d, h, w, 1)) map with values in [0, 1] (any sign with `signed`), e.g. one map
            of a Conv3D explainer's output; any size, resized to the volume's.
        axis: 0, 1 or 2, the axis to slice along; labels name it z, y or x.
        slices: slice indices to show, in this order; `None` chooses `count` of them: the slice through the
            heatmap's first maximum, then evenly spaced slices in increasing order (the centres of `count`
            equal parts of the axis, the one nearest the maximum left out); all when `count` >= their number.
        count: how many slices `slices=None` chooses.
        alpha: the heatmap's weight, in [0, 1].
        colormap: an OpenCV colormap name ("bwr" for signed maps) or a `cv2.COLORMAP_*` value.
        cols: tiles per row (default: ceil(sqrt(tiles)), 3 for the default 9 tiles).
        labels: write each tile's slice, e.g. "z=12", at its top-left corner ("z=12 max" on the maximum's
            slice when `slices=None` chose them).
        mask: optional (D, H, W) bool ground truth of the volume's size, e.g. `make_volumes(...)[2][i]`:
            its outline on each slice (outer boundaries and holes) is drawn in `mask_color`.
        mask_color: (R, G, B) of the outline.
        scale: integer upscaling of each tile; `None` makes tiles at least 96 pixels on their longer side.
        margin: pixels between tiles.
        signed: the heatmap is signed: scaled by its largest |value|, 0 in the colormap's middle.

    Returns:
        uint8 (rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3) RGB, (h, w) being a
        slice's size times `scale`.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import volume_montage
    >>> volume = np.zeros((16, 16, 16), np.float32)
    >>> heatmap = np.zeros((4, 4, 4), np.float32)
    >>> heatmap[3, 1, 2] = 1.0   # the maximum lies in the last quarter of the depth, resized to 16
    >>> picture = volume_montage(volume, heatmap, count=4, scale=4, margin=2)
    >>> picture.shape   # 4 tiles of 64x64, 2 per row: z=14 (the maximum's slice), z=2, z=6, z=10
    (130, 130, 3)
    """
    vol = _as_volume(volume)
    signed = check_signed(signed)
    hm = _volume_heatmap(heatmap, vol.shape[:3], signed)
    axis = check_int("axis", axis, 0, 2)
    marks = None if mask is None else _check_mask(mask, vol.shape[:3])
    picked = _pick_slices(hm, axis, slices, count)
    alpha = check_alpha(alpha)
    colormap_code(colormap)  # an unknown colormap is reported before any drawing
    if not isinstance(labels, (bool, np.bool_)):
        raise ValueError(f"`labels` must be True or False, got {labels!r}.")
    color = check_color("mask_color", mask_color)
    shape = [s for k, s in enumerate(vol.shape[:3]) if k != axis]
    scale = max(1, math.ceil(_MIN_TILE / max(shape))) if scale is None else check_int("scale", scale, 1)
    margin = check_int("margin", margin, 0)

    tiles = [_tile(np.take(vol, i, axis=axis), np.take(hm, i, axis=axis),
                   None if marks is None else np.take(marks, i, axis=axis), scale, alpha, colormap, signed,
                   color) for i in picked]
    names = [f"{_AXIS_NAMES[axis]}={i}" for i in picked] if labels else None
    if names and slices is None:
        names[0] += " max"  # chosen slices start out of order: say why
    return image_grid(tiles, cols=cols, margin=margin, labels=names)
