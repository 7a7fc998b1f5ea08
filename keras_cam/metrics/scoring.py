"""What the model-based scores share: inputs channels last, the model's outputs through the shared compiled
forward pass, heatmaps at the inputs' size, and each example's class score read as the explainers read
classes.

A sigmoid unit is binary (class 1 its probability, class 0 one minus it); a single unit without sigmoid is a
regression output, scored as it is (`keras_cam.targets.class_scores`). Used by `faithfulness` (deletion,
insertion; they read the outputs' columns as they are), `imputation` (ROAD) and `confidence` (average drop,
increase in confidence).
"""
from __future__ import annotations

from typing import Any, Tuple

import keras
import numpy as np

from keras_cam import capture
from keras_cam._batching import chunk_size, compiled_forward, run_batched, signature
from keras_cam._resample import resize_linear
from keras_cam._validation import as_image_batch, to_numpy
from keras_cam.capture.hooks import removable_activation
from keras_cam.targets import class_scores, resolve_targets


def channels_last_inputs(model: keras.Model, images: Any) -> Tuple[np.ndarray, bool]:
    """A float32 copy of the inputs with channels last (perturbations are written once), and whether the
    model takes them channels first."""
    x = as_image_batch(images)
    first = capture.input_layout(model, x.ndim).channels_first
    return (np.ascontiguousarray(np.moveaxis(x, 1, -1)) if first else x), first


def model_layout(x: np.ndarray, channels_first: bool) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if channels_first else x


def predict_outputs(model: keras.Model, batch: np.ndarray, channels_first: bool,
                    batch_size: Any) -> np.ndarray:
    """The model's (N, K) outputs for channels_last examples, through the shared compiled forward pass."""
    batch = model_layout(batch, channels_first)
    size = chunk_size(len(batch), batch_size, bucket=True)
    forward = compiled_forward(model, signature([batch], size))
    (out,) = run_batched(lambda chunk: forward(keras.ops.convert_to_tensor(chunk)), [batch], size)
    if out.ndim != 2:
        raise ValueError(f"These scores need a classifier with one (N, classes) output; model '{model.name}' "
                         f"outputs shape {out.shape[1:]} per example.")
    return out.astype(np.float32)


class ClassScorer:
    """Reads the score of each example's class from the model's outputs, as explainers read classes."""

    def __init__(self, model: keras.Model, sample: np.ndarray, outputs: np.ndarray, targets: Any) -> None:
        if callable(targets):
            raise ValueError("`targets` must be None (the predicted class), an int or one int per image "
                             "here; a callable target cannot be read from perturbed images' outputs.")
        names = {removable_activation(layer) for layer in capture.logit_layers(model, sample)}
        self.activation = names.pop() if len(names) == 1 else None  # "softmax", "sigmoid" or None (logits)
        self.units = outputs.shape[1]
        self.binary = self.units == 1 and self.activation == "sigmoid"
        resolved = resolve_targets(targets, len(outputs), self.units, binary=self.binary)
        if np.ndim(resolved) != 1:
            raise ValueError("`targets` must give one class per image here, not several (an (N, K) array or "
                             "'all').")
        # -1 (predicted) becomes the class predicted on the intact image.
        self.original, self.targets = self(outputs, resolved)

    def __call__(self, outputs: np.ndarray, index: np.ndarray, probabilities: bool = False
                 ) -> Tuple[np.ndarray, np.ndarray]:
        if probabilities and self.activation is None and self.units > 1:  # logits: their softmax
            outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            outputs = outputs / outputs.sum(axis=1, keepdims=True)
        scores, idx = class_scores(outputs, np.asarray(index, np.int32), probabilities=self.binary,
                                   binary=self.binary)
        return (keras.ops.convert_to_numpy(scores).astype(np.float32),
                keras.ops.convert_to_numpy(idx).astype(np.int64))


def heatmaps_at(heatmaps: Any, n: int, spatial: Tuple[int, ...]) -> np.ndarray:
    """`heatmaps` as float32 (N, *spatial), resized linearly to the inputs' `spatial` size when it differs;
    one clear ValueError for a wrong batch size, rank or a non-finite value."""
    hm = np.asarray(to_numpy(heatmaps), np.float32)
    if hm.ndim != len(spatial) + 1 or hm.shape[0] != n:
        raise ValueError(f"`heatmaps` must have shape (N, *spatial) with N = {n} and {len(spatial)} spatial "
                         f"{'axis' if len(spatial) == 1 else 'axes'} like the inputs, got {hm.shape}.")
    if not np.all(np.isfinite(hm)):
        raise ValueError("`heatmaps` contain NaN or infinite values.")
    return resize_linear(hm, (n,) + tuple(spatial)) if hm.shape[1:] != tuple(spatial) else hm
