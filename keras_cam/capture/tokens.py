"""Token maps: a vision transformer's tokens `(N, L, D)` laid out as the feature map `(N, h, w, D)` they
stand for, so every method explains transformers as it explains CNNs (docs/architecture.md, "Token maps").

`L = prefix + h * w`: the grid `(h, w)` comes from the patch embedding (a convolution whose stride equals its
kernel, as in keras-hub's ViT, DeiT and DINOv2 patching layers) and the input size, or, failing that, from the
input's aspect ratio; the `prefix` tokens in front (class token, register or distillation tokens) are
dropped, and the rest are read row-major, as patch embeddings flatten them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import keras

from keras_cam.capture.graph import LayerRef, iter_layers

#: `reshape=` of the explainers: None (automatic), a grid `(h, w)`, or `(tensor) -> (N, h, w, C)`.
Reshape = Union[None, Tuple[int, int], Callable[[Any], Any]]

_MAX_PREFIX = 16  # class + register/distillation tokens seen in practice: 1 to 5


def is_token_shape(shape: Optional[Sequence[Optional[int]]], rank: Optional[int]) -> bool:
    """Whether a layer output of `shape` is tokens `(N, L, D)` of a model with an image input (rank 2)."""
    return rank == 2 and shape is not None and len(shape) == 3 and (shape[1] is None or shape[1] > 1)


def auto_token_layer(refs: Iterable[LayerRef]) -> Optional[LayerRef]:
    """The input normalization of the last attention block (`.../transformer_block_L/ln_1`), or None when the
    model has no attention layer (`MultiHeadAttention`, or a model library's `...Attention` such as Swin's).

    Not the last block's output: when the head reads the class token only, the patch tokens there get no
    gradient at all, and every gradient map is zero. Before the last attention they still do.
    """
    refs = list(refs)
    last = max((i for i, r in enumerate(refs) if _is_attention(r.layer)), default=None)
    if last is None:
        return None
    norms = [r for r in refs[:last] if isinstance(r.layer, keras.layers.LayerNormalization)]
    if not norms:
        return None
    parent = refs[last].path.rpartition("/")[0]
    same_block = [r for r in norms if r.path.rpartition("/")[0] == parent]
    return (same_block or norms)[-1]


def _is_attention(layer: keras.layers.Layer) -> bool:
    """Keras' `MultiHeadAttention`, or an attention layer of a model library (keras-hub's Swin
    `WindowAttention`, ...): a layer, not a block holding one, whose class name says attention."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return True
    name = type(layer).__name__
    return name.endswith("Attention") and not isinstance(layer, keras.Model)


def _patch_convolution(model: keras.layers.Layer) -> Optional[keras.layers.Layer]:
    """The first 2-D convolution whose stride equals its kernel (> 1): the patch embedding."""
    for ref in iter_layers(model):
        layer = ref.layer
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.Conv2DTranspose):
            strides, kernel = tuple(layer.strides), tuple(layer.kernel_size)
            if strides == kernel and max(strides) > 1:
                return layer
    return None


def _grid_of(conv: keras.layers.Layer, size: Tuple[int, int]) -> Tuple[int, int]:
    same = getattr(conv, "padding", "valid") == "same"
    return tuple(-(-s // k) if same else s // k for s, k in zip(size, conv.strides))  # type: ignore[return-value]


def _aspect_grids(length: int, size: Tuple[int, int]) -> List[Tuple[int, int, int]]:
    """(prefix, h, w) with h * w = length - prefix, h : w = H : W and h, w >= 2, fewest prefix tokens first."""
    found = []
    for prefix in range(min(_MAX_PREFIX, length - 1) + 1):
        n = length - prefix
        for h in range(2, n // 2 + 1):  # a grid of at least 2 x 2
            if n % h == 0 and h * size[1] == (n // h) * size[0]:
                found.append((prefix, h, n // h))
    return found


def token_grid(model: keras.layers.Layer, path: str, length: int, size: Tuple[int, int],
               reshape: Reshape = None) -> Tuple[int, int, int]:
    """(prefix, h, w) for `length` tokens of layer `path` when the model's input is `size` = (H, W)."""
    if reshape is not None:
        h, w = (int(d) for d in reshape)
        if h < 1 or w < 1 or h * w > length:
            raise ValueError(f"`reshape={tuple(reshape)}` needs {h * w} tokens, but layer '{path}' outputs "
                             f"{length}. Pass a grid (h, w) with h * w <= {length}.")
        return length - h * w, h, w
    tried = []
    conv = _patch_convolution(model)
    if conv is not None:
        h, w = _grid_of(conv, size)
        if 0 <= length - h * w <= _MAX_PREFIX:
            return length - h * w, h, w
        tried.append(f"the patch embedding '{conv.name}' (stride {tuple(conv.strides)}: a {h}x{w} grid)")
    grids = _aspect_grids(length, size)
    if grids:
        return grids[0]
    tried.append(f"every h x w = L - prefix with h : w = {size[0]} : {size[1]} (h, w >= 2), prefix 0 to "
                 f"{_MAX_PREFIX}")
    raise ValueError(
        f"Layer '{path}' outputs {length} tokens, which could not be laid out on a grid for the "
        f"{size[0]}x{size[1]} input; tried {' and '.join(tried)}. Pass `reshape=(h, w)` (the last h * w "
        "tokens, row-major) or a callable `reshape=lambda tokens: ...` returning (N, h, w, C)."
    )


def tokens_to_grid(model: keras.layers.Layer, path: str, activations: Any, grads: Any, size: Tuple[int, int],
                   reshape: Reshape = None) -> Tuple[Any, Any]:
    """Activations `(N, L, D)` and their gradients (`(N, L, D)`, `(N, K, L, D)` or None) as channels_last
    grids `(N, h, w, D)` (`(N, K, h, w, D)`), prefix tokens dropped."""
    ops = keras.ops
    if callable(reshape):
        def apply(x):
            lead = tuple(x.shape[:-2])
            out = reshape(ops.reshape(x, (-1,) + tuple(x.shape[-2:])))
            if len(out.shape) != 4:
                raise ValueError(f"`reshape` must return (N, h, w, C) for tokens {tuple(x.shape[-2:])}; it "
                                 f"returned shape {tuple(out.shape)}.")
            return ops.reshape(out, (-1,) + lead[1:] + tuple(out.shape[1:]))
    else:
        prefix, h, w = token_grid(model, path, int(activations.shape[1]), size, reshape)

        def apply(x):
            lead = tuple(x.shape[1:-2])
            return ops.reshape(x[..., prefix:, :], (-1,) + lead + (h, w, int(x.shape[-1])))
    return apply(activations), (None if grads is None else apply(grads))
