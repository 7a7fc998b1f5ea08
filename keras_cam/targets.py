"""Targets -> one score per image.

Targets are `None` (the predicted class), an int, one int per image, or a callable `(outputs) -> (N,)`.
Class indices travel into compiled functions as an int32 tensor, `-1` meaning "predicted", so one compiled
function serves every choice of targets for a given input shape.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import keras
import numpy as np

Targets = Union[None, int, np.integer, "np.ndarray", list, tuple, Callable[[Any], Any]]

PREDICTED = -1


def resolve_targets(targets: Targets, n: int, num_classes: Optional[int]) -> Union[np.ndarray, Callable]:
    """Validates targets for `n` images; returns an int32 (n,) array (-1 = predicted) or the callable."""
    if callable(targets):
        return targets
    if targets is None:
        return np.full((n,), PREDICTED, dtype=np.int32)
    if isinstance(targets, (bool, np.bool_)):
        raise ValueError("`targets` must be None, an int, one int per image, or a callable; got a bool.")
    if isinstance(targets, (int, np.integer)):
        arr = np.full((n,), int(targets), dtype=np.int64)
    else:
        try:
            arr = np.asarray(targets)
        except Exception:
            arr = np.asarray([], dtype=object)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            if arr.dtype.kind == "f" and arr.ndim == 1 and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ValueError(
                    "`targets` must be None, an int, a sequence of ints (one per image), or a callable "
                    f"(outputs) -> (N,) scores; got {type(targets).__name__} with shape {np.shape(targets)}."
                )
        if arr.shape[0] != n:
            raise ValueError(f"`targets` has {arr.shape[0]} entries but there are {n} images; give one per image.")
    # A single sigmoid unit is a binary classifier: class 1 is the unit, class 0 its negation.
    limit = 2 if num_classes == 1 else num_classes
    if limit is not None:
        bad = arr[(arr < 0) | (arr >= limit)]
        if bad.size:
            raise ValueError(
                f"Target index {int(bad[0])} is out of range: the model has {limit} classes "
                f"(valid indices 0..{limit - 1})."
            )
    elif np.any(arr < 0):
        raise ValueError(f"Target indices must be >= 0, got {int(arr[arr < 0][0])}.")
    return arr.astype(np.int32)


def class_scores(outputs: Any, index: Any, probabilities: bool = False) -> Tuple[Any, Any]:
    """Score of class `index[i]` for each image (`-1` = the predicted class); returns (scores, indices).

    `outputs` is (N, K). With K == 1 (one sigmoid unit) class 1 scores the unit and class 0 its complement:
    on logits `z` and `-z`, predicted `z > 0`; on `probabilities` (a sigmoid left in place) `p` and `1 - p`,
    predicted `p > 0.5`. Both are the symmetric reading of a binary classifier.
    """
    ops = keras.ops
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            "The model has several outputs; pass `targets=` as a callable (outputs) -> (N,) scores that "
            "picks the output and class to explain, e.g. targets=lambda out: out[0][:, 3]."
        )
    if len(outputs.shape) != 2:
        raise ValueError(
            f"The model output has shape {tuple(outputs.shape)}; integer targets need (N, num_classes). "
            "Pass `targets=` as a callable (outputs) -> (N,) scores (e.g. for segmentation or regression)."
        )
    outputs = ops.cast(outputs, "float32")
    index = ops.cast(index, "int32")
    if outputs.shape[-1] == 1:
        z = outputs[:, 0]
        predicted = ops.cast(z > (0.5 if probabilities else 0.0), "int32")
        index = ops.where(index < 0, predicted, index)
        return ops.where(index == 0, (1.0 - z) if probabilities else -z, z), index
    predicted = ops.cast(ops.argmax(outputs, axis=-1), "int32")
    index = ops.where(index < 0, predicted, index)
    scores = ops.take_along_axis(outputs, ops.expand_dims(index, -1), axis=-1)[:, 0]
    return scores, index


def callable_scores(fn: Callable[[Any], Any], outputs: Any) -> Any:
    """Applies a user score function and checks it returns one score per image."""
    scores = fn(outputs)
    if isinstance(scores, (list, tuple, dict)) or len(getattr(scores, "shape", ())) != 1:
        raise ValueError(
            "A callable `targets` must return one score per image, shape (N,); got "
            f"{getattr(scores, 'shape', type(scores).__name__)}."
        )
    return keras.ops.cast(scores, "float32")
