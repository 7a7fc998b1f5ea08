"""What filters respond to and what they produce: gradient-ascent patterns, feature maps and kernels.

- `FilterVisualizer` (seeds 000 and 004): the input pattern that maximizes a filter's mean activation, found
  by gradient ascent on the input with RMS-normalized gradients. Every requested filter is optimized in one
  batch (image i ascends filter i), where the references run one optimization per filter.
- `feature_maps` / `feature_map_grid` and `kernel_grid` (seed 002): a layer's activations and a conv layer's
  kernels as pictures.

The layer's output is captured by intercepting its call (DESIGN.md §1), never by building
`keras.Model(model.inputs, layer.output)`, so layers inside nested and subclassed models work. The forward
pass stops right after the layer: the layers behind it are not computed.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture, visualize
from keras_cam._validation import as_image_batch, to_numpy

__all__ = [
    "FeatureMapExtractor",
    "FilterVisualizer",
    "deprocess_image",
    "feature_map_grid",
    "feature_maps",
    "kernel_grid",
]

Size = Union[None, int, Tuple[int, int]]

#: Pattern size when the model accepts any input size (seed 004's grid tiles are 64 px).
DEFAULT_SIZE = 64
#: `batch_size=None` puts this many input values (about 8 MB of float32) in one chunk: ~170 images of
#: 64x64x3, ~13 of 224x224x3.
_BATCH_VALUES = 2**21
#: Seed 004's gradient normalization: g / (sqrt(mean(g^2)) + 1e-5).
_GRAD_EPS = 1e-5


class _StopForward(Exception):
    """Raised by the capture hook once the layer has produced its output, so nothing behind it runs.

    Keras may re-raise it as a new instance of this class with a longer message, so it carries no data.
    """


class _CaptureError(ValueError):
    """The layer's output could not be captured (not called, or several outputs)."""


def _forward_to(model: keras.layers.Layer, layer: keras.layers.Layer, inputs: Any) -> Any:
    """`layer`'s output when `model` runs on `inputs`; the layers after it are not computed.

    Raising from the hook is what makes a pattern step cost the truncated model's forward and backward
    (block3_conv1 is a third of VGG16's work at 64x64), on any model, without building a sub-model.
    """
    recorded: List[Any] = []

    def stop(output: Any) -> Any:
        recorded.append(output)
        raise _StopForward("layer output captured")

    try:
        with capture.intercept(layer, stop):
            model(inputs, training=False)
    except _StopForward:
        pass
    if not recorded:
        raise _CaptureError(
            f"Layer '{layer.name}' was not called when model '{model.name}' ran, so its output cannot be "
            "captured. Pass a layer that the model's forward pass uses."
        )
    output = recorded[0]
    if isinstance(output, (list, tuple, dict)):
        raise _CaptureError(f"Layer '{layer.name}' returns several tensors; pass a layer with one output.")
    return output


def _model_input_shape(model: keras.layers.Layer) -> Optional[Tuple[Optional[int], ...]]:
    """(H, W, C) of the model's single input, with None for free sizes; None when it cannot be known."""
    inputs = capture.graph_tensors(model, "inputs")  # Functional, and Sequential through its graph
    if len(inputs) > 1:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs; filter visualization and feature maps work on "
            "single-input image models. Pass the image branch (a sub-model) instead."
        )
    if inputs:
        shape = tuple(inputs[0].shape[1:])
    else:  # subclassed model: the shape it was built with, if any
        shapes = getattr(model, "_build_shapes_dict", None) or {}
        if len(shapes) != 1:
            return None
        shape = tuple(next(iter(shapes.values())))[1:]
    if len(shape) != 3:
        raise ValueError(
            f"Model '{model.name}' takes inputs of shape {(None,) + shape}; filter visualization and feature "
            "maps need image inputs (N, H, W, C), channels last."
        )
    return shape


def _resolve_layer(model: keras.layers.Layer, layer: capture.LayerSpec) -> capture.LayerRef:
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
    return capture.find_layer(model, layer, require_spatial=False)


def _even_chunks(n: int, batch_size: int) -> Tuple[int, int]:
    """(number of chunks, chunk size) covering n items with at most `batch_size` each and little padding."""
    count = math.ceil(n / batch_size)
    return count, math.ceil(n / count)


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """Pads axis 0 to `rows` by repeating the last row (one compiled signature for every chunk)."""
    if a.shape[0] == rows:
        return a
    return np.concatenate([a, np.repeat(a[-1:], rows - a.shape[0], axis=0)], axis=0)


def _roll(x: Any, shift: Any, axis: int) -> Any:
    """`roll` by a shift that is a tensor (a gather: `torch.roll` needs Python ints)."""
    n = x.shape[axis]
    index = keras.ops.mod(keras.ops.arange(n, dtype="int32") - shift + n, n)
    return keras.ops.take(x, index, axis=axis)


def _jitter(x: Any, shift: Any) -> Any:
    """Rolls images (N, H, W, C) by shift = (dy, dx); shapes stay fixed, so one compiled step serves all."""
    return _roll(_roll(x, shift[0], axis=1), shift[1], axis=2)


def deprocess_image(x: Any) -> np.ndarray:
    """Seed 004's `deprocess_image`, per image: standardize, x0.1, +0.5, clip to [0, 1], x255, uint8.

    Args:
        x: one image (H, W, C) or a batch (N, H, W, C), any range. Not modified.

    Returns:
        uint8 array of the same shape; each image is standardized over all its pixels and channels.

    Example:

    ```python
    picture = deprocess_image(np.random.rand(64, 64, 3) * 255)   # uint8, mean grey 127
    ```
    """
    x = np.asarray(to_numpy(x), dtype=np.float64)
    if x.ndim not in (3, 4):
        raise ValueError(f"Expected an image (H, W, C) or a batch (N, H, W, C), got shape {x.shape}.")
    axes = tuple(range(x.ndim - 3, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5)
    x = np.clip(x * 0.1 + 0.5, 0.0, 1.0) * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)  # truncation, as the seed's astype("uint8")


class FilterVisualizer:
    """Patterns that maximize filters of a layer, by gradient ascent on the input (seeds 000 and 004).

    For filter `f`, the loss of its image is the mean of `activation[..., f]` over the layer's output
    without `border` pixels on each side (edge pixels see the padding, not the image), minus the optional
    penalties. Each step adds `step_size` times the gradient divided by its root mean square (+1e-5), per
    image, as in seed 004. The start is seed 004's grey image with noise, `128 + 20 * uniform` on the
    0..255 scale, mapped to `value_range`. A filter that is zero on the whole start image (a ReLU that
    grey does not open) has a zero gradient, so its pattern stays the start noise, as in the seed.

    Every requested filter is optimized in one batch (image i ascends filter i), chunked by `batch_size`,
    with one compiled step reused for every step and chunk. Each image's loss depends only on its own
    image and filter, its noise is drawn from `(seed, filter)` and the jitter shifts from `seed` alone, so a
    filter's pattern does not depend on which other filters share its batch. Nothing touches numpy's
    global random state, Keras' global seed, or the model's weights.

    For a layer whose output is (N, units) (a Dense layer, class scores), the loss is the unit's value:
    class visualization. When that layer ends in softmax or sigmoid, its pre-activation (the logit) is
    maximized (`use_logits=True`; the layer is patched only during a call).

    Args:
        model: any Keras 3 model with one image input (N, H, W, C), channels last: Sequential,
            Functional, subclassed, with nested models.
        layer: the layer whose filters are visualized: a name (found at any depth), an `"outer/inner"` path,
            a `keras.layers.Layer` of the model, or `None` for the last spatial layer.
        value_range: `(low, high)` of the inputs the model expects, e.g. `(0, 1)` (default), `(0, 255)`
            (raw pixels, as seed 004 feeds VGG16), `(-1, 1)` (MobileNet, ResNetV2) or `(-128, 128)`
            (VGG16's "caffe" preprocessing, where grey is 0). The start image and the default step are
            scaled to it.
        use_logits: maximize the pre-activation of a layer ending in softmax/sigmoid.

    Example:

    ```python
    import keras, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(8, 3, activation="relu", name="conv")])
    viz = kc.FilterVisualizer(model, "conv")
    patterns = viz.visualize(filters=[0, 1, 2], steps=20)   # uint8 (3, 32, 32, 3)
    mosaic = viz.grid(filters=range(8))                     # uint8 3x3 mosaic with 5 px margins
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        layer: capture.LayerSpec = None,
        value_range: Tuple[float, float] = (0.0, 1.0),
        use_logits: bool = True,
    ) -> None:
        self.layer_ref = _resolve_layer(model, layer)
        self.model = model
        self.input_shape = _model_input_shape(model)
        try:
            low, high = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ValueError(f"`value_range` must be (low, high), got {value_range!r}.") from None
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"`value_range` must be finite with low < high, got {value_range!r}.")
        self.value_range = (low, high)
        self.use_logits = bool(use_logits)
        self._seam = seam.get()
        self._steps: Dict[tuple, Callable] = {}
        self._probes: Dict[Tuple[int, int], Tuple[int, ...]] = {}

    @property
    def layer(self) -> keras.layers.Layer:
        return self.layer_ref.layer

    # -- public API ------------------------------------------------------------------------------------------

    def num_filters(self, size: Size = None) -> int:
        """Number of filters (channels, or units) of the layer's output."""
        shape = capture.static_output_shape(self.layer)
        if shape is not None and shape[-1] is not None:
            return int(shape[-1])
        return self._probe(self._resolve_size(size))[-1]

    def check_filters(self, filters: Any, size: Size = None) -> List[int]:
        """Validates filter indices (a sequence of ints) and returns them as a list.

        Raises `ValueError` for an empty selection, a non-integer or an index out of range.
        """
        message = f"`filters` must be a sequence of filter indices such as [3] or range(16), got {filters!r}."
        if isinstance(filters, (int, np.integer, str, bytes)):
            raise ValueError(message)
        try:
            values = list(filters)
        except TypeError:
            raise ValueError(message) from None
        if not values:
            raise ValueError("`filters` is empty; pass at least one filter index.")
        bad = [v for v in values if not isinstance(v, (int, np.integer)) or isinstance(v, bool)]
        if bad:
            raise ValueError(f"Filter indices must be integers, got {bad[:3]!r}.")
        n = self.num_filters(size)
        out = [int(v) for v in values if not 0 <= int(v) < n]
        if out:
            raise ValueError(
                f"Filter index {out[0]} is out of range: layer '{self.layer_ref.path}' has {n} filters "
                f"(indices 0 to {n - 1})."
            )
        return [int(v) for v in values]

    def optimize(
        self,
        filters: Optional[Iterable[int]] = None,
        size: Size = None,
        steps: int = 30,
        step_size: Optional[float] = None,
        seed: int = 0,
        batch_size: Optional[int] = None,
        jitter: int = 2,
        tv_weight: float = 0.0,
        l2_weight: float = 0.0,
        octaves: int = 1,
        octave_scale: float = 1.5,
        border: int = 2,
        verbose: int = 0,
    ) -> np.ndarray:
        """The optimized input images before `deprocess_image`, in the model's `value_range` scale.

        Args: as for `visualize`.

        Returns:
            float32 (N, H, W, C), C the model's input channels. `steps=0` returns the start images.
        """
        opts = self._options(steps, step_size, seed, batch_size, jitter, tv_weight, l2_weight, octaves,
                             octave_scale, border, verbose)
        hw = self._resolve_size(size)
        filters = self.check_filters(range(self.num_filters(hw)) if filters is None else filters, hw)
        self._check_border(hw, opts["border"])
        channels = self._channels()
        sizes = self._octave_sizes(hw, opts["octaves"], opts["octave_scale"])
        count, bs = _even_chunks(len(filters), opts["batch_size"] or self._default_batch_size(hw, channels))
        progbar = (keras.utils.Progbar(count * opts["steps"] * len(sizes), stateful_metrics=["loss"])
                   if opts["verbose"] else None)
        # The jitter depends on the seed alone (shared by every filter), the start noise on (seed, filter):
        # a filter's pattern does not depend on the other filters of its batch.
        shifts = [np.random.default_rng([opts["seed"], 0, octave])
                  .integers(-opts["jitter"], opts["jitter"] + 1, (opts["steps"], 2)).astype(np.int32)
                  for octave in range(len(sizes))]
        results = []
        for c in range(count):
            chunk = _pad_rows(np.asarray(filters[c * bs: (c + 1) * bs], np.int32), bs)
            start = np.stack([self._start_image(opts["seed"], int(f), sizes[0], channels) for f in chunk])
            images = self._ascend(start, chunk, hw, sizes, shifts, opts, progbar)
            results.append(images[: min(bs, len(filters) - c * bs)])
        return np.concatenate(results).astype(np.float32)

    def visualize(
        self,
        filters: Optional[Iterable[int]] = None,
        size: Size = None,
        steps: int = 30,
        step_size: Optional[float] = None,
        seed: int = 0,
        batch_size: Optional[int] = None,
        jitter: int = 2,
        tv_weight: float = 0.0,
        l2_weight: float = 0.0,
        octaves: int = 1,
        octave_scale: float = 1.5,
        border: int = 2,
        verbose: int = 0,
    ) -> np.ndarray:
        """Patterns that maximize the given filters, as pictures (seed 004).

        Args:
            filters: filter indices (or unit / class indices for a rank-2 output); `None` for all filters.
            size: pattern size, an int or `(height, width)`. `None`: the model's input size when it is fixed,
                else 64. A model with a fixed input size accepts only that size.
            steps: gradient ascent steps (per octave).
            step_size: step in input units, applied to the RMS-normalized gradient. `None`: 1/255 of the
                value range, seed 004's `step = 1.` on the 0..255 scale.
            seed: seeds the start noise (per filter) and the jitter; same seed, same patterns.
            batch_size: images optimized together (memory bound). `None`: about 2M input values per batch
                (all 64 filters of a 64x64 grid at once). Results do not depend on it.
            jitter: each step rolls the image by a random shift of up to `jitter` pixels in y and x (and
                rolls the gradient back), which keeps patterns from locking onto pixel positions. 0: off.
            tv_weight: weight of a total variation penalty (mean squared difference of neighbouring
                pixels) subtracted from the loss; favours smooth patterns. 0: off.
            l2_weight: weight of an L2 penalty on the distance to mid-grey; bounds contrast. 0: off.
            octaves: > 1 optimizes at `octaves` scales, coarse to fine (each `octave_scale` times larger,
                the last at `size`): a coarse image is upsampled (bilinear) before the model sees it, so
                large structures form first. 1: off.
            octave_scale: size ratio between octaves.
            border: layer-output pixels left out of the loss on each side (they see the padding).
            verbose: 1 shows a `keras.utils.Progbar` with the mean loss; 0 is silent.

        Returns:
            uint8 (N, H, W, 3) (a 1-channel model's patterns as grey RGB), deprocessed per image as
            seed 004's `deprocess_image`.
        """
        raw = self.optimize(filters, size, steps=steps, step_size=step_size, seed=seed, batch_size=batch_size,
                            jitter=jitter, tv_weight=tv_weight, l2_weight=l2_weight, octaves=octaves,
                            octave_scale=octave_scale, border=border, verbose=verbose)
        images = deprocess_image(raw)
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images

    def grid(
        self,
        filters: Optional[Iterable[int]] = None,
        size: Size = None,
        cols: Optional[int] = None,
        margin: int = 5,
        **kwargs: Any,
    ) -> np.ndarray:
        """Seed 004's mosaic: the patterns of `filters` tiled with `margin` px between tiles.

        Args:
            filters: filter indices; `None`: the first 64 (an 8x8 grid), or all when the layer has fewer.
            size: tile size, as for `visualize` (`None`: the model's fixed input size, else 64).
            cols: tiles per row (default: ceil(sqrt(N)), 8 for 64 filters).
            margin: pixels between tiles (black).
            **kwargs: passed to `visualize` (`steps`, `seed`, `step_size`, `jitter`, ...).

        Returns:
            uint8 mosaic (rows * H + (rows - 1) * margin, cols * W + (cols - 1) * margin, 3).
        """
        if filters is None:
            filters = range(min(64, self.num_filters(size)))
        return visualize.image_grid(self.visualize(filters, size, **kwargs), cols=cols, margin=margin)

    # -- the ascent ------------------------------------------------------------------------------------------

    def _ascend(self, start: np.ndarray, chunk: np.ndarray, hw: Tuple[int, int], sizes: List[Tuple[int, int]],
                shifts: List[np.ndarray], opts: Dict[str, Any],
                progbar: Optional[keras.utils.Progbar]) -> np.ndarray:
        """Runs every octave's steps on one chunk; returns its images at `hw` (float32, model scale)."""
        ops = keras.ops
        index = ops.convert_to_tensor(chunk)
        scalars = [ops.convert_to_tensor(np.float32(v)) for v in
                   (opts["step_size"], opts["tv_weight"], opts["l2_weight"])]
        image = ops.convert_to_tensor(start)
        for k, octave in enumerate(sizes):
            if k:  # the next octave starts from the upsampled result of the previous one
                image = ops.image.resize(image, octave, interpolation="bilinear", antialias=False,
                                         data_format="channels_last")
            step = self._step_fn(tuple(image.shape), hw, opts["border"])
            for t in range(opts["steps"]):
                image, loss = step(image, index, ops.convert_to_tensor(shifts[k][t]), *scalars)
                if progbar is not None:
                    progbar.add(1, [("loss", float(np.mean(to_numpy(ops.convert_to_numpy(loss)))))])
        return to_numpy(ops.convert_to_numpy(image))

    def _step_fn(self, shape: Tuple[int, ...], hw: Tuple[int, int], border: int) -> Callable:
        """The compiled step for one batch shape: (image, index, shift, step, tv, l2) -> (image, loss)."""
        key = (shape, hw, border)
        fn = self._steps.get(key)
        if fn is None:
            fn = self._seam.compile(self._make_step(shape, hw, border), self.model)
            self._steps[key] = fn
        return fn

    def _make_step(self, shape: Tuple[int, ...], hw: Tuple[int, int], border: int) -> Callable:
        ops = keras.ops
        upsample = tuple(shape[1:3]) != tuple(hw)
        mid = sum(self.value_range) / 2.0

        def step(image, index, shift, step_size, tv_weight, l2_weight):
            def loss_fn(model, z):
                x = (ops.image.resize(z, hw, interpolation="bilinear", antialias=False, data_format="channels_last")
                     if upsample else z)
                with self._logits_scope():
                    a = _forward_to(model, self.layer, x)
                loss = _filter_score(a, index, border)
                # Penalties are mean squares per image, on the image the model sees.
                tv = (ops.mean(ops.square(x[:, 1:] - x[:, :-1]), axis=(1, 2, 3))
                      + ops.mean(ops.square(x[:, :, 1:] - x[:, :, :-1]), axis=(1, 2, 3)))
                l2 = ops.mean(ops.square(x - mid), axis=(1, 2, 3))
                return loss - tv_weight * tv - l2_weight * l2

            # The gradient is taken at the jittered image and rolled back onto the image being optimized.
            loss, grads = self._seam.input_grads(self.model, _jitter(image, shift), loss_fn)
            grads = _jitter(ops.cast(grads, "float32"), -shift)
            rms = ops.sqrt(ops.mean(ops.square(grads), axis=(1, 2, 3), keepdims=True))
            return image + step_size * grads / (rms + _GRAD_EPS), loss

        return step

    def _logits_scope(self):
        if not self.use_logits:
            return contextlib.nullcontext()
        return capture.logits(self.model, [self.layer])  # a no-op unless the layer ends in softmax/sigmoid

    # -- sizes, starts, checks -------------------------------------------------------------------------------

    def _channels(self) -> int:
        if self.input_shape is not None and self.input_shape[-1] is not None:
            return int(self.input_shape[-1])
        return 3

    def _resolve_size(self, size: Size) -> Tuple[int, int]:
        fixed = self.input_shape[:2] if self.input_shape is not None else (None, None)
        if size is None:
            hw = tuple(DEFAULT_SIZE if d is None else int(d) for d in fixed)
        else:
            pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
            if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                         for v in pair):
                raise ValueError(f"`size` must be an int or (height, width), got {size!r}.")
            hw = (int(pair[0]), int(pair[1]))
            if min(hw) < 1:
                raise ValueError(f"`size` must be positive, got {size!r}.")
            for got, want in zip(hw, fixed):
                if want is not None and got != want:
                    raise ValueError(
                        f"Model '{self.model.name}' has a fixed input size {fixed[0]}x{fixed[1]}, so "
                        f"patterns have that size; got size={size!r}. Pass size=None, or build the model "
                        "with keras.Input((None, None, channels)) to optimize other sizes."
                    )
        return hw  # type: ignore[return-value]

    def _probe(self, hw: Tuple[int, int]) -> Tuple[int, ...]:
        """The layer's output shape for one image of size `hw` (one forward pass, cached)."""
        if hw in self._probes:
            return self._probes[hw]
        x = keras.ops.zeros((1, hw[0], hw[1], self._channels()), "float32")
        try:
            with self._logits_scope():
                a = _forward_to(self.model, self.layer, x)
        except _CaptureError:
            raise
        except Exception as e:  # backends raise their own errors for shapes that shrink below one pixel
            if self._is_fixed(hw):
                raise  # the model's own input size: not a size problem
            raise self._too_small(hw, e) from None
        shape = tuple(int(d) for d in a.shape)
        if len(shape) < 2 or any(d < 1 for d in shape):
            raise self._too_small(hw, f"the layer's output shape would be {shape}")
        self._probes[hw] = shape
        return shape

    def _check_border(self, hw: Tuple[int, int], border: int) -> None:
        shape = self._probe(hw)
        if len(shape) > 2 and min(shape[1:-1]) <= 2 * border:
            raise ValueError(
                f"size {hw[0]}x{hw[1]} is too small for layer '{self.layer_ref.path}': its output is "
                f"{'x'.join(str(d) for d in shape[1:-1])} and border={border} on each side leaves nothing "
                "for the loss. Use a larger size or a smaller border."
            )

    def _is_fixed(self, hw: Tuple[int, int]) -> bool:
        return self.input_shape is not None and tuple(self.input_shape[:2]) == tuple(hw)

    def _too_small(self, hw: Tuple[int, int], reason: Any) -> ValueError:
        text = str(reason).strip()
        first = text.splitlines()[0] if text else type(reason).__name__
        return ValueError(
            f"size {hw[0]}x{hw[1]} is too small for model '{self.model.name}' up to layer "
            f"'{self.layer_ref.path}' (running it failed: {first}). Use a larger size."
        )

    def _start_image(self, seed: int, filter_index: int, hw: Tuple[int, int], channels: int) -> np.ndarray:
        """Seed 004's start, `128 + 20 * uniform` on the 0..255 scale, mapped to `value_range`."""
        low, high = self.value_range
        noise = np.random.default_rng([seed, 1, filter_index]).random((hw[0], hw[1], channels))
        return (low + (high - low) * (128.0 + 20.0 * noise) / 255.0).astype(np.float32)

    @staticmethod
    def _octave_sizes(hw: Tuple[int, int], octaves: int, scale: float) -> List[Tuple[int, int]]:
        return [tuple(max(1, round(d / scale ** (octaves - 1 - k))) for d in hw)  # type: ignore[misc]
                for k in range(octaves)]

    @staticmethod
    def _default_batch_size(hw: Tuple[int, int], channels: int) -> int:
        return max(1, _BATCH_VALUES // (hw[0] * hw[1] * channels))

    def _options(self, steps, step_size, seed, batch_size, jitter, tv_weight, l2_weight, octaves,
                 octave_scale, border, verbose) -> Dict[str, Any]:
        """The ascent options, validated; `step_size=None` becomes 1/255 of the value range."""
        def integer(name: str, value: Any, minimum: int) -> int:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
            return int(value)

        def number(name: str, value: Any, minimum: float, strict: bool = False) -> float:
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
            if not math.isfinite(v) or v < minimum or (strict and v == minimum):
                raise ValueError(f"`{name}` must be a finite number {'>' if strict else '>='} {minimum}, "
                                 f"got {value!r}.")
            return v

        low, high = self.value_range
        return {
            "steps": integer("steps", steps, 0),
            "step_size": (high - low) / 255 if step_size is None else number("step_size", step_size, 0, True),
            "seed": integer("seed", seed, 0),
            "batch_size": None if batch_size is None else integer("batch_size", batch_size, 1),
            "jitter": integer("jitter", jitter, 0),
            "tv_weight": number("tv_weight", tv_weight, 0.0),
            "l2_weight": number("l2_weight", l2_weight, 0.0),
            "octaves": integer("octaves", octaves, 1),
            "octave_scale": number("octave_scale", octave_scale, 1.0),
            "border": integer("border", border, 0),
            "verbose": integer("verbose", verbose, 0),
        }


def _filter_score(activations: Any, index: Any, border: int) -> Any:
    """Per image i: mean of activations[i, ..., index[i]] over the interior (rank 2: the unit's value)."""
    ops = keras.ops
    a = ops.cast(activations, "float32")
    spatial = len(a.shape) - 2
    if spatial and border:
        a = a[(slice(None),) + (slice(border, -border),) * spatial]
    # A one-hot product picks image i's own channel, so its loss cannot depend on another image's filter.
    onehot = ops.one_hot(index, a.shape[-1], dtype="float32")
    selected = ops.sum(a * ops.reshape(onehot, (-1,) + (1,) * spatial + (a.shape[-1],)), axis=-1)
    return ops.mean(selected, axis=tuple(range(1, 1 + spatial))) if spatial else selected


# ------------------------------------------------------------------------------------------------------------
# Feature maps and kernels (seed 002)


class FeatureMapExtractor:
    """A layer's output for a batch of images, captured by interception and compiled once per input shape.

    Args:
        model: any Keras 3 model with one image input.
        layer: a name, an `"outer/inner"` path, a `keras.layers.Layer` of the model, or `None` for the last
            spatial layer. Its output must be (N, H, W, C).

    Example:

    ```python
    extractor = FeatureMapExtractor(model, "conv1")
    maps = extractor(images)   # float32 (N, H, W, C)
    ```
    """

    def __init__(self, model: keras.Model, layer: capture.LayerSpec = None) -> None:
        self.layer_ref = _resolve_layer(model, layer)
        self.model = model
        self.input_shape = _model_input_shape(model)
        shape = capture.static_output_shape(self.layer_ref.layer)
        if shape is not None and len(shape) != 4:
            raise self._not_spatial(shape)
        self._seam = seam.get()
        self._fns: Dict[tuple, Callable] = {}

    def check_inputs(self, images: Any) -> np.ndarray:
        """A validated float32 copy (N, H, W, C) of `images`; `ValueError` if they do not fit the model."""
        return as_image_batch(images, self.input_shape)

    def __call__(self, images: Any, batch_size: Optional[int] = None) -> np.ndarray:
        """float32 (N, H, W, C) activations of the layer for `images` (as the model expects them)."""
        images = self.check_inputs(images)
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        count, bs = _even_chunks(len(images), int(batch_size or 32))
        out = []
        for c in range(count):
            chunk = images[c * bs: (c + 1) * bs]
            padded = _pad_rows(chunk, bs)
            maps = self._fn(padded.shape)(keras.ops.convert_to_tensor(padded))
            out.append(to_numpy(keras.ops.convert_to_numpy(maps))[: len(chunk)])
        maps = np.concatenate(out).astype(np.float32)
        if maps.ndim != 4:
            raise self._not_spatial(maps.shape)
        return maps

    def _fn(self, shape: Tuple[int, ...]) -> Callable:
        fn = self._fns.get(shape)
        if fn is None:
            layer = self.layer_ref.layer

            def forward(x):
                return keras.ops.cast(_forward_to(self.model, layer, x), "float32")

            fn = self._fns[shape] = self._seam.compile(forward, self.model)
        return fn

    def _not_spatial(self, shape: Sequence[Any]) -> ValueError:
        return ValueError(
            f"Layer '{self.layer_ref.path}' has output shape {tuple(shape)}; feature maps need a layer with "
            "an (N, H, W, C) output. Pick a convolutional (or pooling, activation, ...) layer."
        )


def feature_maps(model: keras.Model, layer: capture.LayerSpec, images: Any,
                 batch_size: Optional[int] = None) -> np.ndarray:
    """A layer's activations for a batch of images (seed 002's feature maps).

    Args:
        model: any Keras 3 model with one image input (layers inside nested models work).
        layer: a name, an `"outer/inner"` path, a `keras.layers.Layer` of the model, or `None` for the last
            spatial layer.
        images: (N, H, W, C) array as the model expects it. Not modified.
        batch_size: images per compiled call (default 32).

    Returns:
        float32 (N, h, w, C): the layer's output, computed up to that layer only.

    Example:

    ```python
    maps = kc.feature_maps(model, "conv1", images)   # (N, h, w, C)
    picture = kc.feature_map_grid(maps[0])           # one tile per channel
    ```
    """
    return FeatureMapExtractor(model, layer)(images, batch_size=batch_size)


def _grey_tiles(tiles: np.ndarray, colormap: Optional[Union[str, int]]) -> List[np.ndarray]:
    """(K, H, W) values in [0, 1] -> K uint8 RGB tiles, grey or through an OpenCV colormap."""
    tiles_u8 = np.round(np.clip(tiles, 0.0, 1.0) * 255.0).astype(np.uint8)
    if colormap is None:
        return [np.repeat(t[..., None], 3, axis=-1) for t in tiles_u8]
    code = visualize._colormap(colormap)
    return [cv2.cvtColor(cv2.applyColorMap(t, code), cv2.COLOR_BGR2RGB) for t in tiles_u8]


def _upscale(tile: np.ndarray, scale: int) -> np.ndarray:
    return tile if scale == 1 else np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


def _check_scale(scale: Any) -> int:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"`scale` must be an integer >= 1, got {scale!r}.")
    return int(scale)


def feature_map_grid(
    maps: Any,
    cols: Optional[int] = None,
    margin: int = 5,
    colormap: Optional[Union[str, int]] = "magma",
    scale: int = 1,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """One image's feature maps as a mosaic, one tile per channel (seed 002's pictures).

    Each channel is min-max normalized on its own, as `plt.imshow` does in the seed, so its pattern shows
    whatever its scale; a constant channel is black.

    Args:
        maps: (H, W, C) activations of one image, e.g. `feature_maps(...)[0]`.
        cols: tiles per row (default: ceil(sqrt(C))).
        margin: pixels between tiles.
        colormap: an OpenCV colormap name (seed 002 uses "magma") or `None` for grey.
        scale: integer nearest-neighbour upscaling of each tile (small maps are hard to see).
        labels: optional text per channel, drawn at its tile's top-left corner.

    Returns:
        uint8 (rows * H * scale + (rows - 1) * margin, cols * W * scale + (cols - 1) * margin, 3).

    Example:

    ```python
    picture = kc.feature_map_grid(kc.feature_maps(model, "conv1", images)[0], scale=2)
    ```
    """
    maps = np.asarray(to_numpy(maps), np.float32)
    if maps.ndim != 3:
        hint = " Pass one image's maps, e.g. maps[0]." if maps.ndim == 4 else ""
        raise ValueError(f"`maps` must be (H, W, C), got shape {maps.shape}.{hint}")
    if not np.all(np.isfinite(maps)):
        raise ValueError("`maps` contain NaN or infinite values.")
    scale = _check_scale(scale)
    channels = np.moveaxis(maps, -1, 0)
    low = channels.min(axis=(1, 2), keepdims=True)
    span = channels.max(axis=(1, 2), keepdims=True) - low
    normalized = np.where(span > 0, (channels - low) / np.where(span > 0, span, 1.0), 0.0)
    tiles = [_upscale(t, scale) for t in _grey_tiles(normalized, colormap)]
    return visualize.image_grid(tiles, cols=cols, margin=margin, labels=labels)


def kernel_grid(
    layer: keras.layers.Layer,
    cols: Optional[int] = None,
    margin: int = 2,
    scale: Optional[int] = None,
    per_input: bool = False,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """A conv layer's kernels as a mosaic (seed 002's kernel pictures).

    Each tile is normalized symmetrically, `0.5 + k / (2 max|k|)`, so 0 is mid-grey, positive weights are
    bright and negative ones dark, and the tile's own largest weight reaches black or white.

    - 3 input channels (a first layer on RGB images): one RGB tile per filter.
    - otherwise: one grey tile per filter, the mean over input channels (1 input channel: the kernel
      itself); with `per_input=True`, one tile per (filter, input channel) pair, a row per filter.

    Args:
        layer: a built `keras.layers.Conv2D` (or subclass).
        cols: tiles per row (default: ceil(sqrt(filters)); with `per_input`, the input channels).
        margin: pixels between tiles.
        scale: nearest-neighbour upscaling of each kernel pixel; `None` makes tiles at least 24 px (x8 for
            3x3 kernels).
        per_input: one tile per (filter, input channel) instead of the mean over input channels.
        labels: optional text per tile, drawn at its top-left corner.

    Returns:
        uint8 mosaic (H, W, 3).

    Example:

    ```python
    picture = kc.kernel_grid(model.get_layer("conv1"))
    ```
    """
    if not isinstance(layer, keras.layers.Conv2D):
        if isinstance(layer, str):
            raise ValueError(f"kernel_grid needs a Conv2D layer object; got the string '{layer}'. Pass the "
                             "layer itself, e.g. model.get_layer(name).")
        raise ValueError(f"kernel_grid needs a Conv2D layer; got '{getattr(layer, 'name', layer)}' "
                         f"({type(layer).__name__}).")
    if not layer.built or getattr(layer, "kernel", None) is None:
        raise ValueError(f"Layer '{layer.name}' is not built, so it has no kernels yet; call the model once.")
    kernel = to_numpy(keras.ops.convert_to_numpy(layer.kernel)).astype(np.float32)  # (kh, kw, in, out)
    kh, kw, n_in, n_out = kernel.shape
    scale = max(1, math.ceil(24 / max(kh, kw))) if scale is None else _check_scale(scale)

    def normalized(k: np.ndarray) -> np.ndarray:
        peak = float(np.max(np.abs(k)))
        return 0.5 + k / (2.0 * peak) if peak > 0 else np.full_like(k, 0.5)

    if n_in == 3 and not per_input:
        tiles = [np.round(normalized(kernel[..., o]) * 255.0).astype(np.uint8) for o in range(n_out)]
    elif per_input:
        pairs = [normalized(kernel[:, :, i, o]) for o in range(n_out) for i in range(n_in)]
        tiles = _grey_tiles(np.stack(pairs), None)
        cols = n_in if cols is None else cols
    else:
        tiles = _grey_tiles(np.stack([normalized(kernel[:, :, :, o].mean(-1)) for o in range(n_out)]), None)
    return visualize.image_grid([_upscale(t, scale) for t in tiles], cols=cols, margin=margin, labels=labels)
