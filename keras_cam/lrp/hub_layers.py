"""keras-hub's ViT layers under LRP (`keras_hub.models.ViTBackbone`; docs/architecture.md, "Relevance
propagation: transformers").

Those are custom layers that hold layers and apply operations between them, which relevance must not cross
as a gradient: an encoder block adds its residuals with `+`, and a gradient hands each branch all of the
relevance. Their calls are written out again here with the sums under zennit's `Norm` (each summand's share
in proportion to its contribution), the layers they hold keeping their own rules (LayerNormalization,
MultiHeadAttention, Dense, the patch convolution):

- `ViTEncoderBlock`: `x = x + mha(ln_1(x))`, `x + mlp(ln_2(x))`, both sums under `Norm`.
- `ViTPatchingAndEmbedding`: the patch convolution's output, flattened, the class token in front, plus the
  position embeddings under `Norm`: the position embeddings (and the class token) take their share, as a
  bias does, and hand it to nothing.
- `ViTEncoder` and `MLP` only run layers one after the other: their own gradient.

Recognized by exact class (module and name, keras-hub is not imported): a subclass or another version's
layer with another `call` is refused as unknown, and `LRP` checks on its first call that the rules leave the
model's output as it was (`propagation.check_forward`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import keras

from keras_cam.lrp.backward import apply_rule
from keras_cam.lrp.rules import Norm

ops = keras.ops
_VIT = "keras_hub.src.models.vit.vit_layers"
#: The layers rewritten here, by kind.
KINDS = ("vit_block", "vit_embedding")


def _is(layer: keras.layers.Layer, name: str) -> bool:
    return type(layer).__module__ == _VIT and type(layer).__name__ == name


def layer_kind(layer: keras.layers.Layer) -> Optional[str]:
    """"vit_block", "vit_embedding", "container" (layers in sequence) or None."""
    if _is(layer, "ViTEncoderBlock"):
        return "vit_block"
    if _is(layer, "ViTPatchingAndEmbedding"):
        return "vit_embedding"
    if _is(layer, "ViTEncoder") or _is(layer, "MLP"):
        return "container"
    return None


def call_for(layer: keras.layers.Layer, kind: str, rule: Norm) -> Callable:
    """The layer's call with its sums under `rule` (Norm)."""

    def add(a: Any, b: Any) -> Any:
        return apply_rule(rule, lambda xs, k, bias: xs[0] + xs[1], [a, b], [], None)

    def block(inputs, *args, **kwargs):
        x = layer.dropout(layer.mha(*([layer.layer_norm_1(inputs)] * 2)))
        x = add(x, inputs)
        return add(x, layer.mlp(layer.layer_norm_2(x)))

    def embedding(inputs, *args, **kwargs):
        patches = layer.patch_embedding(inputs)
        if layer.data_format == "channels_first":
            patches = ops.transpose(patches, (0, 2, 3, 1))
        shape = ops.shape(patches)
        patches = ops.reshape(patches, [shape[0], -1, shape[-1]])
        if layer.use_class_token:
            patches = ops.concatenate([ops.tile(layer.class_token, (shape[0], 1, 1)), patches], axis=1)
        return add(patches, layer.position_embedding(layer.position_ids))

    return block if kind == "vit_block" else embedding
