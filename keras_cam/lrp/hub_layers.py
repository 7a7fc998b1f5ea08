"""keras-hub's ViT, DeiT and DINOv2 layers under LRP (`keras_hub.models.ViTBackbone`, `DeiTBackbone`,
`DINOV2Backbone`;
docs/architecture.md, "Relevance propagation: transformers").

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
- DeiT: `DeiTEncoderBlock` (`x = x + mha(ln_1(x))`, then its `DeiTOutput` adds `dense(mlp(ln_2(x)))` to `x`),
  `DeiTOutput` and `DeiTEmbeddings` (class and distillation tokens, then the position embeddings) likewise;
  `DeiTEncoder` and `DeiTIntermediate` only chain layers.
- DINOv2: `DINOV2Layer` (two residual sums, each branch scaled by a LayerScale), `DINOV2Embedding` (class
  token, position embeddings, then register tokens) likewise; `DINOV2LayerScale` (a per-channel factor, whose
  epsilon rule hands relevance on unchanged) and `DINOV2DropPath` (the identity at inference) pass relevance;
  `DINOV2Encoder`, `DINOV2Attention`, `DINOV2MLP` and `DINOV2PatchEmbedding` only chain layers and reshape.
  `DINOV2SwiGLUFFN` multiplies two branches: no rule, refused by name.

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
_DEIT = "keras_hub.src.models.deit.deit_layers"
_DINO = "keras_hub.src.models.dinov2.dinov2_layers"
#: keras-hub's layers by (module, class name): the kind each is here.
_KINDS = {(_VIT, "ViTEncoderBlock"): "vit_block", (_VIT, "ViTPatchingAndEmbedding"): "vit_embedding",
          (_VIT, "ViTEncoder"): "container", (_VIT, "MLP"): "container",
          (_DEIT, "DeiTEncoderBlock"): "deit_block", (_DEIT, "DeiTOutput"): "deit_output",
          (_DEIT, "DeiTEmbeddings"): "deit_embedding", (_DEIT, "DeiTEncoder"): "container",
          (_DEIT, "DeiTIntermediate"): "container",
          (_DINO, "DINOV2Layer"): "dino_block", (_DINO, "DINOV2Embedding"): "dino_embedding",
          (_DINO, "DINOV2LayerScale"): "pass", (_DINO, "DINOV2DropPath"): "pass",
          (_DINO, "DINOV2Encoder"): "container", (_DINO, "DINOV2Attention"): "container",
          (_DINO, "DINOV2MLP"): "container", (_DINO, "DINOV2PatchEmbedding"): "container"}
#: The layers rewritten here, by kind.
KINDS = ("vit_block", "vit_embedding", "deit_block", "deit_output", "deit_embedding", "dino_block",
         "dino_embedding")


def layer_kind(layer: keras.layers.Layer) -> Optional[str]:
    """One of `KINDS`, "container" (layers in sequence) or None."""
    return _KINDS.get((type(layer).__module__, type(layer).__name__))


def call_for(layer: keras.layers.Layer, kind: str, rule: Norm) -> Callable:
    """The layer's call with its sums under `rule` (Norm)."""

    def add(a: Any, b: Any) -> Any:
        return apply_rule(rule, lambda xs, k, bias: xs[0] + xs[1], [a, b], [], None)

    def block(inputs, *args, **kwargs):
        x = layer.dropout(layer.mha(*([layer.layer_norm_1(inputs)] * 2)))
        x = add(x, inputs)
        return add(x, layer.mlp(layer.layer_norm_2(x)))

    def patches_of(inputs):
        patches = layer.patch_embedding(inputs)
        if layer.data_format == "channels_first":
            patches = ops.transpose(patches, (0, 2, 3, 1))
        shape = ops.shape(patches)
        return ops.reshape(patches, [shape[0], -1, shape[-1]]), shape[0]

    def embedding(inputs, *args, **kwargs):
        patches, n = patches_of(inputs)
        if layer.use_class_token:
            patches = ops.concatenate([ops.tile(layer.class_token, (n, 1, 1)), patches], axis=1)
        return add(patches, layer.position_embedding(layer.position_ids))

    def deit_embedding(inputs, bool_masked_pos=None):
        patches, n = patches_of(inputs)  # (masked patches are for pretraining: not at inference)
        tokens = [ops.tile(layer.class_token, (n, 1, 1)), ops.tile(layer.distillation_token, (n, 1, 1))]
        positions = ops.convert_to_tensor(layer.position_embedding)  # a variable: not a custom gradient's input
        return layer.dropout(add(ops.concatenate(tokens + [patches], axis=1), positions))

    def deit_block(hidden_states, attention_mask=None, return_attention_scores=False):
        x = layer.layer_norm_1(hidden_states)
        scores = None
        if return_attention_scores:
            x, scores = layer.mha(x, x, attention_mask=attention_mask, return_attention_scores=True)
        else:
            x = layer.mha(x, x, attention_mask=attention_mask)
        x = add(x, hidden_states)
        return layer.output_layer(layer.mlp(layer.layer_norm_2(x)), x), scores

    def deit_output(hidden_states, input_tensor):
        return add(layer.dropout(layer.dense(hidden_states)), input_tensor)

    def dino_embedding(inputs, masks=None, training=None):
        n = ops.shape(inputs)[0]  # (masks are for pretraining: not at inference)
        patches = layer.patch_embeddings(inputs, training=training)
        tokens = ops.concatenate([ops.tile(layer.cls_token, (n, 1, 1)), patches], axis=1)
        tokens = add(tokens, ops.convert_to_tensor(layer.interpolated_position_embeddings))
        if layer.num_register_tokens > 0:
            registers = ops.tile(layer.register_tokens, (n, 1, 1))
            tokens = ops.concatenate([tokens[:, :1], registers, tokens[:, 1:]], axis=1)
        return layer.dropout(tokens, training=training)

    def dino_block(inputs, training=None):
        x = layer.layer_scale1(layer.attention(layer.norm1(inputs, training=training), training=training))
        hidden = add(layer.drop_path(x, training=training), inputs)
        x = layer.layer_scale2(layer.mlp(layer.norm2(hidden, training=training), training=training))
        return add(layer.drop_path(x, training=training), hidden)

    return {"vit_block": block, "vit_embedding": embedding, "deit_embedding": deit_embedding,
            "dino_embedding": dino_embedding, "dino_block": dino_block,
            "deit_block": deit_block, "deit_output": deit_output}[kind]
