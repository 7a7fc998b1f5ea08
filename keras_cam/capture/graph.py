"""What a model's graph says: its layers (at any depth), inputs, outputs, input layout and output sizes, and
which output layers end in softmax/sigmoid. Read from Keras' private attributes here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
import contextlib
from typing import Any, Iterator, List, Optional, Tuple

import keras
import numpy as np

from keras_cam import layout
from keras_cam.capture.hooks import patched, removable_activation


@dataclass(frozen=True)
class LayerRef:
    """A layer found in a model: the object and its `outer/inner` path."""

    layer: keras.layers.Layer
    path: str
    #: Whether the layer sits inside a layer that is not a model (keras-hub's `ViTEncoder` holds its blocks,
    #: each holds `ln_1`, `mha`, ...): reachable by path, but never chosen automatically by its static shape.
    in_layer: bool = False
    #: Whether the layer's output is channels_first, as traced through the model (`capture/layouts.py`) or
    #: given by the user; None when unknown (a layer's own `data_format` always decides, see `layout_of`).
    channels_first: Optional[bool] = None

    @property
    def name(self) -> str:
        return self.layer.name


def sublayers(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    # `Model.layers` is the graph order for Functional/Sequential and attribute order for subclassed models.
    if isinstance(layer, keras.Model):
        return [l for l in layer.layers if not isinstance(l, keras.layers.InputLayer)]
    return []


def _held_layers(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers a plain (non-model) layer holds as attributes, in the order it tracks them."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def iter_layers(model: keras.layers.Layer, prefix: str = "", in_layer: bool = False) -> Iterator[LayerRef]:
    """Yields every layer of `model`, depth first, containers before their own layers: the layers of nested
    models, and those that plain layers hold (e.g. `vit_encoder/transformer_block_12/ln_1`)."""
    children = sublayers(model) if isinstance(model, keras.Model) else _held_layers(model)
    for layer in children:
        path = f"{prefix}{layer.name}"
        yield LayerRef(layer, path, in_layer)
        yield from iter_layers(layer, prefix=path + "/",
                               in_layer=in_layer or not isinstance(layer, keras.Model))


def static_output_shape(layer: keras.layers.Layer) -> Optional[Tuple[Optional[int], ...]]:
    """The layer's symbolic output shape when the model has a graph, else None (subclassed models)."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None  # never called symbolically, or called at several places
    if isinstance(out, (list, tuple, dict)):
        return None
    return tuple(out.shape)


def graph_tensors(model: keras.layers.Layer, which: str) -> list:
    """The symbolic `inputs` or `outputs` of a Functional/Sequential model; [] for subclassed models."""
    if not isinstance(model, keras.Model):
        return []
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)  # built from an Input or a first call
        if model is None:
            return []
    return keras.tree.flatten(getattr(model, f"_{which}", None) or [])


def input_shape(model: keras.layers.Layer) -> Optional[Tuple[Optional[int], ...]]:
    """The shape (without the batch axis) of the model's single input: from its graph, or for a subclassed
    model the shape it was built with; None when it cannot be known. Raises for several inputs."""
    inputs = graph_tensors(model, "inputs")
    if len(inputs) > 1:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs; filter visualization and feature maps work on "
            "single-input image models. Pass the image branch (a sub-model) instead."
        )
    if inputs:
        return tuple(inputs[0].shape[1:])
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    return tuple(next(iter(shapes.values())))[1:] if len(shapes) == 1 else None


def input_layout(model: keras.layers.Layer, tensor_rank: int) -> layout.Layout:
    """The layout of the model's rank-`tensor_rank` image input: that of the first layer with a
    `data_format` (the model's convolutions and poolings), else Keras' global `image_data_format()`."""
    for ref in iter_layers(model):
        own = layout.data_format(ref.layer)
        if own is not None:
            return layout.Layout(tensor_rank - 2, own == "channels_first")
    return layout.Layout(tensor_rank - 2, keras.config.image_data_format() == "channels_first")


def output_units(model: keras.layers.Layer, sample: Any = None) -> Optional[int]:
    """K of the model's single (N, K) output: read from its graph, else (a subclassed model) from running
    `sample` once; None for other outputs, or when unknown without a sample."""
    outputs = graph_tensors(model, "outputs")
    if not outputs and sample is not None:
        out = model(sample, training=False)
        outputs = [] if isinstance(out, (list, tuple, dict)) else [out]  # several outputs: no class count
    if len(outputs) == 1 and len(outputs[0].shape) == 2:
        return int(outputs[0].shape[-1])
    return None


def output_names(model: keras.layers.Layer) -> List[str]:
    """Names of the model's outputs in order (their layers' names); [] when the model has no graph."""
    if isinstance(model, keras.Sequential):
        layers = sublayers(model)
        return [layers[-1].name] if layers else []
    names = getattr(model, "output_names", None) if graph_tensors(model, "outputs") else None
    return list(names or [])


def walk_layers(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    """Every sublayer of `layer`, depth first in layer order: `Model.layers`, then layers tracked as
    attributes (custom layers holding layers, subclassed models) that `layers` omits."""
    seen: set = set()
    found: List[keras.layers.Layer] = []

    def visit(node: keras.layers.Layer) -> None:
        children = list(node.layers) if isinstance(node, keras.Model) else []
        children += [c for c in node._flatten_layers(include_self=False, recursive=False) if c not in children]
        for child in children:
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                visit(child)

    visit(layer)
    return found


def output_layers(model: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers producing the model's outputs, descending into nested models (empty if unknown)."""
    outputs = getattr(model, "_outputs", None) if isinstance(model, keras.Model) else None
    if isinstance(model, keras.Sequential):
        layers = sublayers(model)
        if not layers:
            return []
        last = layers[-1]
        return output_layers(last) if isinstance(last, keras.Model) else [last]
    if not outputs:
        return []  # subclassed model: the output layer cannot be known without a graph
    result = []
    for t in keras.tree.flatten(outputs):
        history = getattr(t, "_keras_history", None)
        op = history.operation if history is not None else None
        if op is None:
            continue
        if isinstance(op, keras.Model):
            result.extend(output_layers(op))
        elif isinstance(op, keras.layers.Layer):
            result.append(op)
    return result


def logit_layers(model: keras.layers.Layer, sample: Any = None) -> List[keras.layers.Layer]:
    """The output layers whose softmax/sigmoid is removed to score on logits.

    For models with a graph they are read from it. A subclassed model has none, so the last sublayer with a
    softmax/sigmoid is a candidate, accepted only if it verifiably produces the output: on `sample` (one
    input batch), applying the activation to the patched model's output must give the model's own output.
    """
    layers = [l for l in output_layers(model) if removable_activation(l)]
    if layers or graph_tensors(model, "outputs") or sample is None:
        return layers
    candidates = [r.layer for r in iter_layers(model) if removable_activation(r.layer)]
    if not candidates:
        return []
    layer = candidates[-1]
    try:
        expected = keras.ops.convert_to_numpy(model(sample, training=False))
        with logits(model, [layer]):
            z = model(sample, training=False)
        activation = keras.activations.get(removable_activation(layer))
        got = keras.ops.convert_to_numpy(activation(z))
    except Exception:  # multi-output or exotic models: score on the outputs as they are
        return []
    if got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-6):
        return [layer]
    return []


@contextlib.contextmanager
def logits(model: keras.layers.Layer, layers: Optional[List[keras.layers.Layer]] = None) -> Iterator[None]:
    """Within the block, the given output layers (default: `logit_layers(model)`) skip their softmax/sigmoid.

    The layers are restored on exit, whatever happens inside.
    """
    if layers is None:
        layers = logit_layers(model)
    with contextlib.ExitStack() as stack:
        for layer in layers:
            if isinstance(layer, keras.layers.Softmax):
                stack.enter_context(patched(layer, "call", lambda inputs, *a, **k: inputs))
            elif removable_activation(layer):
                stack.enter_context(patched(layer, "activation", keras.activations.linear))
        yield
