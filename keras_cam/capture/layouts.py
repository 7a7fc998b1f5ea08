"""Which layout each layer's output has, following the data (docs/architecture.md, "Layouts").

A layer with a `data_format` of its own (convolutions, poolings, ...) says where its channels are. Every other
layer (ReLU, Activation, BatchNormalization, Dropout, Add, Concatenate, custom layers, `keras.ops` nodes) takes
the layout of the tensor it receives: `ReLU` after a channels_first convolution is channels_first, whatever
`keras.config.image_data_format()` says. `Permute` and `keras.ops.transpose` move the channel axis; a layer
that changes the rank (`Reshape`) leaves the layout unknown.

Two ways to follow the data, one rule (`_propagate`):
- `graph_layouts(model)`: through the symbolic graph of Functional and Sequential models, nested models
  included (an inner model's inputs take the layout of the outer tensors it is called on);
- `probe_layouts(model, sample)`: for subclassed models and layers held inside plain layers (no graph), from
  one eager call with every layer intercepted: a layer's input is matched to the output it came from by
  identity, else by shape.

Both return `{id(layer): channels_first}` with `None` where the layout cannot be known; the explainers then
ask for it (`data_format=`) instead of guessing.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras

from keras_cam.capture.graph import graph_tensors, input_layout, iter_layers, sublayers
from keras_cam.capture.hooks import wrapping

Layouts = Dict[int, Optional[bool]]
_FORMATS = {"channels_first": True, "channels_last": False}


def own_format(layer: Any) -> Optional[bool]:
    """channels_first from the layer's own `data_format` (None when it has none)."""
    return _FORMATS.get(getattr(layer, "data_format", None))


def _moved_channels(axes: Sequence[int], channels_first: bool, rank: int) -> Optional[bool]:
    """The layout after a permutation of the axes (`axes[i]` = the input axis that output axis i takes, batch
    axis included, 0-based): channels_first when the channel axis lands on axis 1, last when on the last axis."""
    channel = 1 if channels_first else rank - 1
    axes = [a % rank for a in axes]
    if sorted(axes) != list(range(rank)) or axes[0] != 0:
        return None
    where = axes.index(channel)
    return True if where == 1 else False if where == rank - 1 else None


def _propagate(op: Any, inputs: Sequence[Tuple[Optional[bool], Optional[tuple]]],
               out_shape: Optional[tuple]) -> Optional[bool]:
    """The layout of `op`'s output from its own `data_format`, else from its inputs' (layout, shape)."""
    own = own_format(op)
    if own is not None:
        return own
    rank = len(out_shape) if out_shape is not None else None
    if rank is None or not 3 <= rank <= 5:
        return None
    same = [(cf, shape) for cf, shape in inputs if shape is not None and len(shape) == rank]
    if isinstance(op, keras.layers.Permute) and len(same) == 1 and same[0][0] is not None:
        return _moved_channels((0,) + tuple(op.dims), same[0][0], rank)
    axes = getattr(op, "axes", None) if type(op).__name__ == "Transpose" else None
    if axes is not None and len(same) == 1 and same[0][0] is not None:
        return _moved_channels(tuple(axes), same[0][0], rank)
    if isinstance(op, keras.layers.Reshape):
        return _reshaped(inputs, tuple(out_shape))
    if type(op).__name__ == "Transpose":  # all axes reversed, the batch axis too: no layout of ours
        return None
    known = {cf for cf, _ in same if cf is not None}
    if not known and isinstance(op, keras.layers.BatchNormalization):
        # Normalization never moves axes: the data decides; only when it is unknown does `axis` tell.
        stated = _batch_norm_format(op, rank)
        known = {stated} if stated is not None else set()
    if len(known) == 1:
        return known.pop()
    return None  # no input of the same rank with a known layout, or inputs that disagree


def _reshaped(inputs: Sequence[Tuple[Optional[bool], Optional[tuple]]], out: tuple) -> Optional[bool]:
    """The layout after a `Reshape`: kept when the shape is; channels_last when the last axis (the channels of
    a channels_last input, or the features of tokens `(N, L, D)`) is kept and only the axes before it are
    regrouped (tokens laid out on their grid, as keras-hub's SegFormer does); likewise channels_first when
    axis 1 of a channels_first input is kept. Anything else moves data between axes: unknown."""
    if len(inputs) != 1 or inputs[0][1] is None:
        return None
    cf, shape = inputs[0]
    if tuple(shape[1:]) == out[1:]:
        return cf
    if shape[-1] == out[-1] and shape[-1] is not None and (cf is False or (cf is None and len(shape) == 3)):
        return False
    if cf is True and shape[1] == out[1] and shape[1] is not None:
        return True
    return None


def _batch_norm_format(layer: Any, rank: int) -> Optional[bool]:
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) and len(layer.axis) == 1 else layer.axis
    if not isinstance(axis, int):
        return None
    axis %= rank
    return True if axis == 1 else False if axis == rank - 1 else None


def input_format(model: Any) -> bool:
    """channels_first of the model's image input (`graph.input_layout`)."""
    return input_layout(model, 4).channels_first


# -- through the graph ---------------------------------------------------------------------------------------


def graph_layouts(model: Any, input_cf: Optional[bool] = None) -> Layouts:
    """`{id(layer): channels_first}` for the layers of a Functional/Sequential `model` (nested models
    included) on the path to its outputs; empty for a model without a graph."""
    outputs = graph_tensors(model, "outputs")
    if not outputs:
        return {}
    input_cf = input_format(model) if input_cf is None else input_cf
    found: Dict[int, set] = {}
    env = {id(t): input_cf for t in graph_tensors(model, "inputs")}
    memo: Dict[int, Optional[bool]] = {}
    for t in outputs:
        _tensor_layout(t, env, memo, found)
    return {k: (v.pop() if len(v) == 1 else None) for k, v in found.items()}


def _shape(t: Any) -> Optional[tuple]:
    shape = getattr(t, "shape", None)
    return tuple(shape) if shape is not None else None


def _tensor_layout(t: Any, env: Dict[int, Optional[bool]], memo: Dict[int, Optional[bool]],
                   found: Dict[int, set]) -> Optional[bool]:
    if id(t) in env:
        return env[id(t)]
    if id(t) in memo:
        return memo[id(t)]
    memo[id(t)] = None  # cycles cannot happen in a graph; this only guards against odd histories
    history = getattr(t, "_keras_history", None)
    op = getattr(history, "operation", None)
    if op is None or not getattr(op, "_inbound_nodes", None):
        return None
    node = op._inbound_nodes[history.node_index]
    args = list(node.arguments.keras_tensors)
    layouts = [(_tensor_layout(a, env, memo, found), _shape(a)) for a in args]
    inner_out = graph_tensors(op, "outputs") if isinstance(op, keras.Model) else []
    if inner_out:
        inner_in = graph_tensors(op, "inputs")
        inner_env = {id(i): cf for i, (cf, _) in zip(inner_in, layouts)}
        inner_memo: Dict[int, Optional[bool]] = {}
        results = [_tensor_layout(o, inner_env, inner_memo, found) for o in inner_out]
        result = results[history.tensor_index] if history.tensor_index < len(results) else None
    else:
        result = _propagate(op, layouts, _shape(t))
    if isinstance(op, keras.layers.Layer) and not isinstance(op, keras.layers.InputLayer):
        found.setdefault(id(op), set()).add(result)
    memo[id(t)] = result
    return result


# -- from one call ---------------------------------------------------------------------------------------------


def probe_layouts(model: Any, sample: Any, input_cf: Optional[bool] = None,
                  image: Any = None) -> Tuple[Layouts, List[Tuple[Any, Optional[tuple]]]]:
    """`{id(layer): channels_first}` from running `sample` once with every layer intercepted, and the calls
    seen in order as `(LayerRef, output shape)`.

    `image` is the explained input tensor inside `sample` (default: the only tensor); its layout is
    `input_cf`. A layer's input is matched to the output it came from by identity, else to the outputs of
    the same shape seen so far, when they all agree.
    """
    input_cf = input_format(model) if input_cf is None else input_cf
    tensors = keras.tree.flatten(sample)
    image = tensors[0] if image is None and len(tensors) == 1 else image
    known: Dict[int, Optional[bool]] = {} if image is None else {id(image): input_cf}
    by_shape: Dict[tuple, set] = {}
    if image is not None:
        by_shape.setdefault(_shape(image), set()).add(input_cf)
    keep: List[Any] = []  # every tensor seen stays alive during the call, so ids are not reused
    calls: List[Tuple[Any, Optional[tuple]]] = []
    found: Dict[int, set] = {}

    def layout_of(x: Any) -> Optional[bool]:
        if id(x) in known:
            return known[id(x)]
        seen = by_shape.get(_shape(x), set())
        return next(iter(seen)) if len(seen) == 1 else None

    def wrap(ref: Any, original: Any):
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            ins = [x for x in keras.tree.flatten((args, kwargs)) if hasattr(x, "shape") and hasattr(x, "dtype")]
            outs = keras.tree.flatten(out)
            keep.extend(ins + outs)
            shape = _shape(outs[0]) if len(outs) == 1 else None
            result = _propagate(ref.layer, [(layout_of(x), _shape(x)) for x in ins], shape)
            found.setdefault(id(ref.layer), set()).add(result)
            for o in outs:
                known[id(o)] = result
                if result is not None:
                    by_shape.setdefault(_shape(o), set()).add(result)
            calls.append((ref, shape))
            return out

        return call

    with contextlib.ExitStack() as stack:
        for ref in iter_layers(model):
            if isinstance(ref.layer, keras.Model) and sublayers(ref.layer):
                continue  # a nested model's own layers are seen; its output is that of its last layer
            stack.enter_context(wrapping(ref.layer, "call", lambda original, ref=ref: wrap(ref, original)))
        model(sample, training=False)
    return {k: (v.pop() if len(v) == 1 else None) for k, v in found.items()}, calls
