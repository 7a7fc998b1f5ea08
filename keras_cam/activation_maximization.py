"""What a filter responds to: the input pattern that maximizes it, found by gradient ascent on the input.

The loss of a pattern is the mean activation of one filter; each step adds the RMS-normalized gradient
(`g / (sqrt(mean(g^2)) + 1e-5)`), starting from a grey image with noise, as the classic keras.io recipe
does. Every requested filter is optimized in one batch (image i ascends filter i) where that recipe runs one
optimization per filter. The layer's output comes from `capture.forward_to`: the layer is intercepted and
the layers behind it are never computed, on any model (docs/architecture.md, "Call interception").
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture
from keras_cam._batching import FunctionCache, chunk_size, run_batched
from keras_cam._inputs import image_input_shape
from keras_cam._validation import check_int, check_number
from keras_cam.visualize import deprocess_image, image_grid

__all__ = ["AscentOptions", "FilterVisualizer"]

Size = Union[None, int, Tuple[int, int]]

#: Pattern size when the model accepts any input size (64 px tiles make a readable 8x8 grid).
DEFAULT_SIZE = 64
#: `batch_size=None` puts this many input values (about 8 MB of float32) in one chunk: ~170 images of
#: 64x64x3, ~13 of 224x224x3.
_BATCH_VALUES = 2**21
_GRAD_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class AscentOptions:
    """How `FilterVisualizer.optimize` / `visualize` ascend; validated when created.

    Attributes:
        steps: gradient ascent steps (per octave).
        step_size: step in input units, applied to the RMS-normalized gradient. `None`: 1/255 of the
            visualizer's value range (a step of 1 on the 0..255 scale).
        seed: seeds the start noise (per filter) and the jitter; same seed, same patterns.
        batch_size: images optimized together (memory bound). `None`: about 2M input values per batch
            (all 64 filters of a 64x64 grid at once). Results do not depend on it.
        jitter: each step rolls the image by a random shift of up to `jitter` pixels in y and x (and
            rolls the gradient back), which keeps patterns from locking onto pixel positions. 0: off.
        tv_weight: weight of a total variation penalty (mean squared difference of neighbouring pixels)
            subtracted from the loss; favours smooth patterns. 0: off.
        l2_weight: weight of an L2 penalty on the distance to mid-grey; bounds contrast. 0: off.
        octaves: > 1 optimizes at `octaves` scales, coarse to fine (each `octave_scale` times larger, the
            last at `size`): a coarse image is upsampled (bilinear) before the model sees it, so large
            structures form first. 1: off.
        octave_scale: size ratio between octaves.
        border: layer-output pixels left out of the loss on each side (they see the padding).
        verbose: 1 shows a `keras.utils.Progbar` with the mean loss; 0 is silent.
    """

    steps: int = 30
    step_size: Optional[float] = None
    seed: int = 0
    batch_size: Optional[int] = None
    jitter: int = 2
    tv_weight: float = 0.0
    l2_weight: float = 0.0
    octaves: int = 1
    octave_scale: float = 1.5
    border: int = 2
    verbose: int = 0

    def __post_init__(self) -> None:
        checked = {
            "steps": check_int("steps", self.steps, 0),
            "step_size": None if self.step_size is None else check_number("step_size", self.step_size, 0, True),
            "seed": check_int("seed", self.seed, 0),
            "batch_size": None if self.batch_size is None else check_int("batch_size", self.batch_size, 1),
            "jitter": check_int("jitter", self.jitter, 0),
            "tv_weight": check_number("tv_weight", self.tv_weight, 0.0),
            "l2_weight": check_number("l2_weight", self.l2_weight, 0.0),
            "octaves": check_int("octaves", self.octaves, 1),
            "octave_scale": check_number("octave_scale", self.octave_scale, 1.0),
            "border": check_int("border", self.border, 0),
            "verbose": check_int("verbose", self.verbose, 0),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, options: dict) -> "AscentOptions":
        """Options from keyword arguments; an unknown name is one clear `ValueError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            raise ValueError(f"Unknown ascent option '{unknown[0]}'; the options are {', '.join(names)}.")
        return cls(**options)


class FilterVisualizer:
    """Patterns that maximize filters of a layer, by gradient ascent on the input.

    For filter `f`, the loss of its image is the mean of `activation[..., f]` over the layer's output
    without `border` pixels on each side (edge pixels see the padding, not the image), minus the optional
    penalties. Each step adds `step_size` times the gradient divided by its root mean square (+1e-5), per
    image. The start is a grey image with noise, `128 + 20 * uniform` on the 0..255 scale, mapped to
    `value_range`. A filter that is zero on the whole start image (a ReLU that grey does not open) has a
    zero gradient, so its pattern stays the start noise.

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
            (raw pixels), `(-1, 1)` (MobileNet, ResNetV2) or `(-128, 128)` (VGG16's "caffe"
            preprocessing, where grey is 0). The start image and the default step are scaled to it.
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
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
        self.layer_ref = capture.find_layer(model, layer, require_spatial=False)
        self.model = model
        self.input_shape = image_input_shape(model, (2,))
        try:
            low, high = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ValueError(f"`value_range` must be (low, high), got {value_range!r}.") from None
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"`value_range` must be finite with low < high, got {value_range!r}.")
        self.value_range = (low, high)
        self.use_logits = bool(use_logits)
        self._seam = seam.get()
        self._steps = FunctionCache()
        self._probes: dict = {}

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

    def optimize(self, filters: Optional[Iterable[int]] = None, size: Size = None, **options: Any) -> np.ndarray:
        """The optimized input images before `deprocess_image`, in the model's `value_range` scale.

        Args:
            filters, size: as for `visualize`.
            **options: the fields of `AscentOptions` (`steps`, `step_size`, `seed`, `batch_size`, `jitter`,
                `tv_weight`, `l2_weight`, `octaves`, `octave_scale`, `border`, `verbose`).

        Returns:
            float32 (N, H, W, C), C the model's input channels. `steps=0` returns the start images.
        """
        opts = AscentOptions.of(options)
        hw = self._resolve_size(size)
        filters = self.check_filters(range(self.num_filters(hw)) if filters is None else filters, hw)
        self._check_border(hw, opts.border)
        channels = self._channels()
        sizes = self._octave_sizes(hw, opts.octaves, opts.octave_scale)
        rows = chunk_size(len(filters), opts.batch_size or max(1, _BATCH_VALUES // (hw[0] * hw[1] * channels)),
                          even=True)
        progbar = (keras.utils.Progbar(math.ceil(len(filters) / rows) * opts.steps * len(sizes),
                                       stateful_metrics=["loss"]) if opts.verbose else None)
        # The jitter depends on the seed alone (shared by every filter), the start noise on (seed, filter):
        # a filter's pattern does not depend on the other filters of its batch.
        shifts = [np.random.default_rng([opts.seed, 0, octave])
                  .integers(-opts.jitter, opts.jitter + 1, (opts.steps, 2)).astype(np.int32)
                  for octave in range(len(sizes))]

        def ascend(chunk: np.ndarray) -> np.ndarray:
            start = np.stack([self._start_image(opts.seed, int(f), sizes[0], channels) for f in chunk])
            return self._ascend(start, chunk, hw, sizes, shifts, opts, progbar)

        (images,) = run_batched(ascend, [np.asarray(filters, np.int32)], rows)
        return images.astype(np.float32)

    def visualize(self, filters: Optional[Iterable[int]] = None, size: Size = None, **options: Any) -> np.ndarray:
        """Patterns that maximize the given filters, as pictures.

        Args:
            filters: filter indices (or unit / class indices for a rank-2 output); `None` for all filters.
            size: pattern size, an int or `(height, width)`. `None`: the model's input size when it is fixed,
                else 64. A model with a fixed input size accepts only that size.
            **options: how to ascend, the fields of `AscentOptions`: `steps` (default 30), `step_size`,
                `seed` (0), `batch_size`, `jitter` (2), `tv_weight`, `l2_weight`, `octaves` (1),
                `octave_scale` (1.5), `border` (2), `verbose` (0).

        Returns:
            uint8 (N, H, W, 3) (a 1-channel model's patterns as grey RGB), each deprocessed with
            `deprocess_image`.
        """
        images = deprocess_image(self.optimize(filters, size, **options))
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images

    def grid(
        self,
        filters: Optional[Iterable[int]] = None,
        size: Size = None,
        cols: Optional[int] = None,
        margin: int = 5,
        **options: Any,
    ) -> np.ndarray:
        """The patterns of `filters` tiled into one mosaic with `margin` px between tiles.

        Args:
            filters: filter indices; `None`: the first 64 (an 8x8 grid), or all when the layer has fewer.
            size: tile size, as for `visualize` (`None`: the model's fixed input size, else 64).
            cols: tiles per row (default: ceil(sqrt(N)), 8 for 64 filters).
            margin: pixels between tiles (black).
            **options: `AscentOptions` fields, passed to `visualize` (`steps`, `seed`, `step_size`, ...).

        Returns:
            uint8 mosaic (rows * H + (rows - 1) * margin, cols * W + (cols - 1) * margin, 3).
        """
        if filters is None:
            filters = range(min(64, self.num_filters(size)))
        return image_grid(self.visualize(filters, size, **options), cols=cols, margin=margin)

    # -- the ascent ------------------------------------------------------------------------------------------

    def _ascend(self, start: np.ndarray, chunk: np.ndarray, hw: Tuple[int, int], sizes: List[Tuple[int, int]],
                shifts: List[np.ndarray], opts: AscentOptions, progbar: Optional[keras.utils.Progbar]) -> Any:
        """Runs every octave's steps on one chunk; returns its images at `hw` (float32, model scale)."""
        ops = keras.ops
        index = ops.convert_to_tensor(chunk)
        low, high = self.value_range
        step_size = (high - low) / 255 if opts.step_size is None else opts.step_size
        scalars = [ops.convert_to_tensor(np.float32(v)) for v in (step_size, opts.tv_weight, opts.l2_weight)]
        image = ops.convert_to_tensor(start)
        for k, octave in enumerate(sizes):
            if k:  # the next octave starts from the upsampled result of the previous one
                image = ops.image.resize(image, octave, interpolation="bilinear", antialias=False,
                                         data_format="channels_last")
            key = (tuple(image.shape), hw, opts.border)
            step = self._steps.get(key, lambda: self._seam.compile(self._make_step(key[0], hw, opts.border),
                                                                   self.model))
            for t in range(opts.steps):
                image, loss = step(image, index, ops.convert_to_tensor(shifts[k][t]), *scalars)
                if progbar is not None:
                    progbar.add(1, [("loss", float(np.mean(keras.ops.convert_to_numpy(loss))))])
        return image

    def _make_step(self, shape: Tuple[int, ...], hw: Tuple[int, int], border: int) -> Callable:
        """One compiled step for one batch shape: (image, index, shift, step, tv, l2) -> (image, loss)."""
        ops = keras.ops
        upsample = tuple(shape[1:3]) != tuple(hw)
        mid = sum(self.value_range) / 2.0

        def step(image, index, shift, step_size, tv_weight, l2_weight):
            def loss_fn(model, z):
                x = (ops.image.resize(z, hw, interpolation="bilinear", antialias=False, data_format="channels_last")
                     if upsample else z)
                with self._logits_scope():
                    a = capture.forward_to(model, self.layer, x)
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
            return tuple(DEFAULT_SIZE if d is None else int(d) for d in fixed)  # type: ignore[return-value]
        pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
            raise ValueError(f"`size` must be an int or (height, width), got {size!r}.")
        hw = (int(pair[0]), int(pair[1]))
        if min(hw) < 1:
            raise ValueError(f"`size` must be positive, got {size!r}.")
        for got, want in zip(hw, fixed):
            if want is not None and got != want:
                raise ValueError(
                    f"Model '{self.model.name}' has a fixed input size {fixed[0]}x{fixed[1]}, so patterns have "
                    f"that size; got size={size!r}. Pass size=None, or build the model with "
                    "keras.Input((None, None, channels)) to optimize other sizes."
                )
        return hw

    def _probe(self, hw: Tuple[int, int]) -> Tuple[int, ...]:
        """The layer's output shape for one image of size `hw` (one forward pass, cached)."""
        if hw in self._probes:
            return self._probes[hw]
        x = keras.ops.zeros((1, hw[0], hw[1], self._channels()), "float32")
        try:
            with self._logits_scope():
                a = capture.forward_to(self.model, self.layer, x)
        except capture.CaptureError:
            raise
        except Exception as e:  # backends raise their own errors for shapes that shrink below one pixel
            if self.input_shape is not None and tuple(self.input_shape[:2]) == tuple(hw):
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

    def _too_small(self, hw: Tuple[int, int], reason: Any) -> ValueError:
        text = str(reason).strip()
        first = text.splitlines()[0] if text else type(reason).__name__
        return ValueError(
            f"size {hw[0]}x{hw[1]} is too small for model '{self.model.name}' up to layer "
            f"'{self.layer_ref.path}' (running it failed: {first}). Use a larger size."
        )

    def _start_image(self, seed: int, filter_index: int, hw: Tuple[int, int], channels: int) -> np.ndarray:
        """The grey start, `128 + 20 * uniform` on the 0..255 scale, mapped to `value_range`."""
        low, high = self.value_range
        noise = np.random.default_rng([seed, 1, filter_index]).random((hw[0], hw[1], channels))
        return (low + (high - low) * (128.0 + 20.0 * noise) / 255.0).astype(np.float32)

    @staticmethod
    def _octave_sizes(hw: Tuple[int, int], octaves: int, scale: float) -> List[Tuple[int, int]]:
        return [tuple(max(1, round(d / scale ** (octaves - 1 - k))) for d in hw)  # type: ignore[misc]
                for k in range(octaves)]


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


def _roll(x: Any, shift: Any, axis: int) -> Any:
    """`roll` by a shift that is a tensor (a gather: `torch.roll` needs Python ints)."""
    n = x.shape[axis]
    index = keras.ops.mod(keras.ops.arange(n, dtype="int32") - shift + n, n)
    return keras.ops.take(x, index, axis=axis)


def _jitter(x: Any, shift: Any) -> Any:
    """Rolls images (N, H, W, C) by shift = (dy, dx); shapes stay fixed, so one compiled step serves all."""
    return _roll(_roll(x, shift[0], axis=1), shift[1], axis=2)
