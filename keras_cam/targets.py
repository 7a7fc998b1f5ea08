"""Targets -> one score per image.

Targets are `None` (the predicted class), an int, one int per image, several per image (an (N, K) int array,
or `"all"` for every class: K maps per image from one forward pass), or a callable `(outputs) -> (N,)`:
`output(...)` for multi-output models, `segmentation(...)` for per-pixel outputs (N, H, W, K).
Class indices travel into compiled functions as an int32 tensor, `-1` meaning "predicted", so one compiled
function serves every choice of targets for a given input shape.

Output conventions for a single unit (outputs (N, 1)): a **binary** classifier (the unit ends in a sigmoid,
or the explainer was told `binary=True`) has class 1 = the unit and class 0 = its negation; otherwise the
unit is a **regression** output, whose only index is 0 = the output itself.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from keras_cam._rows import RowsTarget

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
    if isinstance(targets, RowsTarget):
        return targets.resolve(n)
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


def callable_index(fn: Callable[[Any], Any], n: int) -> np.ndarray:
    """What a callable target takes into compiled functions in place of class indices, chunked with the
    images: a segmentation target's per-image masks (N, H, W), else `-1` (N,) (nothing)."""
    rows = fn.take_rows() if isinstance(fn, RowsTarget) else None
    return np.full((n,), PREDICTED, dtype=np.int32) if rows is None else rows


def callable_scores(fn: Callable[[Any], Any], outputs: Any, index: Any = None) -> Any:
    """Applies a user score function and checks it returns one score per image.

    `index` is the chunk of what `callable_index` gave (segmentation targets read per-image masks in it).
    """
    scores = fn.score(outputs, index) if isinstance(fn, RowsTarget) else fn(outputs)
    rank = 2 if getattr(fn, "several", False) else 1  # a detection target scores K boxes per image, (N, K)
    if isinstance(scores, (list, tuple, dict)) or len(getattr(scores, "shape", ())) != rank:
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


class SegmentationTarget(RowsTarget):
    """Scores one class of a per-pixel output (N, *spatial, K): its logits summed over a mask (see
    `segmentation`).

    Equal targets (same class, same kind of mask, same shared mask or per-image mask shape) share compiled
    functions: per-image masks are arguments of the compiled function, chunked with the images; a shared
    mask is a constant of it, so each new shared mask is traced once.
    """

    def __init__(self, class_index: int, mask: Any = None) -> None:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)) or class_index < 0:
            raise ValueError("`class_index` must be an integer >= 0 (the class's channel on the output's "
                             f"last axis), got {class_index!r}.")
        self.class_index = int(class_index)
        self._mask: Optional[np.ndarray] = None if mask is None else _as_mask(mask)
        self.kind = "predicted" if mask is None else ("per_image" if self._mask.ndim == 3 else "shared")
        self.mask_shape: Optional[Tuple[int, ...]] = None if mask is None else tuple(self._mask.shape)
        self._rows: Optional[np.ndarray] = None  # per-image masks of one call, until the explainer takes them
        if self.kind == "per_image":
            self._key: tuple = (self.class_index, self.kind, self._mask.shape[1:])
        elif self.kind == "shared":
            digest = hashlib.sha1(self._mask.tobytes()).hexdigest()
            self._key = (self.class_index, self.kind, self._mask.shape, digest)
        else:
            self._key = (self.class_index, self.kind)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SegmentationTarget) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("segmentation",) + self._key)

    def __repr__(self) -> str:
        shape = "" if self.mask_shape is None else f", mask shape {self.mask_shape}"
        return f"segmentation({self.class_index}, {self.kind}{shape})"

    def resolve(self, n: int) -> "SegmentationTarget":
        """This target for one call on `n` images: per-image masks checked against `n` and handed to the
        explainer once (`take_rows`), so compiled functions and their cache keys never keep them."""
        if self.kind != "per_image":
            return self
        if self._mask.shape[0] != n:
            h, w = self._mask.shape[1:]
            raise ValueError(
                f"`mask` holds {self._mask.shape[0]} per-image masks {self._mask.shape} but there are {n} "
                f"images; pass one mask per image, shape ({n}, {h}, {w}), or one mask ({h}, {w}) shared by "
                "every image."
            )
        call = SegmentationTarget(self.class_index)
        call.kind, call.mask_shape, call._key, call._rows = self.kind, self.mask_shape, self._key, self._mask
        return call

    def score(self, outputs: Any, index: Any = None) -> Any:
        """(N,) scores of `outputs` (N, *spatial, K); `index` holds per-image masks inside explainers."""
        ops = keras.ops
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError("The model has several outputs; `kc.targets.segmentation` scores a model with "
                             "one per-pixel output (N, H, W, K). Pass a callable (outputs) -> (N,) that "
                             "picks it.")
        if len(outputs.shape) < 3:
            raise ValueError(
                f"The model output has shape {tuple(outputs.shape)}; `kc.targets.segmentation` scores "
                "per-pixel outputs (N, H, W, K). For an (N, K) classifier pass the class index as `targets=`."
            )
        z = ops.cast(outputs, "float32")
        k, c, grid = int(z.shape[-1]), self.class_index, tuple(z.shape[1:-1])
        limit = 2 if k == 1 else k  # one unit: binary, class 1 = the unit's logit, class 0 its negation
        if c >= limit:
            raise ValueError(f"`class_index` {c} is out of range: the per-pixel output has {limit} classes "
                             f"(valid indices 0..{limit - 1}).")
        if k == 1:
            logit = z[..., 0] if c == 1 else -z[..., 0]
            predicted = z[..., 0] > 0 if c == 1 else z[..., 0] <= 0
        else:
            logit = z[..., c]
            predicted = ops.argmax(z, axis=-1) == c
        if self.kind == "predicted":
            mask = ops.cast(predicted, "float32")
        elif self.kind == "per_image" and index is not None and len(index.shape) >= 2:
            mask = ops.cast(index, "float32")  # this chunk's masks, (chunk, H, W)
        elif self._mask is not None:  # a shared mask, or per-image masks when called on the whole batch
            mask = ops.convert_to_tensor(self._mask)
        else:
            raise ValueError(
                "Per-image masks (N, H, W) follow the images into an explainer's compiled calls; called by "
                "hand, this target scores the outputs of the N images it has masks for. Pass one mask (H, W) "
                "shared by every image, or mask=None."
            )
        shape = tuple(mask.shape[1:]) if self.kind != "shared" else tuple(mask.shape)
        if shape != grid:  # never for predicted pixels
            expected = ", ".join(str(d) for d in grid)
            raise ValueError(
                f"`mask` has shape {self.mask_shape} but the model's per-pixel output is {tuple(z.shape)}: "
                f"pass a mask of shape ({expected}) shared by every image, or (N, {expected}) with one per "
                "image (resize masks to the output's grid, e.g. with nearest-neighbour interpolation)."
            )
        rows, images = mask.shape[0], z.shape[0]
        if self.kind == "per_image" and None not in (rows, images) and rows != images:
            raise ValueError(f"`mask` holds {rows} per-image masks but the outputs have {images} images; "
                             "pass one mask per image.")
        return ops.sum(ops.reshape(logit * mask, (-1, int(np.prod(grid)))), axis=1)


def _as_mask(mask: Any) -> np.ndarray:
    """A float32 copy of a bool / 0-1 mask (H, W) or (N, H, W), or one clear `ValueError`."""
    try:
        m = np.array(mask)
    except Exception:
        m = np.asarray([], dtype=object)
    if m.dtype.kind not in "biuf" or m.ndim not in (2, 3) or m.size == 0:
        raise ValueError(
            "`mask` must be None (the pixels predicted as the class), a bool or 0-1 array (H, W) shared by "
            f"every image, or (N, H, W) with one per image; got {type(mask).__name__} with shape "
            f"{np.shape(mask)}."
        )
    m = m.astype(np.float32)
    if not np.all(np.isfinite(m)):
        raise ValueError("`mask` values must be in [0, 1] (bool or 0-1 weights); got NaN or infinite values.")
    if m.min() < 0 or m.max() > 1:
        raise ValueError(f"`mask` values must be in [0, 1] (bool or 0-1 weights); got values in "
                         f"[{m.min()}, {m.max()}].")
    return m


def segmentation(class_index: int, mask: Any = None) -> SegmentationTarget:
    """A target for one class of a semantic segmentation model, whose output is per-pixel (N, H, W, K).

    Each image scores the sum of the class's logits over `mask`: `sum_xy mask(x, y) z_c(x, y)`. Logits are
    what every target scores: with `use_logits` (the default) an output layer ending in softmax/sigmoid is
    read before it; otherwise the output as it is. A single unit (K = 1) is binary: class 1 is its logit and
    class 0 the negated logit, predicted where the logit is > 0 (resp. <= 0). Classes are on the last axis.

    Args:
        class_index: the class to explain, an integer >= 0 (and < K; checked on the first call).
        mask: the pixels to explain: None for those the model predicts as the class (argmax over K equals
            `class_index`, computed from the outputs inside the call, as pytorch-grad-cam's
            `SemanticSegmentationTarget` is used); or a bool / 0-1 array on the output's grid, (H, W) shared
            by every image or (N, H, W) one per image, with every method (Score-CAM's and AblationCAM's
            perturbed copies are scored on their image's mask; with mask=None on their own predicted pixels).

    Returns:
        A callable `(outputs) -> (N,)` scores, to pass as `targets=` to any explainer that takes callables.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)),
                              keras.layers.Conv2D(8, 3, padding="same", name="conv"),
                              keras.layers.Conv2D(3, 1, activation="softmax")])   # (N, 16, 16, 3)
    images = np.random.rand(2, 16, 16, 3)
    heatmaps = kc.GradCAM(model, layer="conv")(images, targets=kc.targets.segmentation(1))  # (2, 16, 16)
    ```
    """
    return SegmentationTarget(class_index, mask)


from keras_cam.detection import DetectionTarget, detection  # noqa: E402  (it builds on RowsTarget)
