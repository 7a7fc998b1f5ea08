"""AttnLRP for the transformer layers of Keras (Achtibat et al. 2024; docs/architecture.md, "Relevance
propagation: transformers").

- `keras.layers.LayerNormalization` gets the LN-rule (`rules.LayerNorm`): the layer recomputed with its
  division by the standard deviation held constant (`stop_gradient`), the same value, a linear map whose
  epsilon rule is the rule.
- `keras.layers.MultiHeadAttention` gets `rules.AttnLRP`: its `_compute_attention` (the part between the
  projections, which are EinsumDense layers with the composite's Dense rule) is replaced for the call by the
  same computation written with rules: the scaling of the queries passes relevance, the two products get the
  uniform rule, the softmax the epsilon rule at its input. The masks, the causal mask included, are applied
  as Keras applies them; attention dropout is off at inference.

Layers subclassing these with their own `call` or `_compute_attention` are not these layers: refused as
unknown unless given a rule.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import keras

from keras_cam.lrp.backward import apply_rule, pass_through
from keras_cam.lrp.rules import AttnLRP, Epsilon, LayerNorm, UniformProduct

ops = keras.ops
sg = ops.stop_gradient
L = keras.layers


def layer_kind(layer: keras.layers.Layer) -> Optional[str]:
    """"attention", "layernorm" or None."""
    if isinstance(layer, L.MultiHeadAttention) and (
            type(layer)._compute_attention is L.MultiHeadAttention._compute_attention):
        return "attention"
    if isinstance(layer, L.LayerNormalization) and type(layer).call is L.LayerNormalization.call:
        return "layernorm"
    return None


def default_rule(kind: str) -> Any:
    return AttnLRP() if kind == "attention" else LayerNorm()


def check_rule(rule: Any, kind: str, layer: keras.layers.Layer) -> None:
    """AttnLRP and LayerNorm are the rules of those layers only."""
    for cls, wanted, what in ((AttnLRP, "attention", "keras.layers.MultiHeadAttention"),
                              (LayerNorm, "layernorm", "keras.layers.LayerNormalization")):
        if type(rule) is cls and kind != wanted:
            raise ValueError(f"Rule {rule!r} is the rule of {what} layers; layer '{layer.name}' is a "
                             f"{type(layer).__name__}. Give it kc.lrp.Epsilon() or kc.lrp.Pass().")


def layernorm_call(layer: keras.layers.Layer, rule: LayerNorm) -> Callable:
    """LayerNormalization's call with the LN-rule as its backward pass."""

    def normalized(xs, k, b):
        x = xs[0]
        rank = len(x.shape)
        axes = [a % rank for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis])]
        inverse = sg(ops.rsqrt(ops.var(x, axis=axes, keepdims=True) + layer.epsilon))
        # As Keras computes it: `rms_scaling` divides by the standard deviation too, without centring.
        y = x * inverse if layer.rms_scaling else (x - ops.mean(x, axis=axes, keepdims=True)) * inverse
        shape = [1] * rank
        for a in axes:
            shape[a] = x.shape[a]
        if layer.gamma is not None:
            y = y * ops.reshape(ops.cast(layer.gamma, y.dtype), shape)
        if layer.beta is not None and not layer.rms_scaling:
            y = y + ops.reshape(ops.cast(layer.beta, y.dtype), shape)
        return y

    def call(inputs, *args, **kwargs):
        return apply_rule(rule, normalized, [inputs], [], None)  # LayerNorm is Epsilon on that map

    return call


def attention_call(layer: keras.layers.Layer, rule: AttnLRP) -> Callable:
    """MultiHeadAttention's `_compute_attention` with AttnLRP as its backward pass: `(output, weights)`."""

    product, softmax = UniformProduct(rule.epsilon), Epsilon(rule.epsilon)

    def masked_softmax(scores, mask):
        if mask is not None:  # as MultiHeadAttention._masked_softmax, with the Softmax layer's own call
            axis = -len(layer._attention_axes) * 2 - 1
            for _ in range(len(scores.shape) - len(mask.shape)):
                mask = ops.expand_dims(mask, axis=axis)
        return type(layer._softmax).call(layer._softmax, scores, mask=mask)

    def compute(query, key, value, attention_mask=None, training=None, return_attention_scores=False,
                use_causal_mask=False, **kwargs):
        if use_causal_mask:
            causal = layer._compute_causal_mask(query, value)
            attention_mask = causal if attention_mask is None else ops.logical_and(
                ops.cast(attention_mask, "bool"), causal)
        scaled = pass_through(query * ops.cast(layer._inverse_sqrt_key_dim, query.dtype), query)
        scores = apply_rule(product, lambda xs, k, b: ops.einsum(layer._dot_product_equation, xs[0], xs[1]),
                            [key, scaled], [], None)
        weights = apply_rule(softmax, lambda xs, k, b: masked_softmax(xs[0], attention_mask), [scores], [], None)
        output = apply_rule(product, lambda xs, k, b: ops.einsum(layer._combine_equation, xs[0], xs[1]),
                            [weights, value], [], None)
        return output, weights

    return compute
