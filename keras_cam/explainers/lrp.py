"""LRP: layer-wise relevance propagation (Bach et al. 2015) with zennit's rules and composites (Montavon et
al. 2019), as one compiled forward and one modified backward pass (`keras_cam/lrp/propagation.py`)."""
from __future__ import annotations

import warnings

from typing import Any, Callable, List, Optional, Tuple

import keras
import numpy as np

from keras_cam import capture, layout
from keras_cam._inputs import InputStructure, ModelInputs
from keras_cam.explainers.attribution import InputGradientExplainer
from keras_cam.explainers.maps import minmax
from keras_cam.lrp import composites, propagation
from keras_cam.targets import Targets


class LRP(InputGradientExplainer):
    """Layer-wise relevance propagation: the target's logit handed down layer by layer, each layer by its rule.

    `lrp(images, targets)` gives maps `(N, *spatial)` in [0, 1] (the positive relevance summed over channels,
    min-max normalized); `lrp.explain(images, targets, normalize=False)` the signed relevance summed over
    channels; `lrp.relevance(images, targets)` the full relevance `(N, *spatial, C)` (channels last, also for
    a channels_first model). The relevance starts as the target's logit: with `Epsilon(0)` on a ReLU network
    without biases it sums to that logit per image (biases absorb their share otherwise).

    How: every layer's `call` is replaced for the duration of a call by one with the same forward value and
    a backward pass that is the layer's rule, so one compiled forward + backward gives the relevance
    (docs/architecture.md, "Relevance propagation"). The model is never rebuilt nor changed. With `canonize`
    a BatchNormalization that directly follows a convolution or Dense layer (no activation between, nothing
    else reading that output) is folded into it for the call, as zennit's `SequentialMergeBatchNorm` does;
    other BatchNormalization layers pass relevance unchanged (zennit's base map). `explainer.plan()` lists
    the rule each layer got. Transformers (AttnLRP, Achtibat et al. 2024): LayerNormalization gets
    `kc.lrp.LayerNorm()`, MultiHeadAttention `kc.lrp.AttnLRP()`, EinsumDense the composite's Dense rule, and
    keras-hub's ViT blocks have their residual sums under `Norm`. On its first call the explainer checks that
    its rules leave the model's output unchanged.

    Differences from zennit: the first layer of `epsilon_plus_flat` and friends is the first convolution or
    Dense layer the input reaches in the forward pass (zennit: the first such module in module order); the
    relevance starts as the logit (zennit: whatever `attr_output` is given, usually the one-hot vector, so
    zennit's relevance is ours divided by the logit); `epsilon_gamma_box`'s ZBox bounds default to [0, 1]
    (zennit requires them). Operations between layers get rules too: in a functional model's graph, sums,
    means and scalings (`a + b`, `keras.ops.mean(x, axis)`, `x / 255`) `Norm`, activations `Pass`, reshapes
    and slices their gradient, any other is refused by path; a subclassed model's `call` may reshape, slice,
    cast or rectify between its layers, and one that computes new values there (a sum) is refused.

    Args:
        model, use_logits, input_index, input_name, binary: as for every explainer (see `BaseCAM`).
        composite: the rules by layer kind: a name from `kc.lrp.available_composites()` (`"epsilon"`,
            `"epsilon_plus"`, `"epsilon_plus_flat"` (default), `"epsilon_gamma_box"`,
            `"epsilon_alpha2_beta1"`, `"epsilon_alpha2_beta1_flat"`) or a `kc.lrp.Composite`.
        rules: `{layer name or Keras layer class: rule}` overriding the composite (names before classes),
            e.g. `{"conv1": kc.lrp.Flat(), keras.layers.Dense: kc.lrp.Epsilon(0.25)}`; also how a layer
            keras-cam has no rule for gets one.
        canonize: fold BatchNormalization into the convolution or Dense layer before it.
        layer: `None` (relevance at the input), or a layer (name, path, object) or a list of them: the
            relevance of their outputs, channels kept (`relevance`), summed over channels for maps.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    lrp = kc.LRP(model, composite="epsilon_plus_flat")
    maps = lrp(np.random.rand(2, 16, 16, 3))                                   # (2, 16, 16) in [0, 1]
    signed = lrp.explain(np.random.rand(2, 16, 16, 3), normalize=False)        # (2, 16, 16) signed
    relevance = lrp.relevance(np.random.rand(2, 16, 16, 3), targets=1)         # (2, 16, 16, 3)
    ```
    """

    name = "lrp"
    aliases = ("layerwise-relevance-propagation", "relevance-propagation")

    def __init__(self, model: keras.Model, composite: Any = "epsilon_plus_flat", rules: Optional[dict] = None,
                 canonize: bool = True, layer: capture.LayerSpec = None, **options: Any) -> None:
        super().__init__(model, None, **options)
        self.composite = composites.composite(composite)
        self._rules = composites.check_rules(model, rules)
        # Plain strings (what `explain_dataset` records to check a resumed run against).
        self.rules = tuple(f"{k if isinstance(k, str) else k.__name__}: {r!r}" for k, r in self._rules)
        self.canonize = bool(canonize)
        if isinstance(layer, (list, tuple)) and not layer:
            raise ValueError("`layer` is an empty list; pass a layer, a list of layers, or None (the input).")
        specs = [] if layer is None else list(layer) if isinstance(layer, (list, tuple)) else [layer]
        self._relevance_refs: List[capture.LayerRef] = [self._with_data_format(capture.find_layer(model, s))
                                                        for s in specs]
        self.relevance_layers = tuple(r.path for r in self._relevance_refs)
        self._plan: Optional[propagation.Plan] = None

    def plan(self) -> List[Tuple[str, str]]:
        """(layer path, rule) for every layer with a rule, in the order the forward pass calls them (known
        after the first call); the path is the layer's name for a layer of the model itself, `outer/inner`
        for a nested one."""
        return [] if self._plan is None else self._plan.describe()

    def relevance(self, images: Any, targets: Targets = None, batch_size: Optional[int] = None) -> Any:
        """The relevance itself, per element.

        Args:
            images, targets, batch_size: as for `explain`.

        Returns:
            float32 `(N, *spatial, C)` at the input (channels last, whatever the model's layout), or at
            `layer`: its output's relevance, channels last when it is a feature map (a list for several
            layers); `(N, K, ...)` for K targets per image.
        """
        inputs, resolved = self._prepare_call(images, targets)
        size = self._chunk(inputs.n, resolved, batch_size)
        out = self._run_batches(inputs, resolved, size, False, False, raw=True)
        rel = [r.astype(np.float32) for r in out[:-2]]
        if any(r.size for r in rel) and not any(r.any() for r in rel):
            warnings.warn("The relevance of this call is zero everywhere: the rules' stabilizers and the biases "
                          "absorbed all of it (common in deep networks with random or untrained weights). Check "
                          "that the model is trained, or try another composite or layer.", stacklevel=2)
        return rel[0] if len(rel) == 1 and len(self._relevance_refs) <= 1 else rel

    def attributions(self, images: Any, targets: Targets = None, batch_size: Optional[int] = None) -> Any:
        """`relevance` (the explainers' name for the raw values)."""
        return self.relevance(images, targets, batch_size)

    # -- the pipeline ----------------------------------------------------------------------------------------

    def _config(self) -> tuple:
        rules = tuple((k if isinstance(k, str) else f"{k.__module__}.{k.__qualname__}", r.key())
                      for k, r in self._rules)
        return super()._config() + (self.composite.key(), rules, self.canonize, self.relevance_layers)

    def _prepare_call(self, images: Any, targets: Targets) -> Tuple[ModelInputs, Any]:
        inputs, resolved = super()._prepare_call(images, targets)
        if self._plan is None:
            sample = inputs.pack([keras.ops.convert_to_tensor(a[:1]) for a in inputs.arrays])

            def run():
                with self._logits_scope():
                    return self.model(sample, training=False)

            plan = propagation.build_plan(self.model, run, self.composite, self._rules, self.canonize)
            propagation.check_forward(plan, run)
            self._plan = plan
        return inputs, resolved

    def reduce(self, attributions: Any) -> Any:
        return keras.ops.sum(attributions, axis=-1)  # signed

    @staticmethod
    def _postprocess(cam: Any, size: Tuple[int, ...], upsample: bool, normalize: bool) -> Any:
        """Signed maps stay signed unless normalized (then the positive relevance in [0, 1])."""
        cam = keras.ops.cast(cam, "float32")
        if normalize:
            cam = keras.ops.relu(cam)
        if upsample and tuple(cam.shape[1:]) != tuple(size):
            cam = layout.resize(cam, size)
        return minmax(cam) if normalize else cam

    @staticmethod
    def _attribution_graph(owner: Any, structure: InputStructure, size: Tuple[int, ...], targets: Any,
                           upsample: bool, normalize: bool, raw: bool) -> Callable:
        """(class indices, *inputs) -> (maps, classes, scores), or with `raw` (*relevances, classes, scores)."""
        ops = keras.ops

        def fn(index, *tensors):
            this = owner()
            several = not callable(targets) and len(index.shape) == 2
            k = int(index.shape[1]) if several else 1
            if several:  # one row per (image, target)
                tensors = [ops.repeat(t, k, axis=0) for t in tensors]
                index = ops.reshape(index, (-1,))
            relevances, scores, idx = this._relevances(structure, list(tensors), index, targets)
            if several:
                scores, idx = ops.reshape(scores, (-1, k)), ops.reshape(idx, (-1, k))
            if raw:
                if several:
                    relevances = [ops.reshape(r, (-1, k) + tuple(r.shape[1:])) for r in relevances]
                return (*relevances, idx, scores)
            maps = []
            for ref, r in zip(this._relevance_refs or [None], relevances):
                if len(r.shape) != len(tensors[structure.image_index].shape):
                    raise ValueError(f"Layer '{ref.path}' outputs shape {tuple(r.shape[1:])}, not a feature map "
                                     "of the input's rank, so its relevance has no map; read it with "
                                     "lrp.relevance(...), or pass a convolutional layer.")
                maps.append(this.reduce(r))
            return this._combine(maps, idx, size, upsample, normalize), idx, scores

        return fn

    def _relevances(self, structure: InputStructure, tensors: List[Any], index: Any, targets: Any):
        """(relevances channels_last: at the input or at each of `relevance_refs`, scores, classes)."""
        ops = keras.ops
        i = structure.image_index
        x = ops.cast(tensors[i], "float32")
        score_fn = self._score_fn(targets, index)

        def forward(xx):
            model_inputs = list(tensors)
            model_inputs[i] = xx
            with self._logits_scope():
                outputs = self.model(structure.pack(model_inputs), training=False)
            scores, aux = score_fn(outputs)
            # The backward pass starts from the logit itself: d(seeded)/d(scores) = scores.
            held = ops.stop_gradient(scores)
            return held + (scores - held) * held, aux

        layers = [r.layer for r in self._relevance_refs]
        with propagation.propagating(self._plan):
            x_grad, _, grads, (scores, idx) = self._seam.input_layer_grads(self.model, x, layers, forward)
        if not layers:
            return [self._input_layout.to_channels_last(ops.cast(x_grad, "float32"))], scores, idx
        out = []
        for ref, g in zip(self._relevance_refs, grads):
            if g is None:
                raise ValueError(f"Layer '{ref.path}' did not run in the forward pass; pass a layer the model uses.")
            g = ops.cast(g, "float32")
            if len(g.shape) == len(x.shape):
                g = layout.layer_layout(ref, len(g.shape)).to_channels_last(g)
            out.append(g)
        return out, scores, idx
