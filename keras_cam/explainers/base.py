"""The shared explainer pipeline: capture, targets, batching, layouts, ReLU, upsampling and normalization.

A method is a short subclass that says how it weighs channels (`get_cam_weights`) or, when it is not a
weighted sum of channels, how it builds its map (`compute_cam`). Everything else happens here, once. A
subclass that sets `name` registers itself for `get_explainer` (docs/architecture.md, "One call").

Methods see channels_last feature maps `(N, *spatial, C)` with 1, 2 or 3 spatial axes, whatever the model's
layout, and are written over `spatial_axes(x)` and the last axis (docs/architecture.md, "Layouts").
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture, layout
from keras_cam._batching import CACHE, Owner, Shared, chunk_size, run_batched, signature, to_tensors
from keras_cam._inputs import InputStructure, ModelInputs, prepare_inputs
from keras_cam.explainers.registry import register
from keras_cam.explainers.maps import minmax, weighted_sum
from keras_cam.targets import (PREDICTED, OutputTarget, Targets, callable_index, callable_scores,
                               class_scores, resolve_targets)

@dataclass
class Explanation:
    """Heatmaps with the class each one explains and the score it had.

    Attributes:
        heatmaps: float32 (N, *spatial): (N, T), (N, H, W) or (N, D, H, W); in [0, 1] when normalized.
        targets: int (N,) class index explained per image (-1 when targets was a callable).
        scores: float32 (N,) the target's score (logit when `use_logits`) per image.
    """

    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray


class BaseCAM:
    """Base class of every explainer: `explainer(images, targets=None)` -> heatmaps (N, H, W) in [0, 1].

    Signals `(N, T, C)` give maps `(N, T)`, volumes `(N, D, H, W, C)` maps `(N, D, H, W)`, and channels_first
    models (a layer's `data_format`, else `keras.config.image_data_format()`) are read in their layout.

    Subclasses override `get_cam_weights(activations, grads, targets) -> (N, C)` (the map is then
    `ReLU(sum_k w_k A_k)`), or `compute_cam(activations, grads, targets) -> (N, *spatial)` for other
    constructions. Activations and gradients arrive channels_last, `(N, *spatial, C)`: reduce over
    `spatial_axes(x)` and the last axis. `targets` is the int32 (N,) class index explained per image.
    Set `needs_grads = False` for methods that use activations only, and `name` (plus `aliases`) to make
    the method available to `get_explainer`.

    Args:
        model: any Keras 3 model: Sequential, Functional, subclassed, with nested models (e.g. a
            `keras.applications` backbone inside a Sequential).
        layer: the layer to explain: `None` (the last layer whose output has as many spatial axes as the input,
            each > 1, searching nested models), a layer name, an `"outer/inner"` path, or a
            `keras.layers.Layer`; or a list of them: each layer's map is brought to the input's resolution,
            normalized, and the maps are averaged, all in one compiled call.
        use_logits: score classes on the pre-activation outputs when the output layer ends in
            softmax/sigmoid (the model is patched only for the duration of a call).
        input_index: for multi-input models, the position of the explained input (default: the one of rank
            3 to 5).
        input_name: for multi-input models, the name of the image input.
        binary: how to read a single output unit. `None` (default): a unit ending in a sigmoid is a binary
            classifier (class 1 = the unit, class 0 = its negation) and any other unit a regression output
            (`targets=None` explains the output itself). `True`: binary also without a sigmoid (a model that
            outputs a logit, trained with `from_logits=True`); `False`: always regression.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    heatmaps = kc.GradCAM(model)(np.random.rand(2, 32, 32, 3))   # (2, 32, 32) float32 in [0, 1]
    ```
    """

    #: Lower-case name used by `get_explainer` (aliases in `aliases`); set it to register a method.
    name: str = "base"
    aliases: Tuple[str, ...] = ()
    needs_grads: bool = True
    #: Where on the layer the activations are taken: its "output" (or its "input", for CAM).
    capture_on: str = "output"
    accepts_callable_targets: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a method of its own, not a user's tweak of one
            register(cls)

    def __init__(
        self,
        model: keras.Model,
        layer: capture.LayerSpec = None,
        use_logits: bool = True,
        input_index: Optional[int] = None,
        input_name: Optional[str] = None,
        binary: Optional[bool] = None,
    ) -> None:
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
        self.model = model
        if isinstance(layer, (list, tuple)) and not layer:
            raise ValueError("`layer` is an empty list; pass a layer, a list of layers, or None.")
        self._layer_spec = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        self.layer_refs: Optional[List[capture.LayerRef]] = None
        if layer is not None or capture.graph_tensors(model, "outputs") or capture.spatial_layers(model):
            self.layer_refs = [self._find_layer(spec) for spec in self._layer_spec]
        # else: a subclassed model has no graph to read shapes from; `layer=None` is resolved on the first call.
        self.use_logits = bool(use_logits)
        self.input_index = input_index
        self.input_name = input_name
        self.binary = None if binary is None else bool(binary)
        self._seam = seam.get()
        self._logit_layers: Optional[list] = None  # found on the first call (subclassed models need a sample)
        self._input_layout: Optional[layout.Layout] = None  # likewise, from the first call's input
        self._output_units: Optional[int] = capture.output_units(model)  # subclassed: on the first call

    # -- what a method says ----------------------------------------------------------------------------------

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        """Channel weights (N, C) from activations and gradients (N, *spatial, C) for class indices (N,)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_cam_weights or compute_cam.")

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        """The raw map (N, *spatial) before ReLU; default: the weighted sum of channels."""
        return weighted_sum(activations, self.get_cam_weights(activations, grads, targets))

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def layer_ref(self) -> Optional[capture.LayerRef]:
        """The explained layer (the first one when several are); None until a subclassed model's first call."""
        return self.layer_refs[0] if self.layer_refs else None

    @property
    def layer(self) -> keras.layers.Layer:
        return self.layer_refs[0].layer

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of the model's single (N, K) output (1 for one unit), or None when it has another form
        or is not known yet (a subclassed model's output is seen on the first call)."""
        return self._output_units

    @property
    def output_kind(self) -> Optional[str]:
        """How class targets read the model's output: "classes" (N, K > 1), "binary" or "regression" (one
        unit, see `binary`), or None (several outputs or another shape: targets must be callables)."""
        if self.num_classes is None:
            return None
        if self.num_classes > 1:
            return "classes"
        return "binary" if self._binary_unit() else "regression"

    def check_inputs(self, images: Any) -> Any:
        """Validates `images` for this explainer's model; returns float32 copies in the same structure.

        Raises the `ValueError` a call would raise for these images (wrong rank, size, channels, NaN, ...),
        without running the model. Callbacks use it to fail when they are created, not deep in training.
        """
        return self._prepare_inputs(images).user_structure()

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
            targets: `None` (predicted class), an int, one int per image, several per image (an (N, K) int
                array, or `"all"` for every class: K maps per image, from one forward pass and a vectorized
                backward), or a callable `(outputs) -> (N,)` scores (outputs are logits when `use_logits`).
            upsample: resize maps to the input's spatial size (linear, bilinear or trilinear); otherwise keep
                the layer's.
            normalize: min-max normalize each map to [0, 1] (an all-zero map stays zero).
            batch_size: images per compiled call (default 32); the last chunk is padded so one compiled
                function serves every chunk.

        Returns:
            float32 array (N, H, W) for images, (N, T) for signals, (N, D, H, W) for volumes (or the layer's
            spatial size without upsampling); (N, K, ...) for K targets per image.
        """
        return self.compute(images, targets, upsample, normalize, batch_size).heatmaps

    def compute(self, images: Any, targets: Targets = None, upsample: bool = True, normalize: bool = True,
                batch_size: Optional[int] = None) -> Explanation:
        """Like `explain`, but also returns the explained class and its score per image."""
        inputs, resolved = self._prepare_call(images, targets)
        maps, idx, scores = self._run_batches(inputs, resolved, chunk_size(inputs.n, batch_size, bucket=True),
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
            size = chunk_size(inputs.n, kwargs.get("batch_size"), bucket=True)
            forward = self._compiled(("forward", inputs.structure, signature(inputs.arrays, size)),
                                     lambda owner: self._forward_graph(owner, inputs.structure))
            (probs,) = run_batched(lambda *arrays: forward(*to_tensors(arrays)), inputs.arrays, size)
            if probs.ndim != 2:
                raise ValueError(
                    f"explain_labels needs a multi-label classifier with outputs (N, K); model "
                    f"'{self.model.name}' outputs shape {probs.shape[1:]} per image. For per-pixel outputs, "
                    "explain a class with `explain(images, targets=...)` and a callable target that scores it "
                    "over the pixels, e.g. lambda out: keras.ops.sum(out[..., k], axis=(1, 2))."
                )
            present = probs > threshold
        else:
            present = np.asarray(labels).astype(bool)
            if present.ndim != 2 or present.shape[0] != inputs.n:
                raise ValueError(f"`labels` must be multi-hot (N, K) with N = {inputs.n}, got {present.shape}.")
        result: List[Dict[int, np.ndarray]] = [{} for _ in range(inputs.n)]
        rows = np.flatnonzero(present.any(axis=1))
        if rows.size:
            # Every image's labels in one pass: K = the most labels of an image, fewer padded with a repeat.
            labels = [np.flatnonzero(present[r]) for r in rows]
            k = max(len(l) for l in labels)
            targets = np.stack([np.resize(l, k) for l in labels]).astype(np.int32)
            maps = self.explain(inputs.rows(rows).user_structure(), targets=targets, **kwargs)
            for r, l, m in zip(rows, labels, maps):
                result[r].update({int(c): m[j] for j, c in enumerate(l)})
        return result

    # -- the pipeline ----------------------------------------------------------------------------------------

    def _prepare_call(self, images: Any, targets: Targets) -> Tuple[ModelInputs, Any]:
        """Validated inputs and resolved targets for one call; refuses what would give wrong maps."""
        inputs = self._prepare_inputs(images)
        self._resolve_on_first_call(inputs)
        if isinstance(targets, OutputTarget):
            targets = targets.bind(capture.output_names(self.model))
        resolved = resolve_targets(targets, inputs.n, self.num_classes, binary=self._binary_unit())
        return inputs, resolved

    def _run_batches(self, inputs: ModelInputs, targets: Any, size: int, upsample: bool, normalize: bool):
        """Runs the compiled graph over chunks of `size` images; returns its concatenated outputs."""
        key = ("graph", inputs.structure, signature(inputs.arrays, size), upsample, normalize,
               targets if callable(targets) else np.shape(targets)[1:])
        fn = self._compiled(key, lambda owner: self._graph(owner, inputs.structure, self._input_size(inputs),
                                                           targets, upsample, normalize))
        index = callable_index(targets, inputs.n) if callable(targets) else targets  # or per-image masks
        return run_batched(lambda *arrays: fn(*to_tensors(arrays)), [index] + inputs.arrays, size)

    def _compiled(self, key: Any, make: Callable[[Owner], Callable]) -> Callable:
        """The compiled version of `make(owner)`, built once per model, method, options and `key` (purpose,
        structure, signature) and shared by every equivalent explainer.

        `make` gets the `Owner` to call back into (`owner()` is the explainer running the call) and must not
        close over `self`, or the shared cache would keep this explainer and its model alive.
        """
        entry = CACHE.get(self.model, (type(self), self._config()) + tuple(key),
                          lambda: Shared(make, self._seam, self.model))
        entry.owner.bind(self)
        return entry.fn

    def _config(self) -> tuple:
        """What the compiled functions depend on besides the model and the input: the layers and options.
        A method whose compiled code reads options of its own adds them here."""
        return (tuple(r.path for r in self.layer_refs), self.capture_on, self.use_logits, self._binary_unit(),
                self._input_layout)

    def _input_size(self, inputs: ModelInputs) -> Tuple[int, ...]:
        """The spatial size of the explained input (what maps are upsampled to)."""
        return tuple(int(d) for d in self._input_layout.spatial_shape(inputs.image.shape))

    @staticmethod
    def _graph(owner: Owner, structure: InputStructure, size: Tuple[int, int], targets: Any, upsample: bool,
               normalize: bool) -> Callable:
        """The function that is compiled: (class indices, *inputs) -> (heatmaps, target indices, scores)."""

        def fn(index, *tensors):
            this = owner()
            activations, grads, _, (scores, idx) = this._activations(structure.pack(tensors),
                                                                     this._score_fn(targets, index))
            maps = [this._layer_map(a, g, idx) for a, g in zip(activations, grads)]
            return this._combine(maps, idx, size, upsample, normalize), idx, scores

        return fn

    def _layer_map(self, activations: Any, grads: Any, targets: Any) -> Any:
        """One layer's raw map (M, *spatial), M = N, or N * K for K targets per image (the activations are
        then repeated per target, each with its own gradient, so methods see one target per row)."""
        if len(targets.shape) == 2:
            k = targets.shape[1]
            shape = (-1,) + tuple(activations.shape[1:])
            activations = keras.ops.reshape(keras.ops.repeat(keras.ops.expand_dims(activations, 1), k, axis=1),
                                            shape)
            if grads is not None:
                if len(grads.shape) == len(activations.shape):  # one gradient for every target (a callable)
                    grads = keras.ops.repeat(keras.ops.expand_dims(grads, 1), k, axis=1)
                grads = keras.ops.reshape(grads, shape)
            targets = keras.ops.reshape(targets, (-1,))
        return self.compute_cam(activations, grads, targets)

    def _combine(self, maps: List[Any], targets: Any, size: Tuple[int, ...], upsample: bool,
                 normalize: bool) -> Any:
        """ReLU, upsampling and normalization of each layer's map; several layers are brought to the input's
        size, normalized each and averaged (then normalized again when asked)."""
        if len(maps) == 1:
            cam = self._postprocess(maps[0], size, upsample, normalize)
        else:
            parts = [self._postprocess(m, size, True, True) for m in maps]
            cam = keras.ops.mean(keras.ops.stack(parts), axis=0)
            cam = minmax(cam) if normalize else cam
        if len(targets.shape) == 2:  # (N * K, ...) -> (N, K, ...)
            cam = keras.ops.reshape(cam, (-1, targets.shape[1]) + tuple(cam.shape[1:]))
        return cam

    @staticmethod
    def _forward_graph(owner: Owner, structure: InputStructure) -> Callable:
        """The model's own outputs (probabilities as the model gives them), for `explain_labels`."""

        def forward(*tensors):
            outputs = owner().model(structure.pack(tensors), training=False)
            if isinstance(outputs, (list, tuple, dict)):
                raise ValueError("explain_labels needs a multi-label classifier with one output (N, K); this "
                                 "model has several. Explain one with targets=kc.targets.output(name, k).")
            return keras.ops.cast(outputs, "float32")

        return forward

    def _score_fn(self, targets: Any, index: Any) -> Callable:
        """outputs -> (scores to differentiate, (scores, class indices)) for resolved targets."""

        def score_fn(outputs):
            if callable(targets):
                if not self.accepts_callable_targets:
                    raise ValueError(f"{type(self).__name__} explains class indices: pass `targets` as None, an "
                                     "int or one int per image, not a callable.")
                scores = callable_scores(targets, outputs, index)
                return scores, (scores, keras.ops.zeros_like(scores, dtype="int32") + PREDICTED)
            # Probabilities only when a sigmoid/softmax is left in place (use_logits=False).
            probabilities = not self.use_logits and bool(self._logit_layers)
            scores, idx = class_scores(outputs, index, probabilities=probabilities, binary=self._binary_unit())
            return scores, (scores, idx)

        return score_fn

    def _activations(self, model_inputs: Any, score_fn: Callable):
        """(activations, grads or Nones, outputs, aux), one entry per layer, channels_last float32, under the
        logits patch when asked. Gradients are (N, *spatial, C), or (N, K, *spatial, C) for K targets."""
        layers = [ref.layer for ref in self.layer_refs]
        with self._logits_scope():
            if self.needs_grads and self.capture_on == "output":
                acts, grads, outputs, aux = self._seam.activation_grads(self.model, model_inputs, layers, score_fn)
            else:
                with contextlib.ExitStack() as stack:
                    records = [stack.enter_context(capture.recording(layer, on=self.capture_on))
                               for layer in layers]
                    outputs = self.model(model_inputs, training=False)
                _, aux = score_fn(outputs)
                acts, grads = [r[0] for r in records], [None] * len(layers)
        pairs = [self._channels_last(ref, a, g) for ref, a, g in zip(self.layer_refs, acts, grads)]
        return [a for a, _ in pairs], [g for _, g in pairs], outputs, aux

    def _channels_last(self, ref: capture.LayerRef, a: Any, g: Any) -> Tuple[Any, Any]:
        """A captured feature map (and its gradient) checked and turned channels_last."""
        rank = self._input_layout.rank
        found = layout.layer_layout(ref.layer, len(a.shape)) if 3 <= len(a.shape) <= 5 else None
        if found is None or found.rank != rank or all(d == 1 for d in found.spatial_shape(a.shape)):
            raise ValueError(
                f"Layer '{ref.path}' produced a tensor of shape {tuple(a.shape)} at run time, which is not a "
                f"feature map with {rank} spatial {'axis' if rank == 1 else 'axes'} as the input has "
                f"({layout.Layout(rank).describe()} or channels first). Pick a convolutional layer."
            )
        a = found.to_channels_last(keras.ops.cast(a, "float32"))
        if g is not None:
            g = keras.ops.cast(g, "float32")
            # (N, K, ...) gradients: the channel axis of channels_first maps is then axis 2.
            g = keras.ops.moveaxis(g, len(g.shape) - rank - 1, -1) if found.channels_first else g
        return a, g

    def _resolve_on_first_call(self, inputs: ModelInputs) -> None:
        """Finds what needs a sample input: the auto layer, the logit layers and the output size of
        subclassed models."""
        if self.layer_refs is not None and self._logit_layers is not None and self._input_layout is not None:
            return
        sample = inputs.pack([keras.ops.convert_to_tensor(a[:1]) for a in inputs.arrays])
        if self.layer_refs is None:
            self.layer_refs = [self._find_layer(spec, sample) for spec in self._layer_spec]
        if self._logit_layers is None:  # also without use_logits: tells whether outputs are probabilities
            self._logit_layers = capture.logit_layers(self.model, sample)
        if self._output_units is None:
            self._output_units = capture.output_units(self.model, sample)
        if self._input_layout is None:
            self._input_layout = capture.input_layout(self.model, inputs.image.ndim)

    def _binary_unit(self) -> bool:
        """Whether a single output unit is a binary classifier (else a regression output)."""
        return self.binary if self.binary is not None else bool(self._logit_layers)

    def _logits_scope(self):
        if not self.use_logits:
            return contextlib.nullcontext()
        return capture.logits(self.model, self._logit_layers)

    @staticmethod
    def _postprocess(cam: Any, size: Tuple[int, ...], upsample: bool, normalize: bool) -> Any:
        """ReLU, upsampling to `size` and per-map min-max normalization of maps (M, *spatial)."""
        cam = keras.ops.relu(keras.ops.cast(cam, "float32"))
        if upsample and tuple(cam.shape[1:]) != tuple(size):
            cam = layout.resize(cam, size)  # linear interpolation of non-negative values stays non-negative
        if normalize:
            cam = minmax(cam)
        return cam

    # -- helpers ---------------------------------------------------------------------------------------------

    def _find_layer(self, layer: capture.LayerSpec, sample: Any = None) -> capture.LayerRef:
        return capture.find_layer(self.model, layer, sample=sample)

    def _prepare_inputs(self, images: Any) -> ModelInputs:
        return prepare_inputs(self.model, images, self.input_index, self.input_name)
