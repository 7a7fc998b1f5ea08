"""The shared explainer pipeline: capture, targets, batching, layouts, ReLU, upsampling and normalization.

A method is a short subclass that says how it weighs channels (`get_cam_weights`) or, when it is not a
weighted sum of channels, how it builds its map (`compute_cam`). Everything else happens here, once. A
subclass that sets `name` registers itself for `get_explainer` (docs/architecture.md, "One call").

Methods see channels_last feature maps `(N, *spatial, C)` with 1, 2 or 3 spatial axes, whatever the model's
layout, and are written over `spatial_axes(x)` and the last axis (docs/architecture.md, "Layouts").
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture, layout
from keras_cam._batching import CACHE, Owner, Shared, chunk_size, run_batched, signature, to_tensors
from keras_cam._inputs import InputStructure, ModelInputs
from keras_cam.capture.tokens import Reshape
from keras_cam.explainers.binding import ModelBinding
from keras_cam.explainers.labels import LabelsMixin
from keras_cam.explainers.registry import register
from keras_cam.explainers.maps import channels_last, first_component, minmax, weigh, weighted_sum
from keras_cam.explainers.smoothing import augmented
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


_CALL_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _call_lock(explainer: Any) -> threading.RLock:
    """The explainer's own lock (kept beside it, so explainers stay picklable)."""
    with _LOCKS_LOCK:
        lock = _CALL_LOCKS.get(explainer)
        if lock is None:
            lock = _CALL_LOCKS[explainer] = threading.RLock()
        return lock


def _options(explainer: Any) -> tuple:
    """Every plain option an explainer holds (public attributes that are numbers, strings, booleans or tuples
    of them), so that an option a method adds is part of its compiled functions' cache key without being
    listed by hand: two explainers that differ in any option never share a compiled function."""
    plain = (bool, int, float, str, type(None), np.generic)

    def is_plain(v: Any) -> bool:
        return isinstance(v, plain) or (isinstance(v, tuple) and all(is_plain(x) for x in v))

    return tuple(sorted((k, v) for k, v in vars(explainer).items() if not k.startswith("_") and is_plain(v)))


class BaseCAM(ModelBinding, LabelsMixin):
    """Base class of every explainer: `explainer(images, targets=None)` -> heatmaps (N, H, W) in [0, 1].

    Signals `(N, T, C)` give maps `(N, T)`, volumes `(N, D, H, W, C)` maps `(N, D, H, W)`, and channels_first
    models are read in their layout (a layer's own `data_format`, else that of the data it receives).

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
        reshape: for a layer that outputs tokens `(N, L, D)` (a vision transformer) on an image model, how they
            become a map: `None` (the grid from the patch embedding and the input size, prefix tokens such as
            the class token dropped), a grid `(h, w)` (the last `h * w` tokens, row-major), or a callable
            `(tokens) -> (N, h, w, C)`. With `layer=None` a transformer's layer is the input normalization of
            its last attention block (e.g. `vi_t_backbone/vit_encoder/transformer_block_12/ln_1`).
        data_format: how the explained layer's output is laid out, `"channels_first"` or `"channels_last"`,
            for a layer without a `data_format` of its own whose layout cannot be traced from the model (it
            then says so). `None` (default): a layer's own `data_format`, else the layout of the data it
            receives, traced through the model (a ReLU after a channels_first convolution is channels_first).

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
    #: Whether a target that scores K boxes per image gives K maps per image (the CAM pipeline does).
    several_box_targets: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a method of its own, not a user's tweak of one
            register(cls)

    def __init__(
        self,
        model: keras.Model,
        layer: capture.LayerSpec = None,
        *,
        use_logits: bool = True,
        input_index: Optional[int] = None,
        input_name: Optional[str] = None,
        binary: Optional[bool] = None,
        reshape: Reshape = None,
        data_format: Optional[str] = None,
    ) -> None:
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
        self.model = model
        if isinstance(layer, (list, tuple)) and not layer:
            raise ValueError("`layer` is an empty list; pass a layer, a list of layers, or None.")
        self._layer_spec = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        self.data_format = layout.check_data_format(data_format)
        self.layer_refs: Optional[List[capture.LayerRef]] = None
        if layer is not None or capture.graph_tensors(model, "outputs") or capture.spatial_layers(model):
            self.layer_refs = [self._find_layer(spec) for spec in self._layer_spec]
        # else: a subclassed model has no graph to read shapes from; `layer=None` is resolved on the first call.
        self.use_logits = bool(use_logits)
        self.input_index = input_index
        self.input_name = input_name
        self.binary = None if binary is None else bool(binary)
        if reshape is not None and not callable(reshape):
            if not (isinstance(reshape, (tuple, list)) and len(reshape) == 2):
                raise ValueError(f"`reshape` must be None, a grid (h, w) or a callable, got {reshape!r}.")
            reshape = tuple(int(d) for d in reshape)
        self.reshape = reshape
        self._call_size: Optional[Tuple[int, ...]] = None  # the input's spatial size in the running call
        self._seam = seam.get()
        self._logit_layers: Optional[list] = None  # found on the first call (subclassed models need a sample)
        self._input_layout: Optional[layout.Layout] = None  # likewise, from the first call's input
        self._output_units: Optional[int] = capture.output_units(model)  # subclassed: on the first call

    # -- what a method says ----------------------------------------------------------------------------------

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        """Channel weights (N, C) from activations and gradients (N, *spatial, C) for class indices (N,)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_cam_weights or compute_cam.")

    def weighted_activations(self, activations: Any, grads: Any, targets: Any) -> Any:
        """(N, *spatial, C) whose sum over channels is the map; default: activations times channel weights."""
        return weigh(activations, self.get_cam_weights(activations, grads, targets))

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        """The raw map (N, *spatial) before ReLU; default: the weighted sum of channels."""
        return weighted_sum(activations, self.get_cam_weights(activations, grads, targets))

    def eigen_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        """The raw map with `eigen_smooth`: the first principal component of the weighted activations."""
        return first_component(self.weighted_activations(activations, grads, targets))

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
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
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
            aug_smooth: average the maps of the image and of its horizontal flip, each at intensities x0.9,
                x1 and x1.1 (pytorch-grad-cam's test-time augmentation), flipped back; the class is the
                one explained on the image itself. Costs 6 maps per image.
            eigen_smooth: the first principal component of the weighted activations instead of their sum
                over channels (less noise); the Eigen methods already are principal components.

        Returns:
            float32 array (N, H, W) for images, (N, T) for signals, (N, D, H, W) for volumes (or the layer's
            spatial size without upsampling); (N, K, ...) for K targets per image.
        """
        return self.compute(images, targets, upsample, normalize, batch_size, aug_smooth, eigen_smooth).heatmaps

    def compute(self, images: Any, targets: Targets = None, upsample: bool = True, normalize: bool = True,
                batch_size: Optional[int] = None, aug_smooth: bool = False,
                eigen_smooth: bool = False) -> Explanation:
        """Like `explain`, but also returns the explained class and its score per image."""
        with _call_lock(self):  # one call at a time per explainer: a call's state (its input size) is shared
            if aug_smooth:
                result = Explanation(*augmented(self, images, targets, upsample, normalize, batch_size,
                                                eigen_smooth))
            else:
                result = self._compute(images, targets, upsample, normalize, batch_size, bool(eigen_smooth))
        self._check_zero_maps(result.heatmaps)
        return result

    def _compute(self, images: Any, targets: Targets, upsample: bool, normalize: bool,
                 batch_size: Optional[int], eigen_smooth: bool) -> Explanation:
        """One call's maps: what a method with a pipeline of its own overrides (`compute` adds smoothing)."""
        inputs, resolved = self._prepare_call(images, targets)
        maps, idx, scores = self._run_batches(inputs, resolved, chunk_size(inputs.n, batch_size, bucket=True),
                                              upsample, normalize, eigen_smooth)
        return Explanation(maps.astype(np.float32, copy=False), idx.astype(np.int64, copy=False),
                           scores.astype(np.float32, copy=False))

    # -- the pipeline ----------------------------------------------------------------------------------------

    def _prepare_call(self, images: Any, targets: Targets) -> Tuple[ModelInputs, Any]:
        """Validated inputs and resolved targets for one call; refuses what would give wrong maps."""
        inputs = self._prepare_inputs(images)
        self._resolve_on_first_call(inputs)
        if isinstance(targets, OutputTarget):
            targets = targets.bind(capture.output_names(self.model))
        if hasattr(targets, "bind_model"):  # a detection target decodes boxes for this model and input size
            targets = targets.bind_model(self.model, self._input_size(inputs))
            if targets.several and not self.several_box_targets:
                raise ValueError(f"{type(self).__name__} explains one box per image: pass one box per image, "
                                 "kc.targets.detection(boxes (N, 4), labels (N,)), or use a CAM method for K.")
        resolved = resolve_targets(targets, inputs.n, self.num_classes, binary=self._binary_unit())
        self._call_size = self._input_size(inputs)  # token grids are laid out for it when traced
        return inputs, resolved

    def _run_batches(self, inputs: ModelInputs, targets: Any, size: int, upsample: bool, normalize: bool,
                     eigen: bool = False):
        """Runs the compiled graph over chunks of `size` images; returns its concatenated outputs."""
        key = ("graph", inputs.structure, signature(inputs.arrays, size), upsample, normalize,
               targets if callable(targets) else np.shape(targets)[1:], eigen)
        fn = self._compiled(key, lambda owner: self._graph(owner, inputs.structure, self._input_size(inputs),
                                                           targets, upsample, normalize, eigen))
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
        return (tuple((r.path, r.channels_first) for r in self.layer_refs), self.capture_on, self.use_logits,
                self._binary_unit(), self._input_layout, self.reshape, _options(self))

    @staticmethod
    def _graph(owner: Owner, structure: InputStructure, size: Tuple[int, int], targets: Any, upsample: bool,
               normalize: bool, eigen: bool = False) -> Callable:
        """The function that is compiled: (class indices, *inputs) -> (heatmaps, target indices, scores)."""

        def fn(index, *tensors):
            this = owner()
            activations, grads, _, (scores, idx) = this._activations(structure.pack(tensors),
                                                                     this._score_fn(targets, index))
            maps = [this._layer_map(a, g, idx, eigen) for a, g in zip(activations, grads)]
            return this._combine(maps, idx, size, upsample, normalize), idx, scores

        return fn

    def _layer_map(self, activations: Any, grads: Any, targets: Any, eigen: bool = False) -> Any:
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
        return (self.eigen_cam if eigen else self.compute_cam)(activations, grads, targets)

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
            if not self.needs_grads and (isinstance(outputs, (list, tuple, dict)) or len(outputs.shape) != 2):
                # target-free (EigenCAM) on detectors and segmenters: no class to report
                return None, (keras.ops.zeros(index.shape), keras.ops.cast(index, "int32"))
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
                with capture.recording_all(layers, on=self.capture_on) as records:
                    outputs = self.model(model_inputs, training=False)
                _, aux = score_fn(outputs)
                acts, grads = [r[0] for r in records], [None] * len(layers)
        pairs = [channels_last(self.model, ref, a, g, self._input_layout.rank, self._call_size, self.reshape)
                 for ref, a, g in zip(self.layer_refs, acts, grads)]
        return [a for a, _ in pairs], [g for _, g in pairs], outputs, aux

    @staticmethod
    def _postprocess(cam: Any, size: Tuple[int, ...], upsample: bool, normalize: bool) -> Any:
        """ReLU, upsampling to `size` and per-map min-max normalization of maps (M, *spatial)."""
        cam = keras.ops.relu(keras.ops.cast(cam, "float32"))
        if upsample and tuple(cam.shape[1:]) != tuple(size):
            cam = layout.resize(cam, size)  # linear interpolation of non-negative values stays non-negative
        if normalize:
            cam = minmax(cam)
        return cam
