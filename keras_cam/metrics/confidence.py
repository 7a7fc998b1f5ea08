"""Average drop and increase in confidence (Chattopadhay et al. 2018, the Grad-CAM++ paper): the class
probability on the explanation map `image * heatmap` against that on the image."""
from __future__ import annotations

from typing import Any, Tuple

import keras
import numpy as np

from keras_cam.metrics.scoring import (ClassScorer, channels_last_inputs, heatmaps_at, model_layout,
                                       predict_outputs)


def confidence_scores(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None,
                      batch_size: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """The class probability on each image (Y) and on its explanation map `image * heatmap` (O).

    Probabilities: a softmax or sigmoid output as it is; the softmax of logits (an output without one); a
    single unit without sigmoid is a regression output, scored as it is. Heatmaps must be in [0, 1] (as
    explainers return them) and are resized to the images (linear interpolation) when sizes differ.

    Args:
        model, images, targets, batch_size: as for `average_drop`.
        heatmaps: (N, h, w) maps in [0, 1] (or (N, t), (N, d, h, w)).

    Returns:
        `(Y, O)`, two float32 (N,) arrays.

    Example:

    ```python
    y, o = kc.metrics.confidence_scores(model, images, kc.GradCAM(model)(images))
    ```
    """
    x, first = channels_last_inputs(model, images)
    hm = heatmaps_at(heatmaps, x.shape[0], x.shape[1:-1])
    if hm.min() < -1e-6 or hm.max() > 1 + 1e-6:
        raise ValueError(f"`heatmaps` must be in [0, 1] (the explanation map is image * heatmap), got values "
                         f"in [{hm.min():.3g}, {hm.max():.3g}]; min-max normalize them first, as explainers "
                         "do.")
    explained = x * np.clip(hm, 0.0, 1.0)[..., None]
    out = predict_outputs(model, np.concatenate([x, explained]), first, batch_size)
    n = len(x)
    scorer = ClassScorer(model, model_layout(x[:1], first), out[:n], targets)
    y, _ = scorer(out[:n], scorer.targets, probabilities=True)
    o, _ = scorer(out[n:], scorer.targets, probabilities=True)
    return y, o


def average_drop(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None,
                 batch_size: int = 32) -> float:
    """Average drop % (Chattopadhay et al. 2018): `mean(max(0, Y - O) / Y) * 100`, lower is better.

    Y is the class probability on the image and O that on the explanation map `image * heatmap` (see
    `confidence_scores` for how probabilities are read): how much confidence the model loses when it sees
    only what the map highlights.

    Args:
        model: a classifier with one (N, classes) output.
        images: (N, H, W, C) images as the model expects them; or (N, T, C) signals, (N, D, H, W, C) volumes.
        heatmaps: (N, h, w) maps in [0, 1] (or (N, t), (N, d, h, w)).
        targets: None (the predicted class on the image), an int, or one int per image.
        batch_size: images per forward pass.

    Returns:
        A percentage in [0, 100].

    Example:

    ```python
    drop = kc.metrics.average_drop(model, images, kc.GradCAM(model)(images))
    ```
    """
    return drop_percent(*confidence_scores(model, images, heatmaps, targets, batch_size))


def drop_percent(y: np.ndarray, o: np.ndarray) -> float:
    """The average drop of scores `o` against `y`, in % (see `average_drop`)."""
    if np.any(y <= 0):
        bad = np.flatnonzero(y <= 0)[:10].tolist()
        raise ValueError(f"The class score on images {bad} is <= 0; the average drop divides by it, so it "
                         "needs probabilities (a classifier, not a regression unit).")
    return float(np.mean(np.maximum(0.0, y - o) / y) * 100)


def increase_percent(y: np.ndarray, o: np.ndarray) -> float:
    """The share of examples whose score `o` exceeds `y`, in % (see `increase_in_confidence`)."""
    return float(np.mean(o > y) * 100)


def increase_in_confidence(model: keras.Model, images: Any, heatmaps: Any, targets: Any = None,
                           batch_size: int = 32) -> float:
    """Increase in confidence % (Chattopadhay et al. 2018): the share of images with O > Y, higher is better.

    Same arguments and probabilities as `average_drop`: Y on the image, O on `image * heatmap`.

    Returns:
        A percentage in [0, 100].

    Example:

    ```python
    share = kc.metrics.increase_in_confidence(model, images, kc.GradCAM(model)(images))
    ```
    """
    return increase_percent(*confidence_scores(model, images, heatmaps, targets, batch_size))
