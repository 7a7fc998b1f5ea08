"""The shared explainer pipeline: capture, targets, batching, ReLU, upsampling and normalization.

A method is a short subclass that says how it weighs channels (`get_cam_weights`) or, when it is not a
weighted sum of channels, how it builds its map (`compute_cam`). Everything else happens here, once.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture
from keras_cam._validation import as_image_batch, to_numpy
from keras_cam.targets import PREDICTED, Targets, callable_scores, class_scores, resolve_targets

DEFAULT_BATCH_SIZE = 32
_EPS = 1e-7
_RELATIVE_EPS = 1e-5


@dataclass
class Explanation:
    """Heatmaps with the class each one explains and the score it had.

    Attributes:
        heatmaps: float32 (N, H, W), in [0, 1] when normalized.
        targets: int (N,) class index explained per image (-1 when targets was a callable).
        scores: float32 (N,) the target's score (logit when `use_logits`) per image.
    """

    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray


class _Inputs:
    """The user's inputs as a flat list of arrays plus how to rebuild the model's input structure."""

    def __init__(self, arrays: List[np.ndarray], image_index: int, keys: Optional[List[str]], single: bool):
        self.arrays = arrays
        self.image_index = image_index
        self.keys = keys
        self.single = single

    @property
    def n(self) -> int:
        return self.arrays[0].shape[0]

    @property
    def image(self) -> np.ndarray:
        return self.arrays[self.image_index]

    def pack(self, tensors: Sequence[Any]) -> Any:
        if self.single:
            return tensors[0]
        if self.keys is not None:
            return dict(zip(self.keys, tensors))
        return list(tensors)


class BaseCAM:
    """Base class of every explainer: `explainer(images, targets=None)` -> heatmaps (N, H, W) in [0, 1].

    Subclasses override `get_cam_weights(activations, grads, targets) -> (N, C)` (the map is then
    `ReLU(sum_k w_k A_k)`), or `compute_cam(activations, grads, targets) -> (N, h, w)` for other
    constructions. `targets` is the int32 (N,) class index explained per image.
    Set `needs_grads = False` for methods that use activations only.

    Args:
        model: any Keras 3 model: Sequential, Functional, subclassed, with nested models (e.g. a
            `keras.applications` backbone inside a Sequential).
        layer: the layer to explain: `None` (the last layer whose output is rank 4 with H, W > 1,
            searching nested models), a layer name, an `"outer/inner"` path, or a `keras.layers.Layer`.
        use_logits: score classes on the pre-activation outputs when the output layer ends in
            softmax/sigmoid (the model is patched only for the duration of a call).
        input_index: for multi-input models, the position of the image input (default: the rank-4 one).
        input_name: for multi-input models, the name of the image input.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    heatmaps = kc.GradCAM(model)(np.random.rand(2, 32, 32, 3))   # (2, 32, 32) float32 in [0, 1]
    ```
    """

    #: Lower-case name used by `get_explainer` (aliases in `aliases`).
    name: str = "base"
    aliases: Tuple[str, ...] = ()
    needs_grads: bool = True
    #: Where on the layer the activations are taken: its "output" (or its "input", for CAM).
    capture_on: str = "output"
    accepts_callable_targets: bool = True

    def __init__(
        self,
        model: keras.Model,
        layer: capture.LayerSpec = None,
        use_logits: bool = True,
        input_index: Optional[int] = None,
        input_name: Optional[str] = None,
    ) -> None:
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
        self.model = model
        self.layer_ref: Optional[capture.LayerRef] = None
        if layer is not None or capture.graph_tensors(model, "outputs") or capture.spatial_layers(model):
            self.layer_ref = self._find_layer(layer)
        # else: a subclassed model has no graph to read shapes from; `layer=None` is resolved on the first call.
        self.use_logits = bool(use_logits)
        self.input_index = input_index
        self.input_name = input_name
        self._fns: Dict[tuple, Callable] = {}
        self._seam = seam.get()
        self._logit_layers: Optional[list] = None  # found on the first call (subclassed models need a sample)
        self._output_units: Optional[int] = None  # likewise: the size of a single (N, K) output

    # -- what a method says ----------------------------------------------------------------------------------

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        """Channel weights (N, C) from activations and gradients (N, h, w, C) for class indices (N,)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_cam_weights or compute_cam.")

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        """The raw map (N, h, w) before ReLU; default: the weighted sum of channels."""
        weights = self.get_cam_weights(activations, grads, targets)
        return keras.ops.einsum("nhwc,nc->nhw", activations, weights)

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def layer(self) -> keras.layers.Layer:
        return self.layer_ref.layer

    def __call__(self, images: Any, targets: Targets = None) -> np.ndarray:
        return self.explain(images, targets)

    def explain(
        self,
        images: Any,
        targets: Targets = None,
        upsample: bool = True,
        normalize: bool = True,
        batch_size: Optional[int] = None,
    ) -> np.ndarray:
        """Heatmaps for a batch of images.

        Args:
            images: (N, H, W, C) array (float, already preprocessed as the model expects); for multi-input
                models a list or dict of all inputs.
            targets: `None` (predicted class), an int, one int per image, or a callable
                `(outputs) -> (N,)` scores (outputs are logits when `use_logits`).
            upsample: resize maps to the image's H, W (bilinear); otherwise keep the layer's h, w.
            normalize: min-max normalize each map to [0, 1] (an all-zero map stays zero).
            batch_size: images per compiled call (default 32); the last chunk is padded so one compiled
                function serves every chunk.

        Returns:
            float32 array (N, H, W) (or (N, h, w) without upsampling).
        """
        return self.compute(images, targets, upsample, normalize, batch_size).heatmaps

    def compute(
        self,
        images: Any,
        targets: Targets = None,
        upsample: bool = True,
        normalize: bool = True,
        batch_size: Optional[int] = None,
    ) -> Explanation:
        """Like `explain`, but also returns the explained class and its score per image."""
        inputs, resolved = self._prepare_call(images, targets)
        maps, idx, scores = self._run_batches(inputs, resolved, self._batch_size(batch_size, inputs.n),
                                              upsample, normalize)
        return Explanation(maps.astype(np.float32), idx.astype(np.int64), scores.astype(np.float32))

    def explain_labels(
        self,
        images: Any,
        threshold: float = 0.5,
        labels: Optional[Any] = None,
        **kwargs: Any,
    ) -> List[Dict[int, np.ndarray]]:
        """Multi-label models: one heatmap per label present in each image.

        Args:
            images: as for `explain`.
            threshold: a label is present when the model's output (its sigmoid probability) exceeds it.
            labels: optional multi-hot (N, K) array giving the labels to explain instead (e.g. ground truth).
            **kwargs: passed to `explain` (`upsample`, `normalize`, `batch_size`).

        Returns:
            A list with one `{label: heatmap (H, W)}` dict per image (empty when no label is present).
        """
        inputs = self._prepare_inputs(images)
        if labels is None:
            probs = [keras.ops.convert_to_numpy(self.model(inputs.pack([a[i : i + 32] for a in inputs.arrays]),
                                                           training=False))
                     for i in range(0, inputs.n, 32)]
            present = np.concatenate(probs) > threshold
        else:
            present = np.asarray(labels).astype(bool)
            if present.ndim != 2 or present.shape[0] != inputs.n:
                raise ValueError(f"`labels` must be multi-hot (N, K) with N = {inputs.n}, got {present.shape}.")
        rows, cols = np.nonzero(present)
        result: List[Dict[int, np.ndarray]] = [{} for _ in range(inputs.n)]
        if rows.size:
            pairs = inputs.pack([a[rows] for a in inputs.arrays])
            maps = self.explain(pairs, targets=cols, **kwargs)
            for r, c, m in zip(rows, cols, maps):
                result[r][int(c)] = m
        return result

    # -- the pipeline ----------------------------------------------------------------------------------------

    def _run_batches(self, inputs: _Inputs, targets, bs: int, upsample: bool, normalize: bool):
        """Runs the compiled graph over chunks of `bs` images; returns its concatenated outputs."""
        results = []
        for start in range(0, inputs.n, bs):
            stop = min(start + bs, inputs.n)
            chunk = [_pad(a[start:stop], bs) for a in inputs.arrays]
            t = targets if callable(targets) else _pad(targets[start:stop], bs)
            results.append([r[: stop - start] for r in self._run_chunk(inputs, chunk, t, upsample, normalize)])
        return tuple(np.concatenate(parts) for parts in zip(*results))

    def _run_chunk(self, inputs: _Inputs, chunk: List[np.ndarray], targets, upsample: bool, normalize: bool):
        key = (tuple((a.shape, a.dtype.str) for a in chunk), upsample, normalize,
               targets if callable(targets) else None)
        fn = self._fns.get(key)
        if fn is None:
            fn = self._seam.compile(self._graph(inputs, targets, upsample, normalize), self.model)
            self._fns[key] = fn
        index = np.zeros(chunk[0].shape[0], np.int32) - 1 if callable(targets) else targets
        tensors = [keras.ops.convert_to_tensor(a) for a in chunk]
        out = fn(keras.ops.convert_to_tensor(index), *tensors)
        return tuple(to_numpy(keras.ops.convert_to_numpy(o)) for o in out)

    def _graph(self, inputs: _Inputs, targets, upsample: bool, normalize: bool) -> Callable:
        """The function that is compiled: inputs -> (heatmaps, target indices, scores)."""
        size = tuple(inputs.image.shape[1:3])

        def fn(index, *tensors):
            score_fn = self._score_fn(targets, index)
            activations, grads, _, (scores, idx) = self._activations(inputs.pack(tensors), score_fn)
            cam = self._postprocess(self.compute_cam(activations, grads, idx), size, upsample, normalize)
            return cam, idx, scores

        return fn

    def _score_fn(self, targets, index) -> Callable:
        """outputs -> (scores to differentiate, (scores, class indices)) for resolved targets."""

        def score_fn(outputs):
            if callable(targets):
                if not self.accepts_callable_targets:
                    raise ValueError(f"{type(self).__name__} explains class indices: pass `targets` as None, an "
                                     "int or one int per image, not a callable.")
                scores = callable_scores(targets, outputs)
                return scores, (scores, keras.ops.zeros_like(scores, dtype="int32") + PREDICTED)
            # Probabilities only when a sigmoid/softmax is left in place (use_logits=False).
            probabilities = not self.use_logits and bool(self._logit_layers)
            scores, idx = class_scores(outputs, index, probabilities=probabilities)
            return scores, (scores, idx)

        return score_fn

    def _activations(self, model_inputs: Any, score_fn: Callable):
        """(activations, grads or None, outputs, aux) as float32, under the logits patch when asked."""
        with self._logits_scope():
            if self.needs_grads and self.capture_on == "output":
                a, g, outputs, aux = self._seam.activation_grads(self.model, model_inputs, self.layer, score_fn)
            else:
                recorded = {}

                def record(t):
                    recorded["a"] = t
                    return t

                with capture.intercept(self.layer, record, on=self.capture_on):
                    outputs = self.model(model_inputs, training=False)
                _, aux = score_fn(outputs)
                a, g = recorded["a"], None
        if len(a.shape) != 4 or a.shape[1] == 1 and a.shape[2] == 1:
            raise ValueError(
                f"Layer '{self.layer_ref.path}' produced a tensor of shape {tuple(a.shape)} at run time, which "
                "is not a spatial feature map (rank 4 with H, W > 1). Pick a convolutional layer."
            )
        a = keras.ops.cast(a, "float32")
        g = None if g is None else keras.ops.cast(g, "float32")
        return a, g, outputs, aux

    def _prepare_call(self, images: Any, targets: Targets) -> Tuple[_Inputs, Any]:
        """Validated inputs and resolved targets for one call; refuses what would give wrong maps."""
        inputs = self._prepare_inputs(images)
        resolved = resolve_targets(targets, inputs.n, self._num_classes())
        self._resolve_on_first_call(inputs)
        _check_channels_last(self.layer, self.layer_ref.path, self.capture_on)
        if not callable(resolved) and self._output_units == 1 and not self._logit_layers:
            raise ValueError(
                f"Model '{self.model.name}' ends in a single output unit without a sigmoid: that is a regression "
                "output (or a binary classifier's logit), and class targets would read it as a binary "
                "classifier and explain its negation for negative outputs. Pass `targets` as a callable that "
                "scores the output, e.g. targets=lambda out: out[:, 0] (or end a binary classifier in a sigmoid)."
            )
        return inputs, resolved

    def _resolve_on_first_call(self, inputs: _Inputs) -> None:
        """Finds what needs a sample input: the auto layer, the logit layers and the output size of
        subclassed models."""
        if self.layer_ref is not None and self._logit_layers is not None:
            return
        sample = inputs.pack([keras.ops.convert_to_tensor(a[:1]) for a in inputs.arrays])
        if self.layer_ref is None:
            self.layer_ref = self._find_layer(None, sample)
        if self._logit_layers is None:  # also without use_logits: tells whether outputs are probabilities
            self._logit_layers = capture.logit_layers(self.model, sample)
        self._output_units = self._num_classes()
        if self._output_units is None and not capture.graph_tensors(self.model, "outputs"):
            outputs = self.model(sample, training=False)  # a subclassed model: one image, once
            if not isinstance(outputs, (list, tuple, dict)) and len(outputs.shape) == 2:
                self._output_units = int(outputs.shape[-1])

    def _logits_scope(self):
        if not self.use_logits:
            return contextlib.nullcontext()
        return capture.logits(self.model, self._logit_layers)

    @staticmethod
    def _postprocess(cam: Any, size: Tuple[int, int], upsample: bool, normalize: bool) -> Any:
        ops = keras.ops
        cam = ops.relu(ops.cast(cam, "float32"))
        if upsample and tuple(cam.shape[1:3]) != size:
            cam = ops.image.resize(cam[..., None], size, interpolation="bilinear", antialias=False,
                                   data_format="channels_last")[..., 0]
            cam = ops.relu(cam)
        if normalize:
            cam = minmax(cam)
        return cam

    # -- helpers ---------------------------------------------------------------------------------------------

    def _find_layer(self, layer: capture.LayerSpec, sample: Any = None) -> capture.LayerRef:
        return capture.find_layer(self.model, layer, sample=sample)

    def _batch_size(self, batch_size: Optional[int], n: int) -> int:
        if batch_size is None:
            return min(n, DEFAULT_BATCH_SIZE)
        if int(batch_size) < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        return min(n, int(batch_size))

    def _num_classes(self) -> Optional[int]:
        outputs = capture.graph_tensors(self.model, "outputs")
        if len(outputs) == 1 and len(outputs[0].shape) == 2:
            return outputs[0].shape[-1]
        return None

    def _prepare_inputs(self, images: Any) -> _Inputs:
        model_inputs = capture.graph_tensors(self.model, "inputs")
        if len(model_inputs) <= 1 and not isinstance(images, (list, tuple, dict)):
            expected = tuple(model_inputs[0].shape[1:]) if model_inputs else None
            return _Inputs([as_image_batch(images, expected)], 0, None, True)
        if not isinstance(images, (list, tuple, dict)):
            raise ValueError(
                f"Model '{self.model.name}' has {len(model_inputs)} inputs; pass `images` as a list (or dict "
                "by input name) with one array per input. The image input is found by rank (or set "
                "`input_index` / `input_name`)."
            )
        keys = None
        if isinstance(images, dict):
            keys = list(images)
            values = [images[k] for k in keys]
        else:
            values = list(images)
        if model_inputs and len(values) != len(model_inputs):
            raise ValueError(f"Model '{self.model.name}' has {len(model_inputs)} inputs but {len(values)} arrays "
                             "were given.")
        image_index = self._image_input_index(values, keys, model_inputs)
        arrays = []
        for i, v in enumerate(values):
            if i == image_index:
                expected = tuple(model_inputs[i].shape[1:]) if model_inputs else None
                arrays.append(as_image_batch(v, expected))
            else:
                arrays.append(np.array(to_numpy(v), copy=True))
        if len({a.shape[0] for a in arrays}) != 1:
            raise ValueError(f"All inputs need the same batch size, got {[a.shape[0] for a in arrays]}.")
        return _Inputs(arrays, image_index, keys, single=len(values) == 1 and keys is None and not model_inputs)

    def _image_input_index(self, values, keys, model_inputs) -> int:
        names = [getattr(t, "name", "").split(":")[0] for t in model_inputs]
        if self.input_name is not None:
            if keys is not None and self.input_name in keys:
                return keys.index(self.input_name)
            if self.input_name in names:
                return names.index(self.input_name)
            raise ValueError(f"Input '{self.input_name}' not found; the model's inputs are {names or keys}.")
        if self.input_index is not None:
            if not 0 <= self.input_index < len(values):
                raise ValueError(f"`input_index` {self.input_index} is out of range for {len(values)} inputs.")
            return self.input_index
        rank4 = [i for i, v in enumerate(values) if np.ndim(to_numpy(v)) == 4]
        if len(rank4) != 1:
            raise ValueError(
                f"Found {len(rank4)} rank-4 inputs; say which one is the image with `input_index` or `input_name`."
            )
        return rank4[0]


def minmax(cam: Any) -> Any:
    """Per-image min-max normalization of (N, h, w) maps to [0, 1]; constant maps become 0.

    "Constant" is relative to the map's magnitude: random-init backbones have activations of ~1e-12 whose
    maps are still meaningful, while rounding noise on a flat map is not.
    """
    ops = keras.ops
    lo = ops.min(cam, axis=(1, 2), keepdims=True)
    hi = ops.max(cam, axis=(1, 2), keepdims=True)
    span = hi - lo
    scale = ops.maximum(ops.abs(hi), ops.abs(lo))
    flat = span <= scale * _RELATIVE_EPS
    return ops.where(flat, ops.zeros_like(cam), (cam - lo) / ops.where(flat, ops.ones_like(span), span))


def _check_channels_last(layer: keras.layers.Layer, path: str, on: str) -> None:
    """Refuses a channels_first feature map: every method here reads channels from the last axis, so its
    maps would have the wrong shape and content, with no error."""
    own = getattr(layer, "data_format", None)
    if on == "output" and own is not None:
        layout, source = own, f"data_format='{own}'"
    else:  # no data_format of its own (or its input is captured): the global setting decides
        layout = keras.config.image_data_format()
        source = f"keras.config.image_data_format() is '{layout}'"
    if layout == "channels_first":
        raise ValueError(
            f"Layer '{path}' produces a channels_first feature map ({source}); keras-cam explainers support "
            "channels_last feature maps only for now, and would return wrong maps. Build the model with "
            "data_format='channels_last' (and keras.config.set_image_data_format('channels_last'))."
        )


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    """Pads axis 0 to `size` by repeating the last row (keeps one compiled signature for ragged batches)."""
    if a.shape[0] == size:
        return a
    reps = np.repeat(a[-1:], size - a.shape[0], axis=0)
    return np.concatenate([a, reps], axis=0)
