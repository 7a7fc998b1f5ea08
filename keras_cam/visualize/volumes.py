"""Volume pictures: slices of a 3-D volume, each overlaid with the same slice of its heatmap, in a mosaic."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Union

import cv2
import numpy as np

from keras_cam._validation import to_numpy
from keras_cam._resample import resize_linear
from keras_cam.visualize.grids import image_grid
from keras_cam.visualize.overlays import colormap_code, overlay
from keras_cam.visualize.signals import _check_alpha, _check_color, _check_int

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
) -> np.ndarray:
    """Slices of a volume along one axis, each overlaid with the same slice of its heatmap, in one mosaic.

    The heatmap is clipped to [0, 1] and, when its size differs from the volume's (a map at a lower
    resolution), resized trilinearly to the volume, with pixel centres aligned on each axis as `cv2.resize`
    does (INTER_LINEAR). Each slice is blended as `overlay` does: `alpha * colored + (1 - alpha) * slice`.
    A slice along axis 0 is (H, W), along axis 1 (D, W), along axis 2 (D, H): rows are the first remaining
    axis. Each tile is upscaled by `scale` (nearest neighbour: voxels stay square) before the mask outline
    and the label are drawn.

    Display range: uint8 volumes are shown as they are, and so are volumes whose values lie in [0, 1];
    any other range (CT numbers, standardized data) is min-max scaled over the whole volume, so slices
    stay comparable.

    Args:
        volume: (D, H, W) or (D, H, W, C) with C = 1 (grey) or 3 (RGB) channels last, e.g.
            `make_volumes(...)[0][i]`; not modified.
        heatmap: (d, h, w) (or (d, h, w, 1)) map with values in [0, 1], e.g. one map of a Conv3D
            explainer's output; any size, resized to the volume's.
        axis: 0, 1 or 2, the axis to slice along; labels name it z, y or x.
        slices: slice indices to show, in this order; `None` chooses `count` of them: the slice through
            the heatmap's maximum first (its first maximum, in `np.argmax` order), then evenly spaced slices
            in increasing order (the centres of `count` equal parts of the axis, the one nearest the maximum
            left out, as the maximum's slice stands in for it); every slice when `count` >= their number.
        count: how many slices `slices=None` chooses.
        alpha: the heatmap's weight, in [0, 1].
        colormap: an OpenCV colormap name or a `cv2.COLORMAP_*` value.
        cols: tiles per row (default: ceil(sqrt(tiles)), 3 for the default 9 tiles).
        labels: write each tile's slice, e.g. "z=12", at its top-left corner ("z=12 max" on the maximum's
            slice when `slices=None` chose them).
        mask: optional (D, H, W) bool ground truth of the volume's size, e.g. `make_volumes(...)[2][i]`:
            its outline on each slice (outer boundaries and holes) is drawn in `mask_color`.
        mask_color: (R, G, B) of the outline.
        scale: integer upscaling of each tile; `None` makes tiles at least 96 pixels on their longer side
            (x3 for a 32^3 volume).
        margin: pixels between tiles.

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
    depth, rows, columns = vol.shape[:3]
    hm = _spatial("heatmap", heatmap, "map").astype(np.float64)
    if not np.all(np.isfinite(hm)):
        raise ValueError("`heatmap` contains NaN or infinite values; check the explainer's input.")
    hm = np.clip(hm, 0.0, 1.0)
    if hm.shape != (depth, rows, columns):
        hm = resize_linear(hm, (depth, rows, columns))
    axis = _check_int("axis", axis, 0, 2)
    marks = None
    if mask is not None:
        marks = _spatial("mask", mask, "mask").astype(bool)
        if marks.shape != vol.shape[:3]:
            raise ValueError(f"`mask` must have the volume's size {vol.shape[:3]}, got {marks.shape}.")
    n = vol.shape[axis]
    if slices is None:
        peak = int(np.unravel_index(int(np.argmax(hm)), hm.shape)[axis])
        picked = _default_slices(n, peak, _check_int("count", count, 1))
    else:
        picked = _check_slices(slices, n, axis)
    alpha = _check_alpha(alpha)
    colormap_code(colormap)  # an unknown colormap is reported before any drawing
    if not isinstance(labels, (bool, np.bool_)):
        raise ValueError(f"`labels` must be True or False, got {labels!r}.")
    color = _check_color("mask_color", mask_color)
    shape = [s for k, s in enumerate((depth, rows, columns)) if k != axis]
    scale = max(1, math.ceil(_MIN_TILE / max(shape))) if scale is None else _check_int("scale", scale, 1)
    margin = _check_int("margin", margin, 0)

    tiles = []
    for i in picked:
        image = np.take(vol, i, axis=axis)  # (h, w, C) floats in [0, 1]
        tile = overlay(image, np.take(hm, i, axis=axis).astype(np.float32), alpha=alpha, colormap=colormap)
        if scale > 1:
            tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
        if marks is not None:
            outline = np.take(marks, i, axis=axis).astype(np.uint8)
            if scale > 1:
                outline = np.repeat(np.repeat(outline, scale, axis=0), scale, axis=1)
            # RETR_LIST: holes too (a torus's), drawn without anti-aliasing so the outline is exactly `color`.
            contours, _ = cv2.findContours(outline, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(tile, contours, -1, color, 1)
        tiles.append(tile)
    names = [f"{_AXIS_NAMES[axis]}={i}" for i in picked] if labels else None
    if names and slices is None:
        names[0] += " max"  # chosen slices start out of order: say why
    return image_grid(tiles, cols=cols, margin=margin, labels=names)
