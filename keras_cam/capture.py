"""Finding a layer in any Keras 3 model and capturing its output by intercepting its call.

Peers build `keras.Model(model.inputs, [layer.output, model.output])`, which fails on nested backbones,
Sequential models and subclassed models. Here the target layer's `call` is wrapped for the duration of one
model call instead (docs/architecture.md, "Call interception"): the wrapper hands the layer's output to a
`transform` (which records it and, for gradients, makes it a differentiation point) and returns what the
transform returns. The wrapper is an instance attribute shadowing the class method, installed and removed in
`try/finally`, so the model is exactly what the user gave after any call, also one that raised.

This module is the only one that reads Keras private attributes (`_functional`, `_inputs`, `_outputs`,
`_keras_history`, `_flatten_layers`, `_build_shapes_dict`); everything else asks it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np

from keras_cam import layout
from keras_cam._validation import close_matches

LayerSpec = Union[None, str, keras.layers.Layer]

_ACTIVATIONS_WITH_LOGITS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class LayerRef:
    """A layer found in a model: the object and its `outer/inner` path."""

    layer: keras.layers.Layer
    path: str

    @property
    def name(self) -> str:
        return self.layer.name


def _sublayers(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    # `Model.layers` is the graph order for Functional/Sequential and attribute order for subclassed models.
    if isinstance(layer, keras.Model):
        return [l for l in layer.layers if not isinstance(l, keras.layers.InputLayer)]
    return []


def iter_layers(model: keras.layers.Layer, prefix: str = "") -> Iterator[LayerRef]:
    """Yields every layer of `model`, depth first, nested models before their own layers."""
    for layer in _sublayers(model):
        path = f"{prefix}{layer.name}"
        yield LayerRef(layer, path)
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer, prefix=path + "/")


def static_output_shape(layer: keras.layers.Layer) -> Optional[Tuple[Optional[int], ...]]:
    """The layer's symbolic output shape when the model has a graph, else None (subclassed models)."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None  # never called symbolically, or called at several places
    if isinstance(out, (list, tuple, dict)):
        return None
    return tuple(out.shape)


def spatial_rank(model: keras.layers.Layer, sample: Any = None) -> Optional[int]:
    """Spatial axes of the model's image input (1, 2 or 3): its one input of rank 3 to 5, read from the
    graph or from `sample`; None when there is no such input or several."""
    shapes = [tuple(t.shape) for t in graph_tensors(model, "inputs")]
    if not shapes and sample is not None:
        shapes = [tuple(t.shape) for t in keras.tree.flatten(sample)]
    ranks = [len(s) - 2 for s in shapes if 3 <= len(s) <= 5]
    return ranks[0] if len(ranks) == 1 else None


def is_spatial_output(layer: keras.layers.Layer, shape: Optional[Sequence[Optional[int]]],
                      rank: Optional[int]) -> bool:
    """Whether `shape`, produced by `layer`, is a feature map with `rank` spatial axes (any of 1 to 3 when
    None), each > 1 or unknown, in the layer's layout."""
    if shape is None:
        return False
    rank = len(shape) - 2 if rank is None else rank
    return 1 <= rank <= 3 and layout.layer_layout(layer, rank + 2).is_spatial(shape)


def spatial_layers(model: keras.layers.Layer, rank: Optional[int] = None) -> List[LayerRef]:
    """Layers whose (static) output is a feature map with as many spatial axes as the input, in model order."""
    rank = spatial_rank(model) if rank is None else rank
    out = []
    for ref in iter_layers(model):
        if isinstance(ref.layer, keras.Model) and _sublayers(ref.layer):
            continue  # prefer the nested model's own layers
        if is_spatial_output(ref.layer, static_output_shape(ref.layer), rank):
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
        spatial = spatial_layers(model, rank)
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
    if require_spatial:
        shape = static_output_shape(found.layer)
        if shape is not None and not is_spatial_output(found.layer, shape, rank):
            raise ValueError(
                f"Layer '{found.path}' has output shape {shape}, which is not a spatial feature map: class "
                f"activation maps need {_needs(rank)}. Pick a convolutional (or pooling, activation, ...) layer "
                f"instead. Spatial layers: {_describe_spatial(model)}"
            )
    return found


def _probe_spatial_layers(model: keras.layers.Layer, sample: Any, rank: Optional[int]) -> List[LayerRef]:
    """Spatial layers in call order, found by running `sample` through the model with every layer intercepted."""
    calls: List[Tuple[LayerRef, Any]] = []

    def recorder(ref: LayerRef) -> Callable[[Any], Any]:
        def transform(out):
            calls.append((ref, getattr(out, "shape", None)))
            return out

        return transform

    with contextlib.ExitStack() as stack:
        for ref in iter_layers(model):
            if not (isinstance(ref.layer, keras.Model) and _sublayers(ref.layer)):
                stack.enter_context(intercept(ref.layer, recorder(ref)))
        model(sample, training=False)
    return [ref for ref, shape in calls
            if shape is not None and is_spatial_output(ref.layer, tuple(shape), rank)]


def _find_by_name(model: keras.layers.Layer, refs: List[LayerRef], name: str) -> LayerRef:
    for ref in refs:
        if ref.path == name:
            return ref
    # A bare name is found at any depth; the outermost match wins (names are unique within one model).
    matches = [ref for ref in refs if ref.layer.name == name]
    if matches:
        return min(matches, key=lambda r: r.path.count("/"))
    all_names = [r.path for r in refs] + [r.layer.name for r in refs]
    guesses = close_matches(name, dict.fromkeys(all_names))
    hint = f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else "."
    raise ValueError(
        f"Layer '{name}' not found in model '{model.name}'{hint} Spatial layers: {_describe_spatial(model)}"
    )


# ------------------------------------------------------------------------------------------------------------
# Call interception


@contextlib.contextmanager
def _patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """Sets an instance attribute without Keras/torch tracking and restores the exact previous state."""
    had = attr in obj.__dict__
    old = obj.__dict__.get(attr)
    object.__setattr__(obj, attr, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, attr, old)
        else:
            object.__delattr__(obj, attr)


@contextlib.contextmanager
def intercept(
    layer: keras.layers.Layer,
    transform: Callable[[Any], Any],
    on: str = "output",
) -> Iterator[None]:
    """Routes `layer`'s output (or its first input, `on="input"`) through `transform` during the block.

    `transform(tensor) -> tensor` may record the tensor and return a replacement (e.g. a differentiation
    point). The original `call` is restored on exit, whatever happens inside.
    """
    original = layer.call  # the bound method (or an outer wrapper when nested; both compose)

    if on == "output":

        def wrapped(*args, **kwargs):
            return transform(original(*args, **kwargs))

    elif on == "input":

        def wrapped(inputs, *args, **kwargs):
            return original(transform(inputs), *args, **kwargs)

    else:
        raise ValueError(f"`on` must be 'output' or 'input', got {on!r}")

    with _patched(layer, "call", wrapped):
        yield


@contextlib.contextmanager
def recording(layer: keras.layers.Layer, on: str = "output") -> Iterator[List[Any]]:
    """Within the block, every output (or first input) of `layer` is appended to the yielded list."""
    recorded: List[Any] = []

    def record(tensor: Any) -> Any:
        recorded.append(tensor)
        return tensor

    with intercept(layer, record, on=on):
        yield recorded


class CaptureError(ValueError):
    """The layer's output could not be captured (it was not called, or it has several outputs)."""


class _StopForward(Exception):
    """Raised by the capture hook once the layer has produced its output, so nothing behind it runs.

    Keras may re-raise it as a new instance of this class with a longer message, so it carries no data.
    """


def forward_to(model: keras.layers.Layer, layer: keras.layers.Layer, inputs: Any) -> Any:
    """`layer`'s output when `model` runs on `inputs`; the layers after it are not computed.

    Raising from the hook is what makes a filter-pattern step cost the truncated model's forward and backward
    (VGG16's block3_conv1 is a third of its work), on any model, without building a sub-model.
    """
    recorded: List[Any] = []

    def stop(output: Any) -> Any:
        recorded.append(output)
        raise _StopForward("layer output captured")

    try:
        with intercept(layer, stop):
            model(inputs, training=False)
    except _StopForward:
        pass
    if not recorded:
        raise CaptureError(
            f"Layer '{layer.name}' was not called when model '{model.name}' ran, so its output cannot be "
            "captured. Pass a layer that the model's forward pass uses."
        )
    output = recorded[0]
    if isinstance(output, (list, tuple, dict)):
        raise CaptureError(f"Layer '{layer.name}' returns several tensors; pass a layer with one output.")
    return output


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
        if getattr(ref.layer, "data_format", None) in ("channels_first", "channels_last"):
            return layout.layer_layout(ref.layer, tensor_rank)
    return layout.layer_layout(None, tensor_rank)


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
        layers = _sublayers(model)
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
        layers = _sublayers(model)
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


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", "") if callable(fn) else ""


def _removable_activation(layer: keras.layers.Layer) -> Optional[str]:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = _activation_name(getattr(layer, "activation", None))
    return name if name in _ACTIVATIONS_WITH_LOGITS else None


def logit_layers(model: keras.layers.Layer, sample: Any = None) -> List[keras.layers.Layer]:
    """The output layers whose softmax/sigmoid is removed to score on logits.

    For models with a graph they are read from it. A subclassed model has none, so the last sublayer with a
    softmax/sigmoid is a candidate, accepted only if it verifiably produces the output: on `sample` (one
    input batch), applying the activation to the patched model's output must give the model's own output.
    """
    layers = [l for l in output_layers(model) if _removable_activation(l)]
    if layers or graph_tensors(model, "outputs") or sample is None:
        return layers
    candidates = [r.layer for r in iter_layers(model) if _removable_activation(r.layer)]
    if not candidates:
        return []
    layer = candidates[-1]
    try:
        expected = keras.ops.convert_to_numpy(model(sample, training=False))
        with logits(model, [layer]):
            z = model(sample, training=False)
        activation = keras.activations.get(_removable_activation(layer))
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
                stack.enter_context(_patched(layer, "call", lambda inputs, *a, **k: inputs))
            elif _removable_activation(layer):
                stack.enter_context(_patched(layer, "activation", keras.activations.linear))
        yield
