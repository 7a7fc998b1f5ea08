"""Sanity checks for saliency maps (Adebayo et al. 2018): does a method's map depend on the model's weights?

`sanity_check` re-initializes the weights of a *copy* of the model, from the output layer down, one more
layer at each step (the paper's cascading randomization), and measures how much the method's maps still
resemble the trained model's: the mean Spearman rank correlation of the absolute maps. A method whose maps
survive the randomization (an edge detector, a map of the image alone) explains the image, not the model.
The user's model is never touched: the copy is made with `keras.models.clone_model` (or `copy.deepcopy`)
and the trained weights, and Python's global random state is restored after cloning.
"""
from __future__ import annotations

import copy as copy_module
import dataclasses
import random
from typing import Any, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from keras_cam import capture
from keras_cam._validation import as_image_batch, check_int
from keras_cam.explainers import BaseCAM, get_explainer

LayersSpec = Union[None, int, Sequence[Any]]
#: 1-D variables that Keras initializes to one (batch-norm scales and variances); other 1-D ones start at 0.
_ONES = ("gamma", "scale", "moving_variance", "variance")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1-based, ties given their average rank (as `scipy.stats.rankdata`)."""
    order = np.argsort(x, axis=-1, kind="stable")
    s = np.take_along_axis(x, order, axis=-1)
    ranks = np.empty(x.shape, np.float64)
    for row in range(x.shape[0]):
        # Each run of equal values [start, end) gets the mean of ranks start + 1 .. end.
        starts = np.flatnonzero(np.r_[True, s[row, 1:] != s[row, :-1]])
        ends = np.r_[starts[1:], x.shape[1]]
        ranks[row, order[row]] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a: Any, b: Any) -> np.ndarray:
    """Spearman rank correlation of each pair of maps, in numpy (average ranks for ties).

    Identical maps correlate 1 (also constant ones); a constant map against a varying one has no ranking to
    agree with and scores 0 (where the coefficient itself is undefined).

    Args:
        a, b: (N, ...) arrays of the same shape; each example is flattened.

    Returns:
        float64 (N,) correlations in [-1, 1].

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics import spearman
    >>> round(float(spearman([[1, 2, 2, 3]], [[1, 3, 2, 4]])[0]), 6)   # 3 / sqrt(10)
    0.948683
    """
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"spearman takes two (N, ...) arrays of the same shape, got {x.shape} and "
                         f"{y.shape}.")
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    rho = np.divide((rx * ry).sum(axis=1), den, out=np.zeros(len(x)), where=den > 0)
    return np.where(np.all(x == y, axis=1), 1.0, np.clip(rho, -1.0, 1.0))


@dataclasses.dataclass
class SanityCheck:
    """What `sanity_check` measured.

    Attributes:
        method: the method's name.
        layers: paths of the randomized layers, in the order they were randomized (output layer first); step
            k has layers[0..k] randomized.
        correlations: float (L,) mean Spearman correlation of the absolute maps, trained vs step k (near 1:
            the maps ignore those weights; lower: they depend on them).
        per_image: float (L, N) the same per image.
    """

    method: str
    layers: List[str]
    correlations: np.ndarray
    per_image: np.ndarray

    def to_markdown(self) -> str:
        """The cascade as a Markdown table, one row per step."""
        lines = [f"| {self.method}: randomized down to | layers | Spearman ρ of abs maps |", "|---|---|---|"]
        lines += [f"| {name} | {k + 1} | {rho:.3f} |"
                  for k, (name, rho) in enumerate(zip(self.layers, self.correlations))]
        return "\n".join(lines) + "\n"


def _units(model: keras.layers.Layer) -> List[capture.LayerRef]:
    """The layers whose weights are randomized as one, in graph order: layers with trainable weights that are
    not models, taken whole (a `CAMHead` and the dense layer it holds are one)."""
    return [r for r in capture.iter_layers(model) if not r.in_layer and not isinstance(r.layer, keras.Model)
            and r.layer.trainable_weights]


def _copy(model: keras.Model) -> keras.Model:
    """A copy of `model` with its weights; the model and Python's global random state are left as they were
    (building layers draws default seeds from `random`)."""
    state = random.getstate()
    try:
        try:
            twin = keras.models.clone_model(model)
        except Exception:  # subclassed models without a config
            twin = copy_module.deepcopy(model)
        twin.set_weights(model.get_weights())
        return twin
    except Exception as e:
        raise ValueError(f"Could not copy model '{model.name}' ({type(e).__name__}: {e}); the sanity check "
                         "randomizes a copy, never the model itself. Give the model a get_config (so that "
                         "keras.models.clone_model works) or make it deep-copyable.") from None
    finally:
        random.setstate(state)


def _reinitialize(layer: keras.layers.Layer, seed: Any) -> None:
    """New values for a layer's float variables, as Keras initializes them by default: kernels Glorot-uniform
    (drawn by numpy from `seed`, the same on every backend), scales and variances 1, biases and shifts 0."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        if "float" not in str(v.dtype):
            continue  # seed-generator states, counters
        shape = tuple(int(d) for d in v.shape)
        if len(shape) >= 2:
            field = int(np.prod(shape[:-2]))
            limit = np.sqrt(6.0 / (shape[-2] * field + shape[-1] * field))
            value = rng.uniform(-limit, limit, shape)
        else:
            value = np.full(shape, 1.0 if v.name.split("/")[-1] in _ONES else 0.0)
        v.assign(value.astype(str(v.dtype)))


def _selected(model: keras.Model, layers: LayersSpec) -> List[int]:
    """Indices into `_units(model)` to randomize, in order: every unit from the output down, the top k, or
    the given layers (names, paths or layer objects) in the given order."""
    units = _units(model)
    if not units:
        raise ValueError(f"Model '{model.name}' has no layer with trainable weights to randomize.")
    top_down = list(range(len(units)))[::-1]
    if layers is None:
        return top_down
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        return top_down[: check_int("layers", layers, 1)]
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    chosen = []
    for spec in layers:
        try:
            ref = capture.find_layer(model, spec, require_spatial=False)
        except ValueError as e:
            raise ValueError(f"`layers`: {e}") from None
        hit = [i for i, u in enumerate(units) if u.layer is ref.layer]
        if not hit:
            raise ValueError(f"`layers`: layer '{ref.path}' has no trainable weights of its own to "
                             f"randomize; layers that do: {', '.join(u.path for u in units)}.")
        chosen.append(hit[0])
    if not chosen:
        raise ValueError("`layers` is empty; pass None (every layer, from the output down), a count, or "
                         "layers.")
    return chosen


def randomized_copy(model: keras.Model, layers: LayersSpec = None, seed: int = 0
                    ) -> Tuple[keras.Model, List[str]]:
    """A copy of `model` with the weights of `layers` re-initialized (all at once), and their paths.

    Each layer's new weights depend only on `seed` and its position in the model, so randomizing the layers
    of a cascade at once gives the cascade's last step.
    """
    twin = _copy(model)
    units = _units(twin)
    chosen = _selected(model, layers)
    for i in chosen:
        _reinitialize(units[i].layer, (check_int("seed", seed, 0), i))
    return twin, [units[i].path for i in chosen]


def on_copy(kwargs: dict, model: keras.Model) -> dict:
    """Explainer options for the copy: layer objects of `model` become their paths."""
    spec = kwargs.get("layer")
    if spec is None:
        return kwargs
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    paths = [capture.find_layer(model, s, require_spatial=False).path if isinstance(s, keras.layers.Layer)
             else s for s in specs]
    return {**kwargs, "layer": paths if isinstance(spec, (list, tuple)) else paths[0]}


def method_name(method: Any) -> str:
    """What to call a method (a name or an explainer class) in tables."""
    return method if isinstance(method, str) else method.__dict__.get("name") or method.__name__


def sanity_check(
    method: Any,
    model: keras.Model,
    images: Any,
    targets: Any = None,
    layers: LayersSpec = None,
    seed: int = 0,
    batch_size: Optional[int] = None,
    **explainer_kwargs: Any,
) -> SanityCheck:
    """Cascading model-parameter randomization (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

    On a copy of `model`, the layers' weights are re-initialized from the output layer down, one more layer
    at each step (kernels Glorot-uniform from `seed`, biases 0, batch-norm scales and variances 1), and the
    method's maps are computed at each step for the classes explained on the trained model. Each step reports
    the mean over images of the Spearman rank correlation between the trained model's maps and the
    randomized model's, both in absolute value (the paper's "absolute" variant; explainers' maps are >= 0, so
    this is the maps themselves for them). A method that passes the check falls well below 1; a map that
    ignores the weights stays at 1.

    Args:
        method: a method name (`kc.available_methods()`) or an explainer class (a `BaseCAM` subclass).
        model: the trained model; it is not modified.
        images: (N, H, W, C) images as the model expects them (or signals, volumes).
        targets: None (the class predicted by the trained model), an int, one int per image, or a callable.
        layers: the layers to randomize in order: None (every layer with trainable weights, from the output
            down), an int k (the top k of those), or a list of names, paths or layers.
        seed: seed of the new weights.
        batch_size: images per compiled call.
        **explainer_kwargs: options of the explainer (e.g. `layer="conv2"`), the same at every step.

    Returns:
        A `SanityCheck` (`layers`, `correlations`, `per_image`, `to_markdown()`).

    Example:

    ```python
    check = kc.metrics.sanity_check("gradcam", model, images)
    print(check.to_markdown())
    ```
    """
    if isinstance(method, BaseCAM):
        raise ValueError("`method` must be a method name or an explainer class, not an explainer: the check "
                         f"builds one on each randomized copy. Pass {type(method).__name__} and its options "
                         "as keyword arguments.")
    x = as_image_batch(images)
    explanation = get_explainer(method, model, **explainer_kwargs).compute(x, targets, batch_size=batch_size)
    fixed = targets if callable(targets) or np.ndim(targets) == 2 or isinstance(targets, str) \
        else explanation.targets
    reference = np.abs(explanation.heatmaps)
    seed = check_int("seed", seed, 0)
    chosen = _selected(model, layers)
    twin = _copy(model)
    units = _units(twin)
    explainer = get_explainer(method, twin, **on_copy(explainer_kwargs, model))
    per_image = np.empty((len(chosen), len(x)))
    for step, i in enumerate(chosen):
        _reinitialize(units[i].layer, (seed, i))
        maps = explainer.explain(x, fixed, batch_size=batch_size)
        per_image[step] = spearman(reference.reshape(len(x), -1), np.abs(maps).reshape(len(x), -1))
    names = [units[i].path for i in chosen]
    return SanityCheck(method_name(method), names, per_image.mean(axis=1), per_image)
