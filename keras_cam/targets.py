"""Targets -> one score per image.

Targets are `None` (the predicted class), an int, one int per image, several per image (an (N, K) int array,
or `"all"` for every class: K maps per image from one forward pass), or a callable `(outputs) -> (N,)`.
Class indices travel into compiled functions as an int32 tensor, `-1` meaning "predicted", so one compiled
function serves every choice of targets for a given input shape.

Output conventions for a single unit (outputs (N, 1)): a **binary** classifier (the unit ends in a sigmoid,
or the explainer was told `binary=True`) has class 1 = the unit and class 0 = its negation; otherwise the
unit is a **regression** output, whose only index is 0 = the output itself.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import keras
import numpy as np

Targets = Union[None, int, np.integer, "np.ndarray", list, tuple, Callable[[Any], Any]]

PREDICTED = -1


def resolve_targets(targets: Targets, n: int, num_classes: Optional[int],
                    binary: bool = True) -> Union[np.ndarray, Callable]:
    """Validates targets for `n` images; returns an int32 (n,) or (n, K) array (-1 = predicted) or the callable.

    Args:
        targets: as for `explain`.
        n: number of images.
        num_classes: K of the model's (N, K) output, or None when unknown (indices are then only checked >= 0).
        binary: with K == 1, whether the unit is a binary classifier (indices 0, 1) or a regression output
            (index 0 only).
    """
    if callable(targets):
        return targets
    if targets is None:
        return np.full((n,), PREDICTED, dtype=np.int32)
    if isinstance(targets, str):
        if targets != "all":
            raise ValueError(f"`targets` may be the string 'all' (every class), got {targets!r}.")
        if num_classes is None:
            raise ValueError("targets='all' needs a model with one (N, num_classes) output whose class count is "
                             "known; pass the class indices instead, an (N, K) int array.")
        count = 2 if num_classes == 1 and binary else num_classes
        return np.tile(np.arange(count, dtype=np.int32), (n, 1))
    if isinstance(targets, (bool, np.bool_)):
        raise ValueError("`targets` must be None, an int, one int per image, or a callable; got a bool.")
    if isinstance(targets, (int, np.integer)):
        arr = np.full((n,), int(targets), dtype=np.int64)
    else:
        try:
            arr = np.asarray(targets)
        except Exception:
            arr = np.asarray([], dtype=object)
        if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or arr.size == 0:
            if arr.dtype.kind == "f" and arr.ndim in (1, 2) and arr.size and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise ValueError(
                    "`targets` must be None, an int, a sequence of ints (one per image), an (N, K) int array or "
                    "'all' (several classes per image), or a callable (outputs) -> (N,) scores; got "
                    f"{type(targets).__name__} with shape {np.shape(targets)}."
                )
        if arr.shape[0] != n:
            raise ValueError(f"`targets` has {arr.shape[0]} entries but there are {n} images; give one per image.")
    if num_classes == 1 and not binary:
        bad = arr[arr != 0]
        if bad.size:
            raise ValueError(
                f"Target index {int(bad[0])} is out of range: the model ends in one regression unit, whose only "
                "index is 0 (the output itself). For a binary classifier that outputs a logit, pass binary=True "
                "to the explainer (class 1 = the unit, class 0 = its negation)."
            )
        return arr.astype(np.int32)
    limit = 2 if num_classes == 1 else num_classes  # a binary unit: class 1 is the unit, class 0 its negation
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


def class_scores(outputs: Any, index: Any, probabilities: bool = False, binary: bool = True) -> Tuple[Any, Any]:
    """Score of class `index[i]` for each image (`-1` = the predicted class); returns (scores, indices).

    `index` is (N,), or (N, K) for K classes per image (scores and indices are then (N, K)).

    `outputs` is (N, K). With K == 1 and `binary`, class 1 scores the unit and class 0 its complement: on
    logits `z` and `-z`, predicted `z > 0`; on `probabilities` (a sigmoid left in place) `p` and `1 - p`,
    predicted `p > 0.5`. With K == 1 and not `binary` (a regression output), index 0 scores the output itself.
    """
    ops = keras.ops
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            "The model has several outputs; pass `targets=kc.targets.output(name_or_index, class_index)` to "
            "pick the output (and class) to explain, or a callable (outputs) -> (N,) scores."
        )
    if len(outputs.shape) != 2:
        raise ValueError(
            f"The model output has shape {tuple(outputs.shape)}; integer targets need (N, num_classes). "
            "Pass `targets=` as a callable (outputs) -> (N,) scores (e.g. for segmentation or regression)."
        )
    outputs = ops.cast(outputs, "float32")
    index = ops.cast(index, "int32")
    several = len(index.shape) == 2
    if outputs.shape[-1] == 1:
        z = outputs if several else outputs[:, 0]  # (N, 1) broadcasts against (N, K) indices
        if not binary:
            return z + ops.zeros_like(ops.cast(index, "float32")), ops.zeros_like(index)
        predicted = ops.cast(z > (0.5 if probabilities else 0.0), "int32")
        index = ops.where(index < 0, predicted, index)
        return ops.where(index == 0, (1.0 - z) if probabilities else -z, z), index
    predicted = ops.cast(ops.argmax(outputs, axis=-1), "int32")
    index = ops.where(index < 0, predicted[:, None] if several else predicted, index)
    scores = ops.take_along_axis(outputs, index if several else ops.expand_dims(index, -1), axis=-1)
    return (scores if several else scores[:, 0]), index


def callable_scores(fn: Callable[[Any], Any], outputs: Any) -> Any:
    """Applies a user score function and checks it returns one score per image."""
    scores = fn(outputs)
    if isinstance(scores, (list, tuple, dict)) or len(getattr(scores, "shape", ())) != 1:
        raise ValueError(
            "A callable `targets` must return one score per image, shape (N,); got "
            f"{getattr(scores, 'shape', type(scores).__name__)}."
        )
    return keras.ops.cast(scores, "float32")


class OutputTarget:
    """A target that scores one output of a multi-output model, and one class of it (see `output`)."""

    def __init__(self, output: Union[int, str], class_index: Optional[int] = None,
                 names: Optional[Sequence[str]] = None) -> None:
        if isinstance(output, bool) or not isinstance(output, (int, np.integer, str)):
            raise ValueError(f"`output` must be an output's name or index, got {output!r}.")
        if class_index is not None and (isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer))
                                        or class_index < 0):
            raise ValueError(f"`class_index` must be None or an integer >= 0, got {class_index!r}.")
        self.output = output if isinstance(output, str) else int(output)
        self.class_index = None if class_index is None else int(class_index)
        self._names = list(names) if names is not None else None

    def bind(self, names: Sequence[str]) -> "OutputTarget":
        """The same target, told the model's output names (list outputs are picked by position)."""
        return OutputTarget(self.output, self.class_index, names)

    def __call__(self, outputs: Any) -> Any:
        out = self._select(outputs)
        if len(out.shape) != 2:
            raise ValueError(f"Output {self.output!r} has shape {tuple(out.shape)}; `kc.targets.output` scores "
                             "(N, K) outputs. Use a callable (outputs) -> (N,) scores for other shapes.")
        out = keras.ops.cast(out, "float32")
        if self.class_index is None:  # the predicted class (a single unit: the unit itself)
            return keras.ops.max(out, axis=-1)
        if self.class_index >= out.shape[-1]:
            raise ValueError(f"`class_index` {self.class_index} is out of range for output {self.output!r} with "
                             f"{out.shape[-1]} classes.")
        return out[:, self.class_index]

    def _select(self, outputs: Any) -> Any:
        if isinstance(outputs, dict):
            keys = list(outputs)
            if isinstance(self.output, str):
                if self.output not in outputs:
                    raise ValueError(f"Output '{self.output}' not found; the model's outputs are {keys}.")
                return outputs[self.output]
            if not 0 <= self.output < len(keys):
                raise ValueError(f"Output index {self.output} is out of range for {len(keys)} outputs {keys}.")
            return outputs[keys[self.output]]
        items = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        position = self.output
        if isinstance(position, str):
            if not self._names or position not in self._names:
                raise ValueError(f"Output '{position}' not found; the model's outputs are "
                                 f"{self._names or 'unnamed'}: pass its index instead.")
            position = self._names.index(position)
        if not 0 <= position < len(items):
            raise ValueError(f"Output index {position} is out of range: the model has {len(items)} outputs.")
        return items[position]


def output(name_or_index: Union[int, str], class_index: Optional[int] = None) -> OutputTarget:
    """A target for one output of a multi-output model (and one class of it), for any explainer.

    Args:
        name_or_index: the output's position, its layer's name (list outputs), or its key (dict outputs).
        class_index: the class of that output to explain; None explains its predicted class (the largest
            logit), or a single unit's value.

    Returns:
        A callable `(outputs) -> (N,)` scores, to pass as `targets=`.

    Example:

    ```python
    heatmaps = kc.GradCAM(model)(images, targets=kc.targets.output("species", class_index=3))
    ```
    """
    return OutputTarget(name_or_index, class_index)
