"""What a pattern maximizes: small objects that score a batch of layer activations, one score per image.

An objective is called as `objective(activations, index, border)`: `activations` is the layer's output
(N, ..., C) for N images, `index` the int32 (N,) filter (or direction) that image i ascends, and `border`
the layer-output pixels left out on each side. It returns the (N,) scores, in `keras.ops`, so it runs inside
the compiled step on every backend. Image i's score depends only on image i (and, for `Diversity`, on the
other patterns of its own filter), so a pattern does not depend on the other filters of its batch.

Objectives combine: `2 * Channel() + Neuron()` is a weighted sum; `Diversity(4)` asks for 4 different
patterns per filter. Pass one as `FilterVisualizer.visualize(..., objective=...)`, or call it on activations:

>>> import numpy as np
>>> from keras_cam.activation_maximization import Channel, Neuron
>>> a = np.arange(36, dtype="float32").reshape(2, 3, 3, 2)  # 2 images, 3x3, 2 channels
>>> objective = 2 * Channel() + Neuron()  # channel 0 for image 0, channel 1 for image 1
>>> keras.ops.convert_to_numpy(objective(a, np.array([0, 1]), border=0)).tolist()
[24.0, 81.0]
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import keras
import numpy as np

from keras_cam._validation import check_int, check_number

__all__ = ["Channel", "Direction", "Diversity", "Neuron", "Objective", "Sum"]


class Objective:
    """Base class: a score per image from the layer's activations. Subclasses implement `__call__`.

    `count(channels)` is how many targets there are to choose from with `filters=` (the layer's channels,
    or the rows of a `Direction`), `copies` how many patterns each target gets (`Diversity`), and
    `check(shape)` raises one `ValueError` when the objective cannot apply to the layer's output shape.
    """

    copies = 1

    def __call__(self, activations: Any, index: Any, border: int = 0) -> Any:
        raise NotImplementedError

    def count(self, channels: int) -> int:
        return channels

    def check(self, shape: Tuple[int, ...]) -> None:
        pass

    def __add__(self, other: Any) -> "Sum":
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum(_terms(self) + _terms(other))

    def __radd__(self, other: Any) -> "Objective":
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def __sub__(self, other: Any) -> "Sum":
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-1.0) * other

    def __mul__(self, weight: Any) -> "Sum":
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
            return NotImplemented
        return Sum(tuple((float(weight) * w, term) for w, term in _terms(self)))

    __rmul__ = __mul__

    def __neg__(self) -> "Sum":
        return (-1.0) * self


def _terms(objective: Objective) -> Tuple[Tuple[float, Objective], ...]:
    return objective.terms if isinstance(objective, Sum) else ((1.0, objective),)


def _select(a: Any, index: Any) -> Any:
    """a[i, ..., index[i]] for every image i: a one-hot product, so image i sees only its own channel."""
    ops = keras.ops
    onehot = ops.one_hot(index, a.shape[-1], dtype="float32")
    return ops.sum(a * ops.reshape(onehot, (-1,) + (1,) * (len(a.shape) - 2) + (a.shape[-1],)), axis=-1)


def _interior_mean(x: Any, border: int) -> Any:
    """Mean over the spatial axes of (N, *spatial), `border` pixels left out on each side; (N,) as is."""
    spatial = len(x.shape) - 1
    if not spatial:
        return x
    if border:
        x = x[(slice(None),) + (slice(border, -border),) * spatial]
    return keras.ops.mean(x, axis=tuple(range(1, 1 + spatial)))


@dataclasses.dataclass(frozen=True)
class Channel(Objective):
    """The mean activation of channel `index[i]` over the layer's output, `border` pixels left out on each
    side; for a rank-2 output (a Dense layer, class scores) the unit's value, which is the class logit when
    the layer ends in softmax or sigmoid (the visualizer's `use_logits`): class model visualization.

    Args:
        border: pixels left out on each side; `None`: the ascent's `border` option.
    """

    border: Optional[int] = None

    def __post_init__(self) -> None:
        if self.border is not None:
            object.__setattr__(self, "border", check_int("border", self.border, 0))

    def __call__(self, activations: Any, index: Any, border: int = 0) -> Any:
        a = keras.ops.cast(activations, "float32")
        return _interior_mean(_select(a, index), border if self.border is None else self.border)


@dataclasses.dataclass(frozen=True)
class Neuron(Objective):
    """One unit of channel `index[i]`: by default the centre one, at (H // 2, W // 2) of the layer's output.

    A unit sees only its receptive field, so its pattern is one localized object in the middle of the
    image, where a channel's mean asks for a texture of it everywhere.

    Args:
        position: the unit's spatial coordinates, e.g. `(y, x)`; `None`: the centre.
    """

    position: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if self.position is not None:
            object.__setattr__(self, "position", tuple(check_int("position", p, 0) for p in self.position))

    def check(self, shape: Tuple[int, ...]) -> None:
        spatial = tuple(shape[1:-1])
        if self.position is not None and (len(self.position) != len(spatial)
                                          or any(p >= d for p, d in zip(self.position, spatial))):
            raise ValueError(f"Neuron position {self.position} is outside the layer's output {spatial}.")

    def __call__(self, activations: Any, index: Any, border: int = 0) -> Any:
        a = keras.ops.cast(activations, "float32")
        spatial = tuple(a.shape[1:-1])
        at = self.position if self.position is not None else tuple(d // 2 for d in spatial)
        return _select(a[(slice(None),) + tuple(at)], index)


@dataclasses.dataclass(frozen=True)
class Direction(Objective):
    """The mean over the layer's output (less `border`) of the dot product of the activations with a
    direction in channel space: `mean(activations @ vectors[index[i]])`. Directions find what a mix of
    channels responds to (e.g. a class's CAM weights, or the difference of two channels).

    Args:
        vectors: one direction (C,) or several (K, C); with several, `filters=` picks rows (default: all).
        border: pixels left out on each side; `None`: the ascent's `border` option.
    """

    vectors: Any
    border: Optional[int] = None

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, dtype=np.float64)
        if v.ndim == 1:
            v = v[None]
        if v.ndim != 2 or v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"Direction vectors must be finite, shaped (C,) or (K, C); got shape {v.shape}.")
        zero = np.flatnonzero(~np.any(v != 0, axis=1))
        if zero.size:  # its objective is 0 for every pattern: the ascent would return the flat start
            raise ValueError(f"Direction vector {int(zero[0])} is all zeros: it points nowhere, so there is "
                             "nothing to maximize. Pass a direction with a non-zero entry.")
        # A tuple of tuples: hashable, so equal directions share one compiled step.
        object.__setattr__(self, "vectors", tuple(tuple(float(x) for x in row) for row in v))
        if self.border is not None:
            object.__setattr__(self, "border", check_int("border", self.border, 0))

    def count(self, channels: int) -> int:
        return len(self.vectors)

    def check(self, shape: Tuple[int, ...]) -> None:
        if len(self.vectors[0]) != shape[-1]:
            raise ValueError(f"Direction vectors have {len(self.vectors[0])} values but the layer's output "
                             f"has {shape[-1]} channels.")

    def __call__(self, activations: Any, index: Any, border: int = 0) -> Any:
        ops = keras.ops
        a = ops.cast(activations, "float32")
        rows = ops.take(ops.convert_to_tensor(np.asarray(self.vectors, np.float32)), index, axis=0)
        dot = ops.sum(a * ops.reshape(rows, (-1,) + (1,) * (len(a.shape) - 2) + (a.shape[-1],)), axis=-1)
        return _interior_mean(dot, border if self.border is None else self.border)


@dataclasses.dataclass(frozen=True)
class Sum(Objective):
    """A weighted sum of objectives, `sum(w * objective)`; made by `+`, `-` and `*` on objectives.

    Args:
        terms: `(weight, objective)` pairs.
    """

    terms: Tuple[Tuple[float, Objective], ...]

    def __post_init__(self) -> None:
        terms = tuple((check_number("weight", w, float("-inf")), t) for w, t in self.terms)
        if not terms or not all(isinstance(t, Objective) for _, t in terms):
            raise ValueError(f"Sum needs (weight, Objective) pairs, got {self.terms!r}.")
        merged: dict = {}  # equal objectives add their weights: Channel() - Channel() is 0 * Channel()
        for w, t in terms:
            merged[t] = merged.get(t, 0.0) + w
        terms = tuple((w, t) for t, w in merged.items() if w != 0.0)
        if not terms:
            raise ValueError(f"The objective's terms cancel out ({self.terms!r} sums to 0): there is nothing "
                             "to maximize, every pattern would stay flat. Drop the terms that cancel.")
        copies = {t.copies for _, t in terms} - {1}
        if len(copies) > 1:
            raise ValueError(f"Terms ask for different numbers of patterns per filter: {sorted(copies)}.")
        object.__setattr__(self, "terms", terms)

    @property
    def copies(self) -> int:  # type: ignore[override]
        return max(t.copies for _, t in self.terms)

    def count(self, channels: int) -> int:
        return min(t.count(channels) for _, t in self.terms)

    def check(self, shape: Tuple[int, ...]) -> None:
        for _, term in self.terms:
            term.check(shape)

    def __call__(self, activations: Any, index: Any, border: int = 0) -> Any:
        total = 0.0
        for weight, term in self.terms:
            total = total + weight * term(activations, index, border)
        return total


@dataclasses.dataclass(frozen=True)
class Diversity(Objective):
    """`copies` different patterns per filter: each maximizes `objective` and is pushed away from the
    filter's other patterns.

    The patterns of one filter are consecutive images. Each image's score is its objective minus
    `weight * |objective|` times its mean cosine similarity with the other patterns of its filter, the
    similarity taken between the Gram matrices (channel co-activations) of their activations, as in Lucid's
    diversity objective. Scaling by the objective's own size (a constant for the gradient) makes `weight` a
    share, whatever the layer's activation scale.

    Args:
        copies: patterns per filter (>= 2).
        weight: strength of the push apart (0: independent patterns from different starts). On the demo
            CNN, 1 brings the mean similarity of 4 patterns from 0.999 to 0.87, 10 to 0.49 at the cost of
            more than half of the activation of some.
        objective: what each pattern maximizes (default `Channel()`).
    """

    copies: int = 4  # type: ignore[assignment]
    weight: float = 1.0
    objective: Optional[Objective] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "copies", check_int("copies", self.copies, 2))
        object.__setattr__(self, "weight", check_number("weight", self.weight, 0.0))
        base = self.objective
        if base is not None and (not isinstance(base, Objective) or base.copies > 1):
            raise ValueError(f"Diversity's objective must be an Objective with one pattern per filter, "
                             f"got {self.objective!r}.")

    @property
    def base(self) -> Objective:
        return Channel() if self.objective is None else self.objective

    def count(self, channels: int) -> int:
        return self.base.count(channels)

    def check(self, shape: Tuple[int, ...]) -> None:
        self.base.check(shape)

    def __call__(self, activations: Any, index: Any, border: int = 0) -> Any:
        ops = keras.ops
        a = ops.cast(activations, "float32")
        n, k = a.shape[0], self.copies
        if n is not None and n % k:
            raise ValueError(f"Diversity({k}) needs the images of each filter together: got {n} images.")
        score = self.base(a, index, border)
        flat = ops.reshape(a, (-1, int(np.prod(a.shape[1:-1])), a.shape[-1]))
        grams = ops.reshape(ops.einsum("npc,npd->ncd", flat, flat), (-1, a.shape[-1] ** 2))
        grams = grams / (ops.sqrt(ops.sum(ops.square(grams), axis=-1, keepdims=True)) + 1e-10)
        grouped = ops.reshape(grams, (-1, k, a.shape[-1] ** 2))
        similarity = ops.einsum("gid,gjd->gij", grouped, grouped)
        others = (ops.sum(similarity, axis=-1) - ops.diagonal(similarity, axis1=1, axis2=2)) / (k - 1)
        return score - self.weight * ops.stop_gradient(ops.abs(score)) * ops.reshape(others, (-1,))
