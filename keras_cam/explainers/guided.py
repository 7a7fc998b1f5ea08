"""Guided Backpropagation and Guided Grad-CAM: input gradients through ReLUs with the guided backward rule.

The guided rule (Springenberg et al. 2015) lets a gradient through a ReLU only where both the ReLU's input
and the incoming gradient are positive. The model's ReLUs are swapped for a `keras.ops.custom_gradient`
function with that backward pass for the duration of each run of the model, inside the compiled function:
whenever the function is traced (TensorFlow, JAX: also a later re-trace) or run eagerly (PyTorch, every
call), the swap is in place; on exit, also on an error, every layer has its own `activation` and `call`
back (`capture.hooks.patched`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Tuple

import keras

from keras_cam import capture
from keras_cam.capture.hooks import activation_name, patched
from keras_cam.explainers.attribution import InputGradientExplainer
from keras_cam.explainers.gradient import GradCAM
from keras_cam._inputs import InputStructure

#: Activation functions with the guided rule, and their upper clip (relu6 passes gradients below 6 only).
_RELU_FUNCTIONS = {"relu": None, "relu6": 6.0}


def guided_relu(max_value: Optional[float] = None):
    """`relu(x)` (clipped at `max_value`) whose backward pass is the guided rule."""
    ops = keras.ops

    @ops.custom_gradient
    def relu(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            passes = ops.logical_and(x > 0, upstream > 0)
            if max_value is not None:
                passes = ops.logical_and(passes, x < max_value)
            return ops.where(passes, upstream, ops.zeros_like(upstream))

        y = ops.relu(x)
        return (y if max_value is None else ops.minimum(y, max_value)), grad

    return relu


def relu_patches(model: keras.layers.Layer) -> List[Tuple[keras.layers.Layer, str, Any]]:
    """(layer, attribute, replacement) for every ReLU of `model` at any depth: layers with
    `activation="relu"` / `"relu6"` (Conv, Dense, `Activation`), and `keras.layers.ReLU` without a negative
    slope or threshold (with `max_value`, as ReLU6). Leaky ReLUs and `keras.ops.relu` called inside a
    subclassed model's `call` are left alone."""
    found = []
    for layer in capture.walk_layers(model):
        if isinstance(layer, keras.layers.ReLU):
            if not layer.negative_slope and not layer.threshold:
                fn = guided_relu(None if layer.max_value is None else float(layer.max_value))
                found.append((layer, "call", lambda inputs, *args, _fn=fn, **kwargs: _fn(inputs)))
        elif activation_name(getattr(layer, "activation", None)) in _RELU_FUNCTIONS:
            found.append((layer, "activation", guided_relu(_RELU_FUNCTIONS[layer.activation.__name__])))
    return found


@contextlib.contextmanager
def guided_relus(model: keras.layers.Layer) -> Iterator[None]:
    """Within the block, `model`'s ReLUs backpropagate with the guided rule; restored on exit."""
    with contextlib.ExitStack() as stack:
        for layer, attr, value in relu_patches(model):
            stack.enter_context(patched(layer, attr, value))
        yield


class GuidedBackprop(InputGradientExplainer):
    """Guided Backpropagation (Springenberg et al. 2015): the input gradient with guided ReLUs.

    Every ReLU of the model (see `relu_patches`: `activation="relu"`/`"relu6"` and `keras.layers.ReLU`,
    nested models included) passes a gradient only where its input and the incoming gradient are both
    positive; the forward pass is unchanged. The map is the largest |value| over channels of that gradient
    (`attributions` gives it signed). On a model without ReLUs it is Saliency. The model is only patched
    while it runs for the explainer, and is exactly the user's afterwards, also after an error.

    Args:
        model, use_logits, input_index, input_name, binary: as for every explainer (see `BaseCAM`).
        layer: ignored (the gradient is taken at the input).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    maps = kc.GuidedBackprop(model)(np.random.rand(2, 16, 16, 3))   # (2, 16, 16) float32 in [0, 1]
    ```
    """

    name = "guided-backprop"
    aliases = ("guidedbackprop", "guided-backpropagation")

    def _backward_rule(self):
        return guided_relus(self.model)


class GuidedGradCAM(GuidedBackprop):
    """Guided Grad-CAM (Selvaraju et al. 2017): Grad-CAM at `layer` times the guided-backprop gradient.

    Per image and target, the Grad-CAM map (ReLU, brought to the input's size, min-max normalized, as
    `GradCAM(model, layer)` gives it) multiplies the guided gradient element-wise, on every channel; the map
    is the largest |value| over channels of that product (`attributions` gives it signed). Both passes
    explain the same class and run in one compiled call. Several layers: their Grad-CAM maps are averaged.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    maps = kc.GuidedGradCAM(model)(np.random.rand(2, 16, 16, 3))   # (2, 16, 16) float32 in [0, 1]
    ```
    """

    name = "guided-gradcam"
    aliases = ("guided-grad-cam",)
    uses_layer = True
    get_cam_weights = GradCAM.get_cam_weights

    def _attribute(self, structure: InputStructure, tensors: List[Any], host: List[Any], index: Any,
                   targets: Any) -> Tuple[Any, Any, Any]:
        ops = keras.ops
        guided, scores, idx = super()._attribute(structure, tensors, host, index, targets)
        # Grad-CAM of the class the guided pass explained (plain ReLUs: outside the guided patch).
        chosen = index if callable(targets) else idx
        activations, grads, _, _ = self._activations(structure.pack(tensors), self._score_fn(targets, chosen))
        maps = [self._layer_map(a, g, idx) for a, g in zip(activations, grads)]
        size = tuple(int(d) for d in self._input_layout.spatial_shape(guided.shape))
        cam = self._combine(maps, idx, size, True, True)
        return guided * ops.expand_dims(cam, self._input_layout.channel_axis), scores, idx
