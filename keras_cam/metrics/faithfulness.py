"""Faithfulness of heatmaps to the model: deletion and insertion curves (Petsiuk et al. 2018, RISE).

Deletion removes the pixels a heatmap ranks highest first and watches the class score fall (a faithful map
makes it fall fast: low area under the curve). Insertion starts from a baseline and puts the top pixels back
(a faithful map makes the score rise fast: high area). All perturbed images of a batch go through the model
in chunks of `batch_size`, through the model's forward pass compiled once per model and chunk shape (and kept
while the model lives, so repeated calls do not compile again).
"""
from __future__ import annotations

from typing import Any, Tuple, Union

import cv2
import keras
import numpy as np

from keras_cam._batching import check_batch_size
from keras_cam.metrics.scoring import (ClassScorer, channels_last_inputs, heatmaps_at, model_layout,
                                       predict_outputs)

Baseline = Union[float, str, np.ndarray]


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of channels_last examples over their spatial axes, one axis after the other (the same
    kernel and border as `cv2.GaussianBlur`, for 1, 2 or 3 spatial axes)."""
    ksize = int(round(sigma * 8 + 1)) | 1  # cv2.GaussianBlur's size for float images
    kernel = cv2.getGaussianKernel(ksize, sigma).astype(np.float32)
    out = np.array(images, np.float32)
    for axis in range(1, out.ndim - 1):
        moved = np.moveaxis(out, axis, 0)
        flat = np.ascontiguousarray(moved.reshape(moved.shape[0], -1))
        blurred = cv2.sepFilter2D(flat, -1, np.ones((1, 1), np.float32), kernel,
                                  borderType=cv2.BORDER_REFLECT_101)
        out = np.moveaxis(blurred.reshape(moved.shape), 0, axis)
    return out


def _baseline_images(images: np.ndarray, baseline: Baseline) -> np.ndarray:
    """What removed positions become, for channels_last examples (N, *spatial, C)."""
    spatial = tuple(range(1, images.ndim - 1))
    if isinstance(baseline, str):
        if baseline == "blur":
            return _blur(images, max(images.shape[1:-1]) / 10.0)
        if baseline == "mean":
            return np.broadcast_to(images.mean(axis=spatial, keepdims=True), images.shape).astype(np.float32)
        raise ValueError(f"Unknown baseline '{baseline}'; use a number, 'blur', 'mean' or an array of images.")
    if np.ndim(baseline) == 0:
        return np.full_like(images, float(baseline))
    base = np.asarray(baseline, np.float32)
    try:
        return np.broadcast_to(base, images.shape).astype(np.float32)
    except ValueError:
        raise ValueError(f"`baseline` of shape {base.shape} does not broadcast to the images {images.shape}.") from None


def _curves(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    targets: Any,
    steps: int,
    baseline: Baseline,
    batch_size: int,
    insert: bool,
) -> Tuple[np.ndarray, np.ndarray]:
    x, first = channels_last_inputs(model, images)  # perturbed channels_last; the model gets its own layout
    n, spatial = x.shape[0], x.shape[1:-1]
    positions = int(np.prod(spatial))
    hm = heatmaps_at(heatmaps, n, spatial)
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    base = _baseline_images(x, baseline)
    check_batch_size(batch_size)
    fractions = np.linspace(0.0, 1.0, int(steps) + 1)
    counts = np.round(fractions * positions).astype(int)
    outputs = []
    for i in range(n):
        order = np.argsort(-hm[i].ravel(), kind="stable")
        rank = np.empty(positions, np.int64)
        rank[order] = np.arange(positions)
        # Step k changes the k-th share of top-ranked positions: (steps+1, *spatial, 1) selection masks.
        changed = (rank[None, :] < counts[:, None]).reshape((-1,) + tuple(spatial) + (1,))
        if insert:
            batch = np.where(changed, x[i], base[i])
        else:
            batch = np.where(changed, base[i], x[i])
        outputs.append(predict_outputs(model, batch.astype(np.float32), first, batch_size))
    outputs = np.stack(outputs)  # (N, steps + 1, K)
    # The intact images are the curves' first (deletion) or last (insertion) step: no pass of their own.
    # Classes are read as the explainers read them: on a sigmoid unit, class 0 scores 1 - p (not p).
    scorer = ClassScorer(model, model_layout(x[:1], first), outputs[:, -1 if insert else 0], targets)
    # Scores read once for every image (eager backend ops cost a compilation per shape on JAX).
    scores, _ = scorer(outputs.reshape(-1, outputs.shape[-1]), np.repeat(scorer.targets, len(fractions)))
    curves = scores.reshape(n, len(fractions))
    return fractions, curves


def deletion_curve(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, steps: int = 20,
                   baseline: Baseline = 0.0, batch_size: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """Class score as the top-ranked pixels are replaced by `baseline`: (fractions (S+1,), scores (N, S+1))."""
    return _curves(model, images, heatmaps, targets, steps, baseline, batch_size, insert=False)


def insertion_curve(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, steps: int = 20,
                    baseline: Baseline = "blur", batch_size: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """Class score as the top-ranked pixels are put back on `baseline`: (fractions (S+1,), scores (N, S+1))."""
    return _curves(model, images, heatmaps, targets, steps, baseline, batch_size, insert=True)


def _auc(fractions: np.ndarray, curves: np.ndarray) -> float:
    widths = np.diff(fractions)
    return float(np.mean(((curves[:, 1:] + curves[:, :-1]) / 2 * widths).sum(axis=1)))


def deletion_auc(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, steps: int = 20,
                 baseline: Baseline = 0.0, batch_size: int = 32, return_curve: bool = False) -> Any:
    """Area under the deletion curve, averaged over images (lower is better).

    Works on images, signals and volumes, channels last or first: "pixels" are the spatial positions.

    Args:
        model: a classifier; scores are its outputs for the target class (probabilities for softmax models;
            on a sigmoid unit, class 1 scores p and class 0 scores 1 - p, as the explainers read it).
        images: (N, H, W, C) images as the model expects them; or (N, T, C) signals, (N, D, H, W, C) volumes.
        heatmaps: (N, h, w) maps, or (N, t), (N, d, h, w) (resized to the inputs by linear interpolation when
            sizes differ).
        targets: None (the predicted class on the intact image), an int, or one int per image.
        steps: number of deletion steps (the curve has `steps + 1` points, from 0 to all pixels).
        baseline: what deleted pixels become: a number, "blur", "mean", or images of the same shape.
        batch_size: perturbed images per forward pass.
        return_curve: also return `(fractions, curves)`.

    Returns:
        The mean AUC in [0, max score], or `(auc, fractions, curves)` with `return_curve=True`.

    Example:

    ```python
    auc = kc.metrics.deletion_auc(model, images, kc.GradCAM(model)(images))
    ```
    """
    fractions, curves = deletion_curve(model, images, heatmaps, targets, steps, baseline, batch_size)
    auc = _auc(fractions, curves)
    return (auc, fractions, curves) if return_curve else auc


def insertion_auc(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None, steps: int = 20,
                  baseline: Baseline = "blur", batch_size: int = 32, return_curve: bool = False) -> Any:
    """Area under the insertion curve, averaged over images (higher is better).

    Same arguments as `deletion_auc`; the baseline (default: a strong Gaussian blur of each image) is what the
    top-ranked pixels are inserted into.
    """
    fractions, curves = insertion_curve(model, images, heatmaps, targets, steps, baseline, batch_size)
    auc = _auc(fractions, curves)
    return (auc, fractions, curves) if return_curve else auc
