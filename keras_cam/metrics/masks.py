"""Scores of heatmaps against the truth: masks (pointing games) and boxes (localization).

- `pointing_game`, `pointing_game_per_image`, `energy_pointing_game`: does the map point at the object?
  They need object masks, e.g. those of `keras_cam.datasets.make_shapes`. They are pure numpy (plus OpenCV
  for resizing), accept numpy arrays, lists or backend tensors, and never modify them; importing this module
  loads neither Keras nor a backend.
  They take 1-D (N, T), 2-D (N, H, W) and 3-D (N, D, H, W) maps.
- `boxes_from_heatmaps`, `box_iou`, `localization_accuracy`: does the map's box match the object's (the CAM
  paper's weakly supervised localization)? Also numpy and OpenCV only.
"""
from __future__ import annotations

from typing import Any, Tuple

import cv2
import numpy as np

from keras_cam._resample import resize_linear
from keras_cam._validation import check_boxes, check_int, to_numpy

__all__ = ["box_iou", "boxes_from_heatmaps", "energy_pointing_game", "localization_accuracy", "pointing_game",
           "pointing_game_per_image"]


_LAYOUTS = "(N, T), (N, H, W) or (N, D, H, W)"
_ONE = {1: "signal", 2: "image", 3: "volume"}  # what a map without its batch axis is, by rank


def _as_float(x: Any, name: str, layout: str) -> np.ndarray:
    """A new float32 array (never a view of what the caller passed)."""
    try:
        return np.array(to_numpy(x), dtype=np.float32, copy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be a numeric array of shape {layout}; could not convert it: {e}") \
            from None


def _rank_hint(maps: Tuple[int, ...], masks: Tuple[int, ...]) -> str:
    """What most likely went wrong when heatmaps and masks do not share an accepted layout."""
    low, high = sorted((maps, masks), key=len)
    if len(high) == len(low) + 1 and high[-1] == 1 and high[:-1] == low:
        return f" Drop the channel axis first: {'heatmaps' if len(maps) > len(masks) else 'masks'}[..., 0]."
    if len(low) in _ONE and len(high) in (len(low), len(low) + 1):
        return f" For one {_ONE[len(low)]}, add a batch axis: heatmap[None], mask[None]."
    return ""


def _check(heatmaps: Any, masks: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validates a batch of heatmaps and masks; returns new float32 heatmaps at the masks' size, bool masks.

    Both are (N, T) signals, (N, H, W) images or (N, D, H, W) volumes; rank-2 input is read as signals.
    """
    hm = _as_float(heatmaps, "heatmaps", _LAYOUTS)
    try:
        mk = np.array(to_numpy(masks), copy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`masks` must be a bool array of shape {_LAYOUTS}; could not convert it: {e}") \
            from None
    if hm.ndim != mk.ndim or hm.ndim not in (2, 3, 4):
        raise ValueError(f"`heatmaps` and `masks` must both be {_LAYOUTS}, with the same rank; got shapes "
                         f"{hm.shape} and {mk.shape}." + _rank_hint(hm.shape, mk.shape))
    if hm.shape[0] != mk.shape[0]:
        raise ValueError(f"Got {hm.shape[0]} heatmaps and {mk.shape[0]} masks; give one mask per heatmap.")
    if hm.shape[0] == 0 or 0 in hm.shape[1:] or 0 in mk.shape[1:]:
        raise ValueError(f"Empty input (heatmaps {hm.shape}, masks {mk.shape}); pass at least one non-empty "
                         "map.")
    axes = tuple(range(1, hm.ndim))
    if not np.all(np.isfinite(hm)):
        bad = np.flatnonzero(~np.isfinite(hm).all(axis=axes))
        raise ValueError(f"`heatmaps` {bad[:10].tolist()} contain NaN or infinite values; check the "
                         "explainer's input (e.g. NaN images) or replace them with np.nan_to_num.")
    if mk.dtype != bool:
        # A float mask is usually a heatmap passed by mistake, or a resized mask; 0/1 values are fine.
        if not np.issubdtype(mk.dtype, np.number) or not np.isin(mk, (0, 1)).all():
            raise ValueError(f"`masks` must be bool (or 0/1) arrays, got dtype {mk.dtype} with other values; "
                             "threshold them first, e.g. masks > 0.5.")
        mk = mk.astype(bool)
    empty = np.flatnonzero(~mk.any(axis=axes))
    if empty.size:
        more = f" (and {empty.size - 10} more)" if empty.size > 10 else ""
        # One image passed without its batch axis looks like a batch of signals, most of them empty.
        hint = (" Rank-2 input is read as (N, T) signals; for one image, pass (N, H, W): heatmap[None], "
                "mask[None].") if hm.ndim == 2 else ""
        raise ValueError(f"Masks {empty[:10].tolist()}{more} are empty: every image needs an object to point "
                         "at. Leave those images out of the score." + hint)
    if hm.shape[1:] != mk.shape[1:]:
        hm = resize_linear(hm, (hm.shape[0],) + tuple(mk.shape[1:]))
    return hm, mk


def pointing_game_per_image(heatmaps: Any, masks: Any, tolerance: int = 0) -> np.ndarray:
    """Tells, for each image (or signal, or volume), whether the heatmap's maximum falls on the object.

    Maps and masks are (N, T) signals, (N, H, W) images or (N, D, H, W) volumes; rank-2 input is read as
    signals. The maximum is the first one in row-major order (`np.argmax`) when several pixels tie, so a flat
    heatmap points at the top-left pixel. Heatmaps of another size than the masks are first resized to the
    masks' size by linear (1-D), bilinear (2-D, `cv2.resize`) or trilinear (3-D) interpolation, pixel centres
    aligned as in `cv2.resize`.

    Args:
        heatmaps: (N, h, w) maps, e.g. from an explainer; or (N, t) or (N, d, h, w).
        masks: (N, H, W) bool object masks, each with at least one True pixel; or (N, T) or (N, D, H, W).
        tolerance: pixels of slack: a hit also when a mask pixel lies within this Chebyshev distance of the
            maximum (0 = the maximum itself must be on the mask), along every axis.

    Returns:
        bool array (N,): True where the image is a hit.

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics import pointing_game_per_image
    >>> masks = np.zeros((2, 8, 8), bool); masks[:, 2:4, 2:4] = True
    >>> heatmaps = np.zeros((2, 8, 8)); heatmaps[0, 3, 3] = 1; heatmaps[1, 6, 6] = 1
    >>> pointing_game_per_image(heatmaps, masks).tolist()
    [True, False]
    >>> signal_masks = np.zeros((2, 16), bool); signal_masks[:, 4:8] = True
    >>> pointing_game_per_image(np.eye(16)[[5, 9]], signal_masks).tolist()  # peaks at samples 5 and 9
    [True, False]
    """
    tolerance = check_int("tolerance", tolerance, 0)  # pixels
    hm, mk = _check(heatmaps, masks)
    t = int(tolerance)
    hits = np.empty(len(hm), bool)
    for i, (h, m) in enumerate(zip(hm, mk)):
        peak = np.unravel_index(np.argmax(h), h.shape)
        hits[i] = m[tuple(slice(max(0, c - t), c + t + 1) for c in peak)].any()
    return hits


def pointing_game(heatmaps: Any, masks: Any, tolerance: int = 0) -> float:
    """Scores heatmaps by the fraction whose maximum falls on the object (Zhang et al., 2016).

    A random point scores about the mean mask area (`masks.mean()`), which is the chance level to compare
    with. Ties, resizing and `tolerance` are as in `pointing_game_per_image`.

    Args:
        heatmaps: (N, h, w) maps, e.g. from an explainer; or (N, t) or (N, d, h, w).
        masks: (N, H, W) bool object masks, each with at least one True pixel; or (N, T) or (N, D, H, W).
        tolerance: pixels of slack around the maximum (Chebyshev distance).

    Returns:
        The hit rate, a float in [0, 1].

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics import pointing_game
    >>> masks = np.zeros((2, 8, 8), bool); masks[:, 2:4, 2:4] = True
    >>> heatmaps = np.zeros((2, 8, 8)); heatmaps[0, 3, 3] = 1; heatmaps[1, 4, 4] = 1
    >>> pointing_game(heatmaps, masks), pointing_game(heatmaps, masks, tolerance=1)
    (0.5, 1.0)
    """
    return float(pointing_game_per_image(heatmaps, masks, tolerance).mean())


def energy_pointing_game(heatmaps: Any, masks: Any) -> float:
    """Scores heatmaps by the mean share of their mass that lies on the object (Wang et al., Score-CAM, 2020).

    Negative values are clipped to 0 first; an all-zero heatmap has no mass and scores 0 (it points nowhere).
    A uniform heatmap scores the mask's area fraction, the chance level. Layouts and resizing are as in
    `pointing_game_per_image`.

    Args:
        heatmaps: (N, h, w) maps; or (N, t) or (N, d, h, w).
        masks: (N, H, W) bool object masks, each with at least one True pixel; or (N, T) or (N, D, H, W).

    Returns:
        The mean over images of (mass inside the mask) / (total mass), a float in [0, 1].

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics import energy_pointing_game
    >>> masks = np.zeros((1, 4, 4), bool); masks[0, :2] = True
    >>> energy_pointing_game(np.ones((1, 4, 4)), masks)
    0.5
    """
    hm, mk = _check(heatmaps, masks)
    hm = np.clip(hm, 0.0, None).astype(np.float64)  # float64 sums: large maps stay exact enough
    axes = tuple(range(1, hm.ndim))
    total = hm.sum(axis=axes)
    inside = (hm * mk).sum(axis=axes)
    share = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return float(share.mean())


def boxes_from_heatmaps(heatmaps: Any, threshold: float = 0.2) -> np.ndarray:
    """Turns heatmaps into bounding boxes, as in the CAM paper's localization (Zhou et al., 2016).

    Each map is thresholded at `threshold` times its maximum (pixels at or above it are kept), and the box
    covers the largest 8-connected region of kept pixels (on a tie, the region whose first pixel comes first
    in row-major order). A map whose maximum is not positive (e.g. all zeros) points nowhere in particular:
    its box is the whole image. Boxes are in the maps' own pixels: pass maps at the images' resolution (as
    explainers return them) to compare with boxes drawn on the images.

    Args:
        heatmaps: (N, H, W) maps.
        threshold: fraction of each map's maximum, in [0, 1]; 0.2 as in the CAM paper.

    Returns:
        int64 array (N, 4) of half-open boxes `(x0, y0, x1, y1)`: the region lies in `map[y0:y1, x0:x1]`.

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics import boxes_from_heatmaps
    >>> heatmaps = np.zeros((1, 8, 10)); heatmaps[0, 2:5, 3:7] = 1.0; heatmaps[0, 7, 0] = 0.9
    >>> boxes_from_heatmaps(heatmaps).tolist()  # the 3x4 blob outweighs the single bright pixel
    [[3, 2, 7, 5]]
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not 0 <= threshold <= 1:
        raise ValueError(f"`threshold` must be a number in [0, 1] (a fraction of each map's maximum), "
                         f"got {threshold!r}.")
    hm = _as_float(heatmaps, "heatmaps", "(N, H, W)")
    if hm.ndim != 3 or hm.shape[0] == 0 or 0 in hm.shape[1:]:
        hint = " For one map, add a batch axis: heatmap[None]." if hm.ndim == 2 else ""
        raise ValueError(f"`heatmaps` must be a non-empty (N, H, W) array of 2-D maps; got shape {hm.shape}."
                         + hint)
    if not np.all(np.isfinite(hm)):
        bad = np.flatnonzero(~np.isfinite(hm).all(axis=(1, 2)))
        raise ValueError(f"`heatmaps` {bad[:10].tolist()} contain NaN or infinite values; replace them with "
                         "np.nan_to_num first.")
    h, w = hm.shape[1:]
    boxes = np.tile(np.array([0, 0, w, h], np.int64), (len(hm), 1))
    for i, m in enumerate(hm):
        peak = float(m.max())
        if peak <= 0:
            continue
        _, labels, stats, _ = cv2.connectedComponentsWithStats((m >= threshold * peak).astype(np.uint8),
                                                               connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        tied = np.flatnonzero(areas == areas.max()) + 1  # label 0 is the background
        # cv2 does not promise to number regions in row-major order: break ties by the first pixel.
        best = tied[0] if tied.size == 1 else min(tied, key=lambda k: int(np.argmax(labels.ravel() == k)))
        x, y, bw, bh = stats[best, :4]
        boxes[i] = (x, y, x + bw, y + bh)
    return boxes


def box_iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """Intersection over union of two lists of boxes, pair by pair.

    Boxes are half-open `(x0, y0, x1, y1)`: one covers the pixels `x0 <= x < x1`, `y0 <= y < y1`, and its
    area is `(x1 - x0) * (y1 - y0)`. Two boxes of zero area have no union: their IoU is 0.

    Args:
        boxes_a: (N, 4) boxes, e.g. from `boxes_from_heatmaps`.
        boxes_b: (N, 4) boxes, e.g. the true boxes of `make_shapes(..., return_boxes=True)`.

    Returns:
        float64 array (N,) of IoUs in [0, 1].

    Example:

    >>> from keras_cam.metrics import box_iou
    >>> box_iou([[0, 0, 4, 4], [0, 0, 2, 2]], [[2, 0, 6, 4], [5, 5, 6, 6]]).tolist()  # 8 / 24, disjoint
    [0.3333333333333333, 0.0]
    """
    a, b = check_boxes(boxes_a, "boxes_a"), check_boxes(boxes_b, "boxes_b")
    if len(a) != len(b):
        raise ValueError(f"Got {len(a)} boxes in `boxes_a` and {len(b)} in `boxes_b`; IoUs are taken pair by "
                         "pair, so give as many of each.")
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def localization_accuracy(boxes: Any, true_boxes: Any, iou: float = 0.5) -> float:
    """Scores predicted boxes by the share that overlap the true ones with IoU >= `iou`.

    With `boxes = boxes_from_heatmaps(heatmaps)` of maps for the true class, this is the CAM paper's
    localization accuracy (Zhou et al., 2016) without its classification part: 1 - the localization error.
    Its top-1 variant also counts a wrongly classified image as a miss:
    `np.mean((box_iou(boxes, true_boxes) >= 0.5) & (predicted == labels))`.

    Args:
        boxes: (N, 4) predicted boxes `(x0, y0, x1, y1)`, half-open.
        true_boxes: (N, 4) true boxes, e.g. from `make_shapes(..., return_boxes=True)`.
        iou: the smallest IoU that counts as a hit, in (0, 1]; 0.5 as in the CAM paper.

    Returns:
        The hit rate, a float in [0, 1].

    Example:

    >>> from keras_cam.metrics import localization_accuracy
    >>> localization_accuracy([[0, 0, 4, 4], [0, 0, 4, 4]], [[0, 0, 4, 5], [2, 2, 6, 6]])  # IoU 0.8 and 1/7
    0.5
    """
    if isinstance(iou, bool) or not isinstance(iou, (int, float, np.number)) or not 0 < iou <= 1:
        raise ValueError(f"`iou` must be a number in (0, 1], the smallest overlap that counts as a hit; "
                         f"got {iou!r}.")
    return float((box_iou(boxes, true_boxes) >= iou).mean())
