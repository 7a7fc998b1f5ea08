"""`FilterVisualizer`: the input pattern that maximizes a filter, found by gradient ascent on the input.

Each step decodes the patterns from their parameters (pixels, or a 1/f-scaled spectrum: `parameterization`),
moves them by the random transform drawn for that step (`transforms`), runs the model up to the layer
(`capture.forward_to`: the layers behind it are never computed) and updates the parameters along the
gradient of the objective (`objectives`) minus optional penalties. Every requested filter is optimized in
one batch (image i ascends filter i), with one compiled step per batch shape.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture, layout
from keras_cam._batching import FunctionCache, chunk_size, run_batched
from keras_cam.activation_maximization.objectives import Channel, Objective
from keras_cam.activation_maximization.options import AscentOptions
from keras_cam.activation_maximization.parameterization import make_param
from keras_cam.activation_maximization.transforms import resample, sample_matrix
from keras_cam.visualize import deprocess_image, image_grid, to_uint8

__all__ = ["AscentOptions", "FilterVisualizer"]

Size = Union[None, int, Tuple[int, int]]

#: Pattern size when the model accepts any input size (64 px tiles make a readable 8x8 grid).
DEFAULT_SIZE = 64
#: `batch_size=None` puts this many input values (about 8 MB of float32) in one chunk: ~170 images of
#: 64x64x3, ~13 of 224x224x3.
_BATCH_VALUES = 2**21


#: The largest pattern `visualize` optimizes: 4096 x 4096 pixels.
MAX_PATTERN_PIXELS = 4096 * 4096


class FilterVisualizer:
    """Patterns that maximize filters of a layer, by gradient ascent on the input.

    Each pattern is decoded from its parameters (`param`): by default a spectrum scaled by 1/frequency in a
    decorrelated colour basis, through a sigmoid into `value_range`, optimized with Adam, so the ascent
    favours the statistics of natural images; or, with `param="pixel"`, the pixels themselves, starting
    from grey with noise, each step adding `step_size` times the gradient divided by its root mean square.
    Each step moves the patterns by a random shift, zoom and rotation (`transforms`) before the model sees
    them, so a pattern must work wherever it appears. The objective is by default the mean of
    `activation[..., f]` over the layer's output without `border` pixels on each side (edge pixels see the
    padding, not the image); `objective=` takes a neuron, a direction, weighted sums and several diverse
    patterns per filter (`keras_cam.activation_maximization.objectives`). A filter that is zero on the whole
    start image (a ReLU that grey does not open) has a zero gradient, so its pattern stays the start.

    Every requested filter is optimized in one batch (image i ascends filter i), chunked by `batch_size`,
    with one compiled step reused for every step and chunk. Each pattern's loss depends only on its own
    image and filter, its start is drawn from `(seed, filter)` and the transforms from `seed` alone, so a
    filter's pattern does not depend on which other filters share its batch (`Diversity`'s patterns of one
    filter are always batched together). Nothing touches numpy's
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
            preprocessing, where grey is 0). Patterns start at its middle and stay inside it (fourier).
        use_logits: maximize the pre-activation of a layer ending in softmax/sigmoid.

    Example:

    ```python
    import keras, keras_cam as kc
    from keras_cam.activation_maximization import Diversity, Neuron
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(8, 3, activation="relu", name="conv")])
    viz = kc.FilterVisualizer(model, "conv")
    patterns = viz.visualize(filters=[0, 1, 2], steps=20)   # uint8 (3, 32, 32, 3)
    mosaic = viz.grid(filters=range(8))                     # uint8 3x3 mosaic with 5 px margins
    old = viz.visualize(filters=[0], param="pixel", transforms=())   # the keras.io recipe
    four = viz.visualize(filters=[0], objective=Diversity(4))       # 4 different patterns of filter 0
    unit = viz.visualize(filters=[0], objective=Neuron())           # the centre unit of filter 0
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
        shape = capture.input_shape(model)
        # Patterns are channels_last images of a channels_last layer (one after a Permute is refused too).
        layer_first = self.layer_ref.channels_first or layout.data_format(self.layer_ref.layer) == "channels_first"
        if shape is not None and (len(shape) != 3 or capture.input_layout(model, 4).channels_first or layer_first):
            order = " (channels first)" if len(shape) == 3 else ""
            raise ValueError(
                f"Model '{model.name}' takes inputs of shape {(None,) + tuple(shape)}{order}; FilterVisualizer "
                "optimizes channels_last images (N, H, W, C) only. Feature maps (kc.feature_maps) and every "
                "explainer work on signals, volumes and channels_first models too."
            )
        self.input_shape = shape
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
        return self._check_indices(filters, self.num_filters(size), "filters")

    def optimize(self, filters: Optional[Iterable[int]] = None, size: Size = None,
                 **options: Any) -> np.ndarray:
        """The optimized input images, in the model's `value_range` scale (before conversion to pictures).

        Args:
            filters, size: as for `visualize`.
            **options: the fields of `AscentOptions` (`steps`, `step_size`, `seed`, `batch_size`, `param`,
                `transforms`, `objective`, `jitter`, `total_variation`, `l2`, `octaves`, `octave_scale`,
                `border`, `verbose`; `tv_weight` and `l2_weight` as aliases).

        Returns:
            float32 (N, H, W, C), C the model's input channels; N = len(filters) times the objective's
            patterns per filter (`Diversity(n)`: n, consecutive). `steps=0` returns the start images.
        """
        opts = AscentOptions.of(options)
        hw = self._resolve_size(size)
        objective = Channel() if opts.objective is None else opts.objective
        shape = self._probe(hw)
        objective.check(shape)
        count = objective.count(shape[-1])
        what = "filters" if count == shape[-1] else "directions"
        filters = self._check_indices(range(count) if filters is None else filters, count, what)
        self._check_border(hw, opts.border)
        channels, copies = self._channels(), objective.copies
        sizes = self._octave_sizes(hw, opts.octaves, opts.octave_scale)
        per_chunk = opts.batch_size or max(1, _BATCH_VALUES // (hw[0] * hw[1] * channels))
        rows = copies * chunk_size(len(filters), max(1, per_chunk // copies), even=True)
        chunks = math.ceil(len(filters) * copies / rows)
        progbar = (keras.utils.Progbar(chunks * opts.steps * len(sizes), stateful_metrics=["loss"])
                   if opts.verbose else None)
        # The motion of every step depends on the seed alone (shared by every filter), the start on
        # (seed, filter, copy): a filter's pattern does not depend on the other filters of its batch.
        motions = [self._motions(opts, k, octave) for k, octave in enumerate(sizes)]
        params = [make_param(opts.param, self.value_range, octave, channels) for octave in sizes]

        def ascend(index: np.ndarray, copy: np.ndarray) -> Any:
            start = np.stack([params[0].start(opts.seed, int(f), int(c)) for f, c in zip(index, copy)])
            return self._ascend(start, index, hw, params, motions, opts, objective, progbar)

        index = np.repeat(np.asarray(filters, np.int32), copies)
        copy = np.tile(np.arange(copies, dtype=np.int32), len(filters))
        (images,) = run_batched(ascend, [index, copy], rows)
        return images.astype(np.float32)

    def visualize(self, filters: Optional[Iterable[int]] = None, size: Size = None,
                  **options: Any) -> np.ndarray:
        """Patterns that maximize the given filters, as pictures.

        Args:
            filters: filter indices (or unit / class indices for a rank-2 output, or rows of a `Direction`
                objective); `None` for all.
            size: pattern size, an int or `(height, width)`. `None`: the model's input size when it is fixed,
                else 64. A model with a fixed input size accepts only that size.
            **options: how to ascend, the fields of `AscentOptions`: `steps` (default 30), `step_size`,
                `seed` (0), `batch_size`, `param` ("fourier"), `transforms` ("default"), `objective` (None:
                the channel's mean), `jitter` (2), `total_variation` (0), `l2` (0), `octaves` (1),
                `octave_scale` (1.5), `border` (2), `verbose` (0).

        Returns:
            uint8 (N, H, W, 3) (a 1-channel model's patterns as grey RGB). Fourier patterns lie in the
            value range, which maps linearly to 0..255; pixel patterns are unbounded and go through
            `deprocess_image` (standardized, as the keras.io recipe shows them).
        """
        images = self.optimize(filters, size, **options)
        if options.get("param", AscentOptions.param) == "pixel":
            pictures = deprocess_image(images)
        else:
            low, high = self.value_range
            pictures = to_uint8(np.clip((images - low) / (high - low), 0.0, 1.0))
        return np.repeat(pictures, 3, axis=-1) if pictures.shape[-1] == 1 else pictures

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
            cols: tiles per row (default: ceil(sqrt(N)), 8 for 64 filters; with `Diversity(n)`, n: one row
                per filter).
            margin: pixels between tiles (black).
            **options: `AscentOptions` fields, passed to `visualize` (`steps`, `seed`, `param`, ...).

        Returns:
            uint8 mosaic (rows * H + (rows - 1) * margin, cols * W + (cols - 1) * margin, 3).
        """
        if filters is None:
            filters = range(min(64, self.num_filters(size)))
        objective = options.get("objective")
        if cols is None and isinstance(objective, Objective) and objective.copies > 1:
            cols = objective.copies
        return image_grid(self.visualize(filters, size, **options), cols=cols, margin=margin)

    # -- the ascent ------------------------------------------------------------------------------------------

    def _motions(self, opts: AscentOptions, octave: int, hw: Tuple[int, int]) -> np.ndarray:
        """Per step: the whole-pixel shift (steps, 2) int32, or with transforms the (steps, 2, 3) matrix."""
        shifts = (np.random.default_rng([opts.seed, 0, octave])
                  .integers(-opts.jitter, opts.jitter + 1, (opts.steps, 2)).astype(np.int32))
        if not opts.transforms:
            return shifts
        rng = np.random.default_rng([opts.seed, 2, octave])
        matrices = [sample_matrix(opts.transforms, rng, hw, shift) for shift in shifts]
        return np.asarray(matrices, np.float32).reshape(-1, 2, 3)

    def _ascend(self, start: np.ndarray, index: np.ndarray, hw: Tuple[int, int], params: List[Any],
                motions: List[np.ndarray], opts: AscentOptions, objective: Objective,
                progbar: Optional[keras.utils.Progbar]) -> Any:
        """Runs every octave's steps on one chunk; returns its images at `hw` (float32, model scale)."""
        ops = keras.ops
        index = ops.convert_to_tensor(index)
        step_size = params[0].default_step_size if opts.step_size is None else opts.step_size
        scalars = [ops.convert_to_tensor(np.float32(v)) for v in (step_size, opts.total_variation, opts.l2)]
        state = params[0].initial_state(ops.convert_to_tensor(start))
        # What the step's trace depends on, besides shapes: a penalty of weight 0 is left out of it.
        flags = (bool(opts.transforms), opts.total_variation > 0, opts.l2 > 0)
        for k, param in enumerate(params):
            if k:  # the next octave (pixels only) starts from the upsampled result of the previous one
                state = param.initial_state(ops.image.resize(state[0], param.hw, interpolation="bilinear",
                                                             antialias=False, data_format="channels_last"))
            key = (param.name, tuple(state[0].shape), param.hw, hw, opts.border, objective, flags)
            step = self._steps.get(key, lambda: self._seam.compile(
                self._make_step(param, hw, opts.border, objective, *flags), self.model))
            for t in range(opts.steps):
                state, loss = step(state, index, ops.convert_to_tensor(motions[k][t]),
                                   ops.convert_to_tensor(np.float32(t + 1)), *scalars)
                if progbar is not None:
                    progbar.add(1, [("loss", float(np.mean(keras.ops.convert_to_numpy(loss))))])
        return params[-1].decode(state[0])

    def _make_step(self, param: Any, hw: Tuple[int, int], border: int, objective: Objective, moving: bool,
                   use_tv: bool, use_l2: bool) -> Callable:
        """One step for one batch shape: (state, index, motion, t, step, tv, l2) -> (state, loss)."""
        ops = keras.ops
        upsample = tuple(param.hw) != tuple(hw)
        mid = sum(self.value_range) / 2.0

        def step(state, index, motion, t, step_size, tv_weight, l2_weight):
            def loss_fn(model, p):
                x = param.decode(p)
                # The model sees the pattern moved by this step's motion; the gradient flows back through
                # the (linear) resampling onto the pattern's own coordinates.
                x = resample(x, motion) if moving else _jitter(x, motion)
                if upsample:
                    x = ops.image.resize(x, hw, interpolation="bilinear", antialias=False,
                                         data_format="channels_last")
                with self._logits_scope():
                    a = capture.forward_to(model, self.layer, x)
                loss = objective(a, index, border)
                # Penalties are mean squares per image, on the image the model sees.
                if use_tv:
                    tv = (ops.mean(ops.square(x[:, 1:] - x[:, :-1]), axis=(1, 2, 3))
                          + ops.mean(ops.square(x[:, :, 1:] - x[:, :, :-1]), axis=(1, 2, 3)))
                    loss = loss - tv_weight * tv
                if use_l2:
                    loss = loss - l2_weight * ops.mean(ops.square(x - mid), axis=(1, 2, 3))
                return loss

            loss, grads = self._seam.input_grads(self.model, state[0], loss_fn)
            return tuple(param.update(state, ops.cast(grads, "float32"), t, step_size)), loss

        return step

    def _logits_scope(self):
        if not self.use_logits:
            return contextlib.nullcontext()
        return capture.logits(self.model, [self.layer])  # a no-op unless the layer ends in softmax/sigmoid

    # -- sizes, starts, checks -------------------------------------------------------------------------------

    def _check_indices(self, filters: Any, n: int, what: str) -> List[int]:
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
        out = [int(v) for v in values if not 0 <= int(v) < n]
        if out:
            raise ValueError(
                f"Filter index {out[0]} is out of range: layer '{self.layer_ref.path}' has {n} {what} "
                f"(indices 0 to {n - 1})."
            )
        return [int(v) for v in values]

    def _channels(self) -> int:
        if self.input_shape is not None and self.input_shape[-1] is not None:
            return int(self.input_shape[-1])
        return 3

    def _resolve_size(self, size: Size) -> Tuple[int, int]:
        fixed = self.input_shape[:2] if self.input_shape is not None else (None, None)
        if size is None:
            return tuple(DEFAULT_SIZE if d is None else int(d) for d in fixed)  # type: ignore[return-value]
        pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                     for v in pair):
            raise ValueError(f"`size` must be an int or (height, width), got {size!r}.")
        hw = (int(pair[0]), int(pair[1]))
        if min(hw) < 1:
            raise ValueError(f"`size` must be positive, got {size!r}.")
        if hw[0] * hw[1] > MAX_PATTERN_PIXELS:
            # Refused here: the optimizer would ask for tens of gigabytes and fail in the backend's words.
            raise ValueError(f"`size` {hw[0]}x{hw[1]} is {hw[0] * hw[1]:,} pixels per pattern, above the limit "
                             f"of {MAX_PATTERN_PIXELS:,} (4096x4096). Pass a smaller size; patterns are "
                             "meant to be looked at, 64 to 512 pixels is typical.")
        for got, want in zip(hw, fixed):
            if want is not None and got != want:
                raise ValueError(
                    f"Model '{self.model.name}' has a fixed input size {fixed[0]}x{fixed[1]}, so patterns "
                    f"have that size; got size={size!r}. Pass size=None, or build the model with "
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

    @staticmethod
    def _octave_sizes(hw: Tuple[int, int], octaves: int, scale: float) -> List[Tuple[int, int]]:
        return [tuple(max(1, round(d / scale ** (octaves - 1 - k))) for d in hw)  # type: ignore[misc]
                for k in range(octaves)]


def _roll(x: Any, shift: Any, axis: int) -> Any:
    """`roll` by a shift that is a tensor (a gather: `torch.roll` needs Python ints)."""
    n = x.shape[axis]
    index = keras.ops.mod(keras.ops.arange(n, dtype="int32") - shift + n, n)
    return keras.ops.take(x, index, axis=axis)


def _jitter(x: Any, shift: Any) -> Any:
    """Rolls images (N, H, W, C) by shift = (dy, dx); shapes stay fixed, so one compiled step serves all."""
    return _roll(_roll(x, shift[0], axis=1), shift[1], axis=2)
