"""FullGrad (Srinivas & Fleuret 2019): the input-gradient times the input, plus every bias-gradient.

For a network with biases, `f(x) = grad_x f . x + sum_b grad_b f . b` exactly when it is piecewise linear:
the bias-gradients are the part of the output the input-gradient misses. The map adds both, at the input's
resolution, after the post-processing `psi` (absolute value, min-max normalization, upsampling).
"""
from __future__ import annotations

import contextlib
from typing import Any, List, Tuple

import keras

from keras_cam import capture, layout
from keras_cam._inputs import InputStructure
from keras_cam.capture.hooks import current, patched, repeated_layer_advice
from keras_cam.explainers.attribution import InputGradientExplainer
from keras_cam.explainers.maps import minmax


def bias_layers(model: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers whose bias-gradients FullGrad adds: convolutions with a bias (any `data_format` layer with a
    (C,) `bias`: Conv1D/2D/3D, their transposes, depthwise and separable ones) and BatchNormalization."""
    found = []
    for layer in capture.walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "data_format") and len(getattr(getattr(layer, "bias", None), "shape", ())) == 1:
            found.append(layer)
    return found


def effective_bias(layer: keras.layers.Layer) -> Any:
    """The bias a layer adds per channel: a convolution's `bias`; for BatchNormalization at inference,
    `beta - moving_mean * gamma / sqrt(moving_var + epsilon)` (gamma 1 and beta 0 when not learned)."""
    ops = keras.ops
    if not isinstance(layer, keras.layers.BatchNormalization):
        return ops.cast(layer.bias, "float32")
    mean, var = ops.cast(layer.moving_mean, "float32"), ops.cast(layer.moving_variance, "float32")
    gamma = ops.cast(layer.gamma, "float32") if layer.scale else ops.ones_like(mean)
    beta = ops.cast(layer.beta, "float32") if layer.center else ops.zeros_like(mean)
    return beta - mean * gamma / ops.sqrt(var + layer.epsilon)


def _channel_axis(layer: keras.layers.Layer, rank: int) -> int:
    if isinstance(layer, keras.layers.BatchNormalization):
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        return axis % rank
    return layout.layer_layout(layer, rank).channel_axis


def _psi(term: Any) -> Any:
    """|term| (M, *spatial, C) min-max normalized per row over every position and channel, then summed over
    channels: (M, *spatial)."""
    return keras.ops.sum(minmax(keras.ops.abs(term)), axis=-1)


class FullGrad(InputGradientExplainer):
    """FullGrad: `psi(|grad_x f * x|) + sum_l psi(|grad_{z_l} f * b_l|)` over every convolution and
    BatchNormalization `l` with a bias, at the input's resolution.

    `z_l` is the layer's pre-activation output (a convolution's fused activation is applied after it is
    captured) and `b_l` its bias, broadcast over the positions: `grad_{z_l} f * b_l` is the bias-gradient
    per position and channel. A BatchNormalization's bias is its inference-time offset
    `beta - moving_mean * gamma / sqrt(moving_var + epsilon)`. `psi` takes the absolute value, min-max
    normalizes per image over all positions and channels, sums over channels and upsamples (linear,
    bilinear or trilinear) to the input; the input term is normalized and summed the same way. One compiled
    forward and backward pass per chunk gives the input-gradient and every layer's output-gradient together
    (the seam's `input_layer_grads`: the layers are intercepted, not rebuilt). Layers whose output is not a
    feature map of the input's rank (e.g. after flattening) are left out, as in the paper.

    Differs from pytorch-grad-cam's `FullGrad`, which min-max normalizes each channel separately before
    summing: here the normalization is over all channels of a layer at once, as in the authors' code
    (`idiap/fullgrad-saliency`), so a channel with a small bias-gradient stays small. Keras layers fuse their
    activation into the convolution, so the activation is moved after the capture point (pytorch-grad-cam
    hooks `Conv2d`, whose output is the pre-activation already). Convolutions of any spatial rank and
    layout count, not only `Conv2d` and `BatchNorm2d`. `layer` is ignored (FullGrad uses every bias layer);
    `attributions` gives the unnormalized map as one channel in the input's layout, (N, *spatial, 1).

    Args:
        model, use_logits, input_index, input_name, binary: as for every explainer (see `BaseCAM`).
        layer: ignored.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])
    maps = kc.FullGrad(model)(np.random.rand(2, 16, 16, 3))   # (2, 16, 16) float32 in [0, 1]
    ```
    """

    name = "fullgrad"
    aliases = ("full-grad",)

    def reduce(self, attributions: Any) -> Any:
        return attributions[..., 0]  # the map itself, carried as one channel

    def _attribute(self, structure: InputStructure, tensors: List[Any], host: List[Any], index: Any,
                   targets: Any) -> Tuple[Any, Any, Any]:
        ops = keras.ops
        i = structure.image_index
        x = tensors[i]
        layers = bias_layers(self.model)
        # Where a convolution fuses its activation, the capture point is moved before it.
        linear = (None, keras.activations.linear)
        fused = [layer for layer in layers if getattr(layer, "activation", None) not in linear]

        def forward(xx):
            model_inputs = list(tensors)
            model_inputs[i] = xx
            with self._logits_scope(), contextlib.ExitStack() as stack:
                for layer in fused:
                    activation = current(layer, "activation")
                    stack.enter_context(patched(layer, "activation", keras.activations.linear))
                    stack.enter_context(capture.intercept(layer, activation))
                outputs = self.model(structure.pack(model_inputs), training=False)
            return self._score_fn(targets, index)(outputs)

        with repeated_layer_advice("FullGrad adds the bias gradients of every convolution and "
                                   "BatchNormalization at the one place each runs, so it does not explain models "
                                   "that reuse one; use another method (e.g. GradCAM, Saliency) for this model."):
            x_grad, acts, grads, (scores, idx) = self._seam.input_layer_grads(self.model, x, layers, forward)
        input_layout = self._input_layout
        size = input_layout.spatial_shape(x.shape)
        x32 = ops.cast(x, "float32")
        fullgrad = _psi(input_layout.to_channels_last(ops.cast(x_grad, "float32") * x32))
        for layer, a, g in zip(layers, acts, grads):
            if a is None or len(a.shape) != len(x.shape):
                continue  # not called, or not a feature map of the input's rank
            rank = len(a.shape)
            axis = _channel_axis(layer, rank)
            shape = [1] * rank
            shape[axis] = -1
            term = ops.cast(g, "float32") * ops.reshape(effective_bias(layer), shape)
            term = _psi(ops.moveaxis(term, axis, -1))
            if tuple(term.shape[1:]) != tuple(size):
                term = layout.resize(term, size)
            fullgrad = fullgrad + term
        carried = ops.expand_dims(fullgrad, 1 if input_layout.channels_first else -1)
        return carried, scores, idx
