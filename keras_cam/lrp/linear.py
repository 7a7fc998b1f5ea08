"""The linear maps of the layers whose weights LRP reads, as stages `f(x, [kernel], bias)` with their weights,
a BatchNormalization that follows folded into the last stage (the canonizer; docs/architecture.md,
"Relevance propagation")."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import keras

ops = keras.ops
L = keras.layers


# -- the linear maps of the layers keras-cam knows: [(f(x, kernels, bias), kernels, bias)] --------------------

def _add_bias(z: Any, bias: Any, channels_first: bool) -> Any:
    if bias is None:
        return z
    if channels_first and len(z.shape) > 2:
        bias = ops.reshape(bias, (1, -1) + (1,) * (len(z.shape) - 2))
    return z + bias


def stages(layer: keras.layers.Layer, fold: Optional[keras.layers.Layer]) -> List[Tuple[Callable, list, Any]]:
    """The layer as linear stages `f(x, [kernel], bias)` with its weights (BatchNormalization `fold` merged
    into the last stage)."""
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    bias = layer.bias if getattr(layer, "use_bias", True) and getattr(layer, "bias", None) is not None else None
    if isinstance(layer, L.EinsumDense):
        parts = [(lambda x, k, b, layer=layer: _add_bias(ops.einsum(layer.equation, x, k[0]), b, False),
                  [layer.kernel], bias)]
        axis = -1
    elif isinstance(layer, L.Dense):
        parts = [(lambda x, k, b: _add_bias(ops.matmul(x, k[0]), b, False), [layer.kernel], bias)]
        axis = -1
    elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        def depthwise(x, k, b, layer=layer):
            return ops.depthwise_conv(x, k[0], strides=layer.strides, padding=layer.padding,
                                      dilation_rate=layer.dilation_rate, data_format=layer.data_format)

        def pointwise(x, k, b, layer=layer):
            return _add_bias(ops.conv(x, k[0], strides=1, padding="valid", data_format=layer.data_format), b, first)

        parts = [(depthwise, [layer.depthwise_kernel], None), (pointwise, [layer.pointwise_kernel], bias)]
        axis = -1
    elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        def depthwise(x, k, b, layer=layer):
            z = ops.depthwise_conv(x, k[0], strides=layer.strides, padding=layer.padding,
                                   dilation_rate=layer.dilation_rate, data_format=layer.data_format)
            return _add_bias(z, b, first)

        parts = [(depthwise, [layer.kernel], bias)]
        axis = "depthwise"
    elif isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        def transposed(x, k, b, layer=layer):
            z = ops.conv_transpose(x, k[0], strides=list(layer.strides), padding=layer.padding,
                                   output_padding=layer.output_padding, data_format=layer.data_format,
                                   dilation_rate=layer.dilation_rate)
            return _add_bias(z, b, first)

        parts = [(transposed, [layer.kernel], bias)]
        axis = -2
    else:  # Conv1D/2D/3D, groups included
        parts = [(lambda x, k, b, layer=layer: _add_bias(layer.convolution_op(x, k[0]), b, first),
                   [layer.kernel], bias)]
        axis = -1
    parts = [(fn, [ops.convert_to_tensor(k) for k in kernels], None if b is None else ops.convert_to_tensor(b))
             for fn, kernels, b in parts]
    if fold is None:
        return parts
    fn, kernels, bias = parts[-1]
    scale, shift = batchnorm_affine(fold)
    kernel = ops.convert_to_tensor(kernels[0])
    if axis == "depthwise":  # (*k, in, multiplier): output channel c * multiplier + m
        factor = ops.reshape(scale, tuple(kernel.shape[-2:]))
    elif axis == -2:
        factor = ops.reshape(scale, (-1, 1))
    else:
        factor = scale
    folded_bias = shift if bias is None else ops.cast(bias, "float32") * scale + shift
    return parts[:-1] + [(fn, [kernel * factor], folded_bias)]


def batchnorm_affine(layer: keras.layers.Layer) -> Tuple[Any, Any]:
    """BatchNormalization at inference as `x * scale + shift` per channel."""
    mean, var = ops.cast(layer.moving_mean, "float32"), ops.cast(layer.moving_variance, "float32")
    gamma = ops.cast(layer.gamma, "float32") if layer.scale else ops.ones_like(mean)
    beta = ops.cast(layer.beta, "float32") if layer.center else ops.zeros_like(mean)
    scale = gamma / ops.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale
