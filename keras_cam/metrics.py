"""Scores for heatmaps.

- `pointing_game`, `pointing_game_per_image`, `energy_pointing_game`: does the map point at the object?
  They need object masks, e.g. those of `keras_cam.datasets.make_shapes`. They are pure numpy (plus OpenCV
  for resizing), accept numpy arrays, lists or backend tensors, and never modify them; importing this module
  loads neither Keras nor a backend.
- `deletion_auc`, `insertion_auc` and their curves: does the map rank first the pixels the model relies on?
  They run the model, so they live in `keras_cam.faithfulness` and are found here on first use.
- Every explainer compared with all of these: `kc.compare_methods` (in `keras_cam.comparison`).
"""
from __future__ import annotations

import importlib
from typing import Any, Tuple

import cv2
import numpy as np

from keras_cam._validation import to_numpy

# Scores that run the model: resolved from `keras_cam.faithfulness` on first use (PEP 562), so that scoring
# heatmaps against masks does not import Keras and a backend.
_MODEL_SCORES = ("deletion_auc", "deletion_curve", "insertion_auc", "insertion_curve")

__all__ = ["energy_pointing_game", "pointing_game", "pointing_game_per_image", *_MODEL_SCORES]


def __getattr__(name: str) -> Any:
    if name in _MODEL_SCORES:
        return getattr(importlib.import_module("keras_cam.faithfulness"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check(heatmaps: Any, masks: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validates a batch of heatmaps and masks; returns new float32 heatmaps at the masks' size and bool masks."""
    try:
        hm = np.array(to_numpy(heatmaps), dtype=np.float32, copy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`heatmaps` must be a numeric array of shape (N, H, W); could not convert it: {e}") from None
    try:
        mk = np.array(to_numpy(masks), copy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`masks` must be a bool array of shape (N, H, W); could not convert it: {e}") from None
    if hm.ndim != 3 or mk.ndim != 3:
        hint = " For one image, add a batch axis: heatmap[None], mask[None]." if hm.ndim == 2 or mk.ndim == 2 else ""
        raise ValueError(f"`heatmaps` and `masks` must both be (N, H, W); got shapes {hm.shape} and {mk.shape}."
                         + hint)
    if hm.shape[0] != mk.shape[0]:
        raise ValueError(f"Got {hm.shape[0]} heatmaps and {mk.shape[0]} masks; give one mask per heatmap.")
    if hm.shape[0] == 0 or 0 in hm.shape[1:] or 0 in mk.shape[1:]:
        raise ValueError(f"Empty input (heatmaps {hm.shape}, masks {mk.shape}); pass at least one non-empty map.")
    if not np.all(np.isfinite(hm)):
        bad = np.flatnonzero(~np.isfinite(hm).all(axis=(1, 2)))
        raise ValueError(f"`heatmaps` {bad[:10].tolist()} contain NaN or infinite values; check the explainer's "
                         "input (e.g. NaN images) or replace them with np.nan_to_num.")
    if mk.dtype != bool:
        # A float mask is usually a heatmap passed by mistake, or a resized mask; 0/1 values are fine.
        if not np.issubdtype(mk.dtype, np.number) or not np.isin(mk, (0, 1)).all():
            raise ValueError(f"`masks` must be bool (or 0/1) arrays, got dtype {mk.dtype} with other values; "
                             "threshold them first, e.g. masks > 0.5.")
        mk = mk.astype(bool)
    empty = np.flatnonzero(~mk.any(axis=(1, 2)))
    if empty.size:
        more = f" (and {empty.size - 10} more)" if empty.size > 10 else ""
        raise ValueError(f"Masks {empty[:10].tolist()}{more} are empty: every image needs an object to point at. "
                         "Leave those images out of the score.")
    if hm.shape[1:] != mk.shape[1:]:  # bilinear, like the explainers' own upsampling
        hm = np.stack([cv2.resize(h, (mk.shape[2], mk.shape[1]), interpolation=cv2.INTER_LINEAR) for h in hm])
    return hm, mk


def pointing_game_per_image(heatmaps: Any, masks: Any, tolerance: int = 0) -> np.ndarray:
    """Tells, for each image, whether the heatmap's maximum falls on the object.

    The maximum is the first one in row-major order (`np.argmax`) when several pixels tie, so a flat heatmap
    points at the top-left pixel. Heatmaps of another size than the masks are first resized to the masks'
    size with bilinear interpolation.

    Args:
        heatmaps: (N, h, w) maps, e.g. from an explainer.
        masks: (N, H, W) bool object masks, each with at least one True pixel.
        tolerance: pixels of slack: a hit also when a mask pixel lies within this Chebyshev distance of the
            maximum (0 = the maximum itself must be on the mask).

    Returns:
        bool array (N,): True where the image is a hit.

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics import pointing_game_per_image
    >>> masks = np.zeros((2, 8, 8), bool); masks[:, 2:4, 2:4] = True
    >>> heatmaps = np.zeros((2, 8, 8)); heatmaps[0, 3, 3] = 1; heatmaps[1, 6, 6] = 1
    >>> pointing_game_per_image(heatmaps, masks).tolist()
    [True, False]
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ValueError(f"`tolerance` must be an integer >= 0 (pixels), got {tolerance!r}.")
    hm, mk = _check(heatmaps, masks)
    t = int(tolerance)
    hits = np.empty(len(hm), bool)
    for i, (h, m) in enumerate(zip(hm, mk)):
        y, x = np.unravel_index(np.argmax(h), h.shape)
        hits[i] = m[max(0, y - t) : y + t + 1, max(0, x - t) : x + t + 1].any()
    return hits


def pointing_game(heatmaps: Any, masks: Any, tolerance: int = 0) -> float:
    """Scores heatmaps by the fraction whose maximum falls on the object (Zhang et al., 2016).

    A random point scores about the mean mask area (`masks.mean()`), which is the chance level to compare
    with. Ties, resizing and `tolerance` are as in `pointing_game_per_image`.

    Args:
        heatmaps: (N, h, w) maps, e.g. from an explainer.
        masks: (N, H, W) bool object masks, each with at least one True pixel.
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
    A uniform heatmap scores the mask's area fraction, the chance level. Heatmaps of another size than the
    masks are resized to the masks' size with bilinear interpolation.

    Args:
        heatmaps: (N, h, w) maps.
        masks: (N, H, W) bool object masks, each with at least one True pixel.

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
    total = hm.sum(axis=(1, 2))
    inside = (hm * mk).sum(axis=(1, 2))
    share = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return float(share.mean())
