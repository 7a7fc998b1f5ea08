"""Finding a layer in any Keras 3 model: by name (at any depth), by `"outer/inner"` path, by object, or
automatically: the last layer whose output has as many spatial axes as the input."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Union

import keras

from keras_cam import layout
from keras_cam.capture.dense import dense_layer
from keras_cam.capture.tokens import auto_token_layer, is_token_shape
from keras_cam._validation import close_matches
from keras_cam.capture.graph import LayerRef, graph_tensors, iter_layers, static_output_shape, sublayers
from keras_cam.capture.layouts import graph_layouts, probe_layouts

LayerSpec = Union[None, str, keras.layers.Layer]


def spatial_rank(model: keras.layers.Layer, sample: Any = None) -> Optional[int]:
    """Spatial axes of the model's image input (1, 2 or 3): its one input of rank 3 to 5, read from the
    graph or from `sample`; None when there is no such input or several."""
    shapes = [tuple(t.shape) for t in graph_tensors(model, "inputs")]
    if not shapes and sample is not None:
        shapes = [tuple(t.shape) for t in keras.tree.flatten(sample)]
    ranks = [len(s) - 2 for s in shapes if 3 <= len(s) <= 5]
    return ranks[0] if len(ranks) == 1 else None


def is_spatial_output(ref: Any, shape: Optional[Sequence[Optional[int]]], rank: Optional[int]) -> bool:
    """Whether `shape`, produced by `ref` (a `LayerRef` or a layer), is a feature map with `rank` spatial axes
    (any of 1 to 3 when None), each > 1 or unknown, in the layer's layout; in either layout when that is not
    known (it is asked for when the layer is explained)."""
    if shape is None:
        return False
    rank = len(shape) - 2 if rank is None else rank
    if not 1 <= rank <= 3 or len(shape) != rank + 2:
        return False
    try:
        return layout.layer_layout(ref, rank + 2).is_spatial(shape)
    except layout.LayoutError:
        return layout.Layout(rank, False).is_spatial(shape) or layout.Layout(rank, True).is_spatial(shape)


def with_layouts(model: keras.layers.Layer, refs: List[LayerRef]) -> List[LayerRef]:
    """`refs` with `channels_first` traced through the model's graph (unchanged where it says nothing)."""
    traced = graph_layouts(model)
    return [dataclasses.replace(r, channels_first=traced[id(r.layer)])
            if r.channels_first is None and traced.get(id(r.layer)) is not None else r for r in refs]


def spatial_layers(model: keras.layers.Layer, rank: Optional[int] = None) -> List[LayerRef]:
    """Layers whose (static) output is a feature map with as many spatial axes as the input, in model order."""
    rank = spatial_rank(model) if rank is None else rank
    out = []
    for ref in with_layouts(model, list(iter_layers(model))):
        if (isinstance(ref.layer, keras.Model) and sublayers(ref.layer)) or ref.in_layer:
            continue  # prefer the nested model's own layers; a layer's inner layers are named by path
        if is_spatial_output(ref, static_output_shape(ref.layer), rank):
            out.append(ref)
    return out


def _describe_spatial(model: keras.layers.Layer, limit: int = 12) -> str:
    names = [r.path for r in spatial_layers(model)]
    if not names:
        return "none found (no layer output with as many spatial axes as the input, each > 1, is visible statically)"
    if len(names) > limit:
        return "..., " + ", ".join(names[-limit:])
    return ", ".join(names)


def _needs(rank: Optional[int]) -> str:
    if rank is None:
        return "a feature map with 1 to 3 spatial axes, each > 1"
    example = layout.Layout(rank).describe()
    return f"a feature map with {rank} spatial {'axis' if rank == 1 else 'axes'}, as the input has, each > 1 " \
           f"(e.g. {example})"


def find_layer(
    model: keras.layers.Layer, layer: LayerSpec = None, require_spatial: bool = True, sample: Any = None
) -> LayerRef:
    """Resolves a layer spec to a layer of `model`.

    Args:
        model: any Keras 3 model (Sequential, Functional, subclassed, with nested models).
        layer: `None` for the last spatial layer (searching nested models): the last layer whose output has as
            many spatial axes (each > 1) as the input; a layer name (found at any depth), an `"outer/inner"`
            path, or a `keras.layers.Layer` that is part of the model.
        require_spatial: raise if the layer's known output is not such a feature map.
        sample: an input batch; lets `layer=None` work on subclassed models (no graph to read shapes from)
            by running it once with every layer intercepted to see which outputs are spatial.

    Returns:
        A `LayerRef`.
    """
    refs = list(iter_layers(model))
    rank = spatial_rank(model, sample)
    if layer is None:
        dense = dense_layer(model, refs, lambda: spatial_layers(model, rank))  # keras-hub dense models
        if dense is not None:
            return dense
        spatial = spatial_layers(model, rank)
        if not spatial and rank == 2:
            token = auto_token_layer(refs)  # a vision transformer: no feature map, but tokens
            if token is not None:
                return token
        if not spatial and sample is not None:
            spatial = _probe_spatial_layers(model, sample, rank)
        if not spatial:
            raise ValueError(
                f"Could not choose a layer automatically: model '{model.name}' has no layer whose output is "
                f"{_needs(rank)}. Pass `layer=` with the name of a convolutional layer."
            )
        return spatial[-1]
    if isinstance(layer, keras.layers.Layer):
        for ref in refs:
            if ref.layer is layer:
                found = ref
                break
        else:
            raise ValueError(
                f"Layer '{layer.name}' is not part of model '{model.name}'. Pass a layer of this model, "
                f"its name, or an 'outer/inner' path. Spatial layers: {_describe_spatial(model)}"
            )
    elif isinstance(layer, str):
        found = _find_by_name(model, refs, layer)
    else:
        raise ValueError(
            f"`layer` must be None, a layer name, an 'outer/inner' path or a keras Layer; got {type(layer).__name__}."
        )
    found = with_layouts(model, [found])[0]
    if require_spatial:
        shape = static_output_shape(found.layer)
        if shape is not None and not is_spatial_output(found, shape, rank) \
                and not is_token_shape(shape, rank):
            raise ValueError(
                f"Layer '{found.path}' has output shape {shape}, which is not a spatial feature map: class "
                f"activation maps need {_needs(rank)}. Pick a convolutional (or pooling, activation, ...) layer "
                f"instead. Spatial layers: {_describe_spatial(model)}"
            )
    return found


def _probe_spatial_layers(model: keras.layers.Layer, sample: Any, rank: Optional[int]) -> List[LayerRef]:
    """Spatial layers in call order, found by running `sample` through the model with every layer intercepted
    (their layouts traced from the same call)."""
    layouts, calls = probe_layouts(model, sample)
    found = []
    for ref, shape in calls:
        if ref.in_layer:
            continue
        ref = dataclasses.replace(ref, channels_first=layouts.get(id(ref.layer)))
        if shape is not None and is_spatial_output(ref, tuple(shape), rank):
            found.append(ref)
    return found


def _find_by_name(model: keras.layers.Layer, refs: List[LayerRef], name: str) -> LayerRef:
    for ref in refs:
        if ref.path == name:
            return ref
    # A bare name is found at any depth; the outermost match wins (names are unique within one model).
    matches = [ref for ref in refs if ref.layer.name == name]
    if matches:
        depth = min(r.path.count("/") for r in matches)
        outermost = [r for r in matches if r.path.count("/") == depth]
        if len(outermost) > 1:  # e.g. every transformer block's `ln_1`
            shown = ", ".join(repr(r.path) for r in outermost[:3]) + (", ..." if len(outermost) > 3 else "")
            raise ValueError(f"Layer name '{name}' is ambiguous in model '{model.name}': {len(outermost)} layers "
                             f"have it ({shown}). Pass the path of the one you mean.")
        return outermost[0]
    all_names = [r.path for r in refs] + [r.layer.name for r in refs]
    guesses = close_matches(name, dict.fromkeys(all_names))
    hint = f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else "."
    raise ValueError(
        f"Layer '{name}' not found in model '{model.name}'{hint} Spatial layers: {_describe_spatial(model)}"
    )
