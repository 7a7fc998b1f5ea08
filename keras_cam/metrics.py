"""Scores for heatmaps: localization against ground-truth masks, and faithfulness to the model.

- `pointing_game`, `energy_pointing_game`: does the map point at the object (masks needed)?
- `deletion_auc`, `insertion_auc` (and their curves): does the map rank the pixels the model relies on first?
"""
from __future__ import annotations

from typing import Any, Tuple

import cv2
import numpy as np

from keras_cam._validation import to_numpy
from keras_cam.faithfulness import deletion_auc, deletion_curve, insertion_auc, insertion_curve

__all__ = ["deletion_auc", "deletion_curve", "energy_pointing_game", "insertion_auc", "insertion_curve",
           "pointing_game", "pointing_game_per_image"]


def _check(heatmaps: Any, masks: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validated float32 heatmaps at the masks' size and bool masks, both (N, H, W), as new arrays."""
    hm = np.array(to_numpy(heatmaps), dtype=np.float32, copy=True)
    mk = np.array(to_numpy(masks), copy=True)
    if hm.ndim != 3 or mk.ndim != 3:
        raise ValueError(f"`heatmaps` and `masks` must both be (N, H, W); got {hm.shape} and {mk.shape}.")
    if hm.shape[0] != mk.shape[0] or hm.shape[0] == 0:
        raise ValueError(f"Got {hm.shape[0]} heatmaps and {mk.shape[0]} masks; give one mask per heatmap.")
    if not np.all(np.isfinite(hm)):
        raise ValueError("`heatmaps` contain NaN or infinite values.")
    mk = mk.astype(bool)
    empty = np.nonzero(~mk.any(axis=(1, 2)))[0]
    if empty.size:
        raise ValueError(f"Masks {empty[:10].tolist()} are empty; every image needs an object to point at.")
    if hm.shape[1:] != mk.shape[1:]:  # bilinear, like the explainers' own upsampling
        hm = np.stack([cv2.resize(h, (mk.shape[2], mk.shape[1]), interpolation=cv2.INTER_LINEAR) for h in hm])
    return hm, mk


def pointing_game_per_image(heatmaps: Any, masks: Any, tolerance: int = 0) -> np.ndarray:
    """Whether each heatmap's maximum falls inside its mask: bool (N,).

    Args:
        heatmaps: (N, h, w) maps; resized to the masks' size (bilinear) when sizes differ.
        masks: (N, H, W) bool object masks.
        tolerance: a hit also when a mask pixel lies within this many pixels (Chebyshev) of the maximum.

    The maximum is the first one in row-major order (`argmax`) when several pixels tie.
    """
    hm, mk = _check(heatmaps, masks)
    if int(tolerance) < 0:
        raise ValueError(f"`tolerance` must be >= 0, got {tolerance}.")
    t = int(tolerance)
    hits = np.empty(len(hm), bool)
    for i, (h, m) in enumerate(zip(hm, mk)):
        y, x = np.unravel_index(np.argmax(h), h.shape)
        hits[i] = m[max(0, y - t) : y + t + 1, max(0, x - t) : x + t + 1].any()
    return hits


def pointing_game(heatmaps: Any, masks: Any, tolerance: int = 0) -> float:
    """Fraction of heatmaps whose maximum falls inside the object mask (Zhang et al. 2016).

    Example:

    ```python
    score = kc.metrics.pointing_game(kc.GradCAM(model)(images), masks)   # 1.0 = always on the object
    ```
    """
    return float(pointing_game_per_image(heatmaps, masks, tolerance).mean())


def energy_pointing_game(heatmaps: Any, masks: Any) -> float:
    """Mean share of heatmap mass inside the mask (Score-CAM's energy-based pointing game).

    Negative values are clipped to 0 first; an all-zero heatmap scores 0.
    """
    hm, mk = _check(heatmaps, masks)
    hm = np.clip(hm, 0.0, None)
    total = hm.sum(axis=(1, 2))
    inside = (hm * mk).sum(axis=(1, 2))
    return float(np.mean(np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)))
