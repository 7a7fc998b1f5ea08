"""Gradient attributions at the input's resolution: Saliency, SmoothGrad and Integrated Gradients.

They differentiate the target's score with respect to the input itself (the seam's `input_grads`), not a
layer, so their maps have the input's resolution and no layer is needed. `InputGradientExplainer` owns the
pipeline once: each image becomes R rows (the image, noisy copies, points on a path), all rows of a chunk
go through one compiled forward + backward, and the rows' gradients are averaged with the method's weights.
A method says which rows (`copies`), how the mean gradient becomes attributions (`scale`) and how channels
are reduced to a map (`reduce`). The guided methods (`guided.py`) change the ReLUs' backward pass on top.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Callable, List, Optional, Tuple

import keras
import numpy as np

from keras_cam import capture
from keras_cam._batching import DEFAULT_BATCH_SIZE, chunk_size, run_batched, signature, to_tensors
from keras_cam._inputs import InputStructure, ModelInputs
from keras_cam._validation import check_int, check_number
from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.targets import Targets, callable_index

#: The placeholder "layer" of the methods that differentiate with respect to the input.
_INPUT = "<input>"


class InputGradientExplainer(BaseCAM):
    """Base of the attributions at the input's resolution: `explainer(images, targets)` -> (N, *spatial).

    The calling convention is every explainer's (`explain`, `compute`, targets None / int / one per image /
    (N, K) / "all" / callable, signals, volumes, channels_first inputs); `layer` is accepted for a uniform
    `get_explainer(name, model, layer=...)` and ignored (except by Guided Grad-CAM). `attributions` gives
    the raw, signed per-pixel-per-channel values the maps are made of.

    A subclass overrides `copies` (the rows each image becomes and their weights), `scale` (mean gradient ->
    attributions) and `reduce` (attributions -> raw map, before ReLU and normalization).

    `batch_size` counts images per compiled call; by default it is chosen so that a call holds about 32 rows
    (an image with R copies and K targets is R x K rows).
    """

    several_box_targets = False  # one input gradient per image: one box per image

    uses_layer = False  # (no `name`: a base, not a method of its own)
    #: Host arrays (built per chunk by `host_inputs`) that the compiled function takes before the inputs.
    host_arrays = 0

    def __init__(self, model: keras.Model, layer: capture.LayerSpec = None, **options: Any) -> None:
        super().__init__(model, layer if self.uses_layer else None, **options)

    # -- what a method says ----------------------------------------------------------------------------------

    def copies(self, x: Any, *host: Any) -> Tuple[Any, np.ndarray, int]:
        """(rows (N, R, ...), weights (R,) of their gradients, the row whose outputs pick the class and score)."""
        return keras.ops.expand_dims(x, 1), np.ones((1,), np.float32), 0

    def scale(self, x: Any, gradient: Any) -> Any:
        """Attributions from the images and the weighted mean gradient (both in the input's layout)."""
        return gradient

    def reduce(self, attributions: Any) -> Any:
        """Raw map (M, *spatial) from channels_last attributions: the largest |value| over channels."""
        return keras.ops.max(keras.ops.abs(attributions), axis=-1)

    def host_inputs(self, ids: np.ndarray, images: np.ndarray) -> List[np.ndarray]:
        """Per-chunk numpy arrays for `copies` (`ids`: the images' positions in the call)."""
        return []

    def _backward_rule(self):
        """Context in which the model runs for the gradients (the guided methods swap the ReLUs)."""
        return contextlib.nullcontext()

    # -- public API ------------------------------------------------------------------------------------------

    def _compute(self, images: Any, targets: Targets, upsample: bool, normalize: bool,
                 batch_size: Optional[int], eigen_smooth: bool) -> Explanation:
        if eigen_smooth:
            raise ValueError(f"eigen_smooth applies to class activation maps (a weighted sum of a layer's "
                             f"channels); {type(self).__name__} attributes the input. Use aug_smooth, or a CAM "
                             "method.")
        inputs, resolved = self._prepare_call(images, targets)
        maps, idx, scores = self._run_batches(inputs, resolved, self._chunk(inputs.n, resolved, batch_size),
                                              upsample, normalize)
        return Explanation(maps.astype(np.float32), idx.astype(np.int64), scores.astype(np.float32))

    def attributions(self, images: Any, targets: Targets = None, batch_size: Optional[int] = None) -> np.ndarray:
        """The raw, signed attributions the maps are made of, one value per input element.

        Args:
            images, targets, batch_size: as for `explain`.

        Returns:
            float32 array of the explained input's shape, (N, *spatial, C) (or (N, C, *spatial) for a
            channels_first model); (N, K, ...) for K targets per image.
        """
        inputs, resolved = self._prepare_call(images, targets)
        size = self._chunk(inputs.n, resolved, batch_size)
        attributions, _, _ = self._run_batches(inputs, resolved, size, False, False, raw=True)
        return attributions.astype(np.float32)

    # -- the pipeline ----------------------------------------------------------------------------------------

    def _find_layer(self, layer: capture.LayerSpec, sample: Any = None) -> capture.LayerRef:
        if not self.uses_layer:  # gradients are taken at the input: no layer to find
            return capture.LayerRef(self.model, _INPUT)
        return super()._find_layer(layer, sample)

    def _chunk(self, n: int, targets: Any, batch_size: Optional[int]) -> int:
        if batch_size is None:
            k = 1 if callable(targets) or np.ndim(targets) == 1 else np.shape(targets)[1]
            rows = self.copies_per_image() * k
            batch_size = max(1, DEFAULT_BATCH_SIZE // rows)
        return chunk_size(n, batch_size, bucket=True)

    def copies_per_image(self) -> int:
        """R: the rows one image (and target) costs in the forward and backward pass."""
        return 1

    def _run_batches(self, inputs: ModelInputs, targets: Any, size: int, upsample: bool, normalize: bool,
                     raw: bool = False):
        key = ("attributions" if raw else "maps", inputs.structure, signature(inputs.arrays, size), upsample,
               normalize, targets if callable(targets) else np.shape(targets)[1:])
        fn = self._compiled(key, lambda owner: self._attribution_graph(
            owner, inputs.structure, self._input_size(inputs), targets, upsample, normalize, raw))
        index = callable_index(targets, inputs.n) if callable(targets) else targets
        image = inputs.structure.image_index

        def call(ids, index, *arrays):
            return fn(*to_tensors([index] + self.host_inputs(ids, arrays[image]) + list(arrays)))

        return run_batched(call, [np.arange(inputs.n), index] + inputs.arrays, size)

    @staticmethod
    def _attribution_graph(owner: Any, structure: InputStructure, size: Tuple[int, ...], targets: Any,
                           upsample: bool, normalize: bool, raw: bool) -> Callable:
        """The compiled function: (class indices, *host arrays, *inputs) -> (maps or attributions, classes,
        scores)."""
        ops = keras.ops

        def fn(index, *tensors):
            this = owner()
            host, tensors = list(tensors[:this.host_arrays]), list(tensors[this.host_arrays:])
            several = not callable(targets) and len(index.shape) == 2
            k = int(index.shape[1]) if several else 1
            if several:  # one row per (image, target): each row's gradient is its own target's
                tensors = [ops.repeat(t, k, axis=0) for t in tensors]
                host = [ops.repeat(h, k, axis=0) for h in host]
                index = ops.reshape(index, (-1,))
            attributions, scores, idx = this._attribute(structure, tensors, host, index, targets)
            if several:
                scores, idx = ops.reshape(scores, (-1, k)), ops.reshape(idx, (-1, k))
            if raw:
                out = ops.reshape(attributions, (-1, k) + tuple(attributions.shape[1:])) if several else attributions
            else:
                maps = this.reduce(this._input_layout.to_channels_last(attributions))
                out = this._combine([maps], idx, size, upsample, normalize)
            return out, idx, scores

        return fn

    def _attribute(self, structure: InputStructure, tensors: List[Any], host: List[Any], index: Any,
                   targets: Any) -> Tuple[Any, Any, Any]:
        """(attributions in the input's layout, scores (M,), explained classes (M,)) for M rows of images."""
        ops = keras.ops
        i = structure.image_index
        x = ops.cast(tensors[i], "float32")
        rows, weights, ref = self.copies(x, *host)
        r = int(rows.shape[1])
        repeated = [ops.repeat(t, r, axis=0) for t in tensors]
        score_rows = self._row_scores(targets, index, r, ref)

        def loss_fn(model, flat):
            model_inputs = list(repeated)
            model_inputs[i] = flat
            with self._logits_scope(), self._backward_rule():
                outputs = model(structure.pack(model_inputs), training=False)
            scores, idx = score_rows(outputs)
            # The seam returns the loss only: the explained class rides along in a column without gradient.
            return ops.stack([scores, ops.stop_gradient(ops.cast(idx, "float32"))], axis=-1)

        flat = ops.reshape(rows, (-1,) + tuple(x.shape[1:]))
        loss, grads = self._seam.input_grads(self.model, flat, loss_fn)
        grads = ops.reshape(ops.cast(grads, "float32"), (-1, r) + tuple(x.shape[1:]))
        w = ops.convert_to_tensor(weights.astype(np.float32).reshape((1, r) + (1,) * (len(x.shape) - 1)))
        loss = ops.reshape(loss, (-1, r, 2))[:, ref]
        return self.scale(x, ops.sum(grads * w, axis=1)), loss[:, 0], ops.cast(loss[:, 1], "int32")

    def _row_scores(self, targets: Any, index: Any, r: int, ref: int) -> Callable:
        """outputs of the R rows of every image -> (scores, classes) per row. "Predicted" means the class
        predicted on the image's reference row (the image itself), the same for all its rows."""
        ops = keras.ops
        per_row = ops.repeat(index, r, axis=0)
        if callable(targets) or r == 1:
            score_fn = self._score_fn(targets, per_row)
            return lambda outputs: score_fn(outputs)[1]

        def score(outputs):
            if isinstance(outputs, (list, tuple, dict)) or len(outputs.shape) != 2:
                return self._score_fn(targets, per_row)(outputs)[1]  # the usual clear error
            reference = ops.reshape(outputs, (-1, r, outputs.shape[-1]))[:, ref]
            _, (_, idx) = self._score_fn(targets, index)(reference)
            return self._score_fn(targets, ops.repeat(idx, r, axis=0))(outputs)[1]

        return score


class Saliency(InputGradientExplainer):
    """Saliency (Simonyan et al. 2014): the largest |d score / d x| over the input's channels, per pixel.

    One compiled forward + backward to the input per chunk; `attributions` gives the signed gradient.

    Args:
        model, use_logits, input_index, input_name, binary: as for every explainer (see `BaseCAM`).
        layer: ignored (the gradient is taken at the input).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    maps = kc.Saliency(model)(np.random.rand(2, 16, 16, 3))   # (2, 16, 16) float32 in [0, 1]
    ```
    """

    name = "saliency"
    aliases = ("vanilla-gradients",)


class SmoothGrad(InputGradientExplainer):
    """SmoothGrad (Smilkov et al. 2017): the input gradient averaged over noisy copies of the image.

    Each image gets `samples` copies `x + e`, `e ~ N(0, (noise * (max(x) - min(x)))^2)` per element, the range
    taken over the whole image; the mean of their gradients is reduced as Saliency does (the largest |value|
    over channels). All copies of a chunk go through one compiled call, with the image itself as one more
    row: it fixes the predicted class (`targets=None`) and gives the reported score, and has no weight in the
    mean. The noise of the image at position i of a call is drawn by numpy from `(seed, i)`: the same on
    every backend, batch size and layout (drawn channels_last). `noise=0` gives Saliency.

    Args:
        model, use_logits, input_index, input_name, binary: as for every explainer (see `BaseCAM`).
        layer: ignored (the gradient is taken at the input).
        samples: noisy copies per image (25 by default).
        noise: the noise's standard deviation as a fraction of each image's value range (0.15 by default).
        seed: the seed of the noise (an integer >= 0).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    maps = kc.SmoothGrad(model, samples=8)(np.random.rand(2, 16, 16, 3))   # (2, 16, 16) in [0, 1]
    ```
    """

    name = "smoothgrad"
    aliases = ("smooth-grad",)
    host_arrays = 1

    def __init__(self, model: keras.Model, layer: capture.LayerSpec = None, *, samples: int = 25,
                 noise: float = 0.15, seed: int = 0, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.samples = check_int("samples", samples, 1)
        self.noise = check_number("noise", noise, 0.0)
        self.seed = check_int("seed", seed, 0)

    def copies_per_image(self) -> int:
        return self.samples + 1

    def host_inputs(self, ids: np.ndarray, images: np.ndarray) -> List[np.ndarray]:
        # Drawn channels_last and moved to the input's layout: a channels_first twin gets the same noise.
        layout = self._input_layout
        shape = (self.samples,) + tuple(images.shape[a] for a in layout.spatial_axes) + (
            images.shape[layout.channel_axis],)
        noise = np.stack([np.random.default_rng([self.seed, int(i)]).standard_normal(shape, dtype=np.float32)
                          for i in ids])
        return [np.moveaxis(noise, -1, 2) if layout.channels_first else noise]

    def copies(self, x: Any, *host: Any) -> Tuple[Any, np.ndarray, int]:
        ops = keras.ops
        axes = tuple(range(1, len(x.shape)))
        spread = ops.max(x, axis=axes, keepdims=True) - ops.min(x, axis=axes, keepdims=True)
        noisy = ops.expand_dims(x, 1) + ops.expand_dims(self.noise * spread, 1) * host[0]
        weights = np.concatenate([[0.0], np.full(self.samples, 1.0 / self.samples)]).astype(np.float32)
        return ops.concatenate([ops.expand_dims(x, 1), noisy], axis=1), weights, 0


class IntegratedGradients(InputGradientExplainer):
    """Integrated Gradients (Sundararajan et al. 2017): `(x - x') * mean gradient` on the path from x' to x.

    The path integral is the midpoint rule over `steps` equal intervals: the mean of the gradients at the
    points `x' + ((i + 1/2) / steps) (x - x')`, i = 0..steps-1, all in one compiled call per chunk, with x
    itself as one more row (it fixes the predicted class and gives the reported score; no weight in the
    mean). The midpoint rule never evaluates the gradient at the baseline, where a zero baseline puts every
    bias-free ReLU exactly on its kink (the trapezoid rule's end point would then count a zero gradient).
    The attributions (`attributions`) are signed and complete: for each image they sum to `f(x) - f(x')`
    up to the rule's error, which falls as 1 / steps^2 on smooth models (more steps for models with many
    ReLU kinks on the path). The map is the positive part of their sum over channels: where the image
    raises the target's score relative to the baseline (the pixels a heatmap is read for).

    Args:
        model, use_logits, input_index, input_name, binary: as for every explainer (see `BaseCAM`).
        layer: ignored (the gradient is taken at the input).
        steps: points on the path (32 by default; with the image itself, 33 rows per image).
        baseline: the reference input x': a number (0 by default: black) or an array that broadcasts to one
            image's shape, e.g. (H, W, C) or a per-channel (C,) mean.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    ig = kc.IntegratedGradients(model, steps=16)
    maps = ig(np.random.rand(2, 16, 16, 3))                      # (2, 16, 16) in [0, 1]
    values = ig.attributions(np.random.rand(2, 16, 16, 3))        # (2, 16, 16, 3), signed
    ```
    """

    name = "integrated-gradients"
    aliases = ("integratedgradients", "ig")

    def __init__(self, model: keras.Model, layer: capture.LayerSpec = None, *, steps: int = 32,
                 baseline: Any = 0.0, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.steps = check_int("steps", steps, 1)
        try:
            self.baseline = np.array(baseline, dtype=np.float32, copy=True)
        except (TypeError, ValueError):
            raise ValueError(f"`baseline` must be a number or an array of numbers, got "
                             f"{type(baseline).__name__}.") from None
        if not np.all(np.isfinite(self.baseline)):
            raise ValueError("`baseline` contains NaN or infinite values; pass finite numbers.")
        self._baseline_key = (self.baseline.shape, hashlib.sha1(self.baseline.tobytes()).hexdigest())

    def _config(self) -> tuple:
        return super()._config() + (self.steps, self._baseline_key)

    def _prepare_call(self, images: Any, targets: Targets) -> Tuple[ModelInputs, Any]:
        inputs, resolved = super()._prepare_call(images, targets)
        shape = inputs.image.shape[1:]
        fits = self.baseline.ndim <= len(shape) and all(
            b in (1, s) for b, s in zip(self.baseline.shape[::-1], shape[::-1]))
        if not fits:
            raise ValueError(f"`baseline` has shape {self.baseline.shape}, which does not broadcast to one image "
                             f"of shape {shape}; pass a number, an array of that shape, or one that broadcasts "
                             "to it (e.g. one value per channel).")
        return inputs, resolved

    def copies_per_image(self) -> int:
        return self.steps + 1

    def copies(self, x: Any, *host: Any) -> Tuple[Any, np.ndarray, int]:
        ops = keras.ops
        # alpha = 1 (the last row) is x exactly: the reference row, without weight.
        alphas = np.append((np.arange(self.steps) + 0.5) / self.steps, 1.0).astype(np.float32)
        a = ops.convert_to_tensor(alphas.reshape((1, -1) + (1,) * (len(x.shape) - 1)))
        rows = a * ops.expand_dims(x, 1) + (1.0 - a) * ops.convert_to_tensor(self.baseline)
        weights = np.append(np.full(self.steps, 1.0 / self.steps), 0.0).astype(np.float32)
        return rows, weights, self.steps

    def scale(self, x: Any, gradient: Any) -> Any:
        return (x - keras.ops.convert_to_tensor(self.baseline)) * gradient

    def reduce(self, attributions: Any) -> Any:
        return keras.ops.sum(attributions, axis=-1)  # signed; the pipeline's ReLU keeps positive evidence
