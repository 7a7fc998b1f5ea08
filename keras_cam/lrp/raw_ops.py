"""Operations of a functional model that are not layers, under LRP (docs/architecture.md, "Relevance
propagation").

`x = a + b` or `keras.ops.mean(x, axis=1)` between the layers of a functional model are nodes of its graph
(`model.operations`), called like layers. A gradient is the wrong backward pass for a sum: it hands each
summand all of the sum's relevance (the input's relevance then adds up to twice the logit). So each such
operation is sorted by what it does to relevance, as a layer is:

- linear in its tensor arguments (`+`, `-`, mean, sum, average pooling, a product or quotient with a
  constant): `Norm`, each argument's share in proportion to its contribution, as `keras.layers.Add`; a
  constant takes its share, as a bias does;
- elementwise activations (`keras.ops.relu`, `gelu`, ...): `Pass`, as the activation layers;
- operations that move or copy values (reshapes, transposes, slices, concatenation, casts, max, `where`):
  their own gradient, as `Flatten` or `MaxPooling2D`; so do those on masks, indices or shapes, or giving
  them (`keras.ops.greater(x, 0)`): no relevance flows there;
- anything else (a product of two tensors, `exp`, `matmul`, ...): no rule, refused by name with the layers.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam.lrp.backward import apply_rule
from keras_cam.lrp.rules import Rule

_MODULES = ("keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.core", "keras.src.ops.math")
_LINEAR = {"Add", "Subtract", "Negative", "Mean", "Sum", "AveragePool"}
#: Linear when one argument only is a tensor of the graph (and, for a quotient, it is the dividend).
_SCALING = {"Multiply", "Divide", "TrueDivide"}
_PASS = {"Relu", "Relu6", "Sigmoid", "Silu", "Gelu", "Tanh", "Softmax", "LeakyRelu", "Elu", "Selu", "Celu",
         "Softplus", "Softsign", "HardSigmoid", "HardSilu", "HardTanh", "LogSigmoid", "SparsePlus",
         "Squareplus", "Sparsemax"}
_GRADIENT = {"Reshape", "Transpose", "ExpandDims", "Squeeze", "GetItem", "Slice", "Concatenate", "Stack",
             "Hstack", "Vstack", "Dstack", "Cast", "SaturateCast", "ConvertToTensor", "Tile", "Repeat", "Pad",
             "Max", "Amax", "Min", "Amin", "Maximum", "Minimum", "MaxPool", "Split", "ArraySplit", "Hsplit",
             "Vsplit", "Dsplit", "Unstack", "Moveaxis", "Swapaxes", "Take", "TakeAlongAxis", "Roll", "Flip",
             "Fliplr", "Flipud", "Rot90", "BroadcastTo", "Ravel", "Copy", "DepthToSpace", "SpaceToDepth", "Where",
             "Select"}
#: Kinds whose output is >= 0 when every tensor argument is.
KEEPS_SIGN = _GRADIENT | {"Add", "Mean", "Sum", "AveragePool"}


def is_operation(layer: Any) -> bool:
    """An operation of a functional graph that is not a layer."""
    return isinstance(layer, keras.Operation) and not isinstance(layer, keras.layers.Layer)


def _name(op: Any) -> Optional[str]:
    return type(op).__name__ if type(op).__module__ in _MODULES else None


def operations(model: keras.layers.Layer, nested: Sequence[Tuple[keras.layers.Layer, str]]) -> List[Tuple[Any, str]]:
    """The operations that are not layers in the graphs of `model` and of the models in `nested` ((layer,
    path) pairs), with their paths."""
    found = []
    for owner, prefix in [(model, "")] + [(layer, path + "/") for layer, path in nested]:
        found += [(op, prefix + op.name) for op in _graph(owner) or () if is_operation(op)]
    return found


def _graph(model: keras.layers.Layer) -> Optional[list]:
    """A functional model's operations; None for anything else."""
    if not isinstance(model, keras.Model):
        return None
    try:
        return model.operations  # Functional models only
    except (AttributeError, ValueError):
        return None


def tensors(args: Any, kwargs: Any) -> list:
    """The tensors among an operation's arguments (the graph's; constants are Python or NumPy values)."""
    return [t for t in keras.tree.flatten((args, kwargs)) if keras.ops.is_tensor(t)]


def _floating(t: Any) -> bool:
    return keras.ops.is_tensor(t) and "float" in keras.backend.standardize_dtype(t.dtype)


def kind(op: Any, args: Sequence[Any], out: Any) -> str:
    """"op_linear", "pass", "gradient" or "unknown", for `op` called with positional `args`, giving `out`."""
    name = _name(op)
    if not any(_floating(t) for t in keras.tree.flatten(args)) or not any(
            _floating(t) for t in keras.tree.flatten(out)):
        return "gradient"  # masks, indices, shapes, comparisons: no relevance flows through them
    if name in _LINEAR:
        return "op_linear"
    if name in _SCALING:
        positions = [i for i, a in enumerate(args) if keras.ops.is_tensor(a)]
        if len(positions) == 1 and (name == "Multiply" or positions == [0]):
            return "op_linear"
        return "unknown"
    if name in _PASS:
        return "pass"
    if name in _GRADIENT:
        return "gradient"
    return "unknown"


def keeps_sign(op: Any) -> bool:
    return _name(op) in KEEPS_SIGN


def is_relu(op: Any) -> bool:
    return _name(op) in ("Relu", "Relu6")


def call_for(op: Any, rule: Rule) -> Callable:
    """The operation's call with `rule` over its tensor arguments (the others stay as they are)."""
    original = op.call

    def call(*args, **kwargs):
        positions = [i for i, a in enumerate(args) if keras.ops.is_tensor(a)]

        def fn(xs, k, b):
            filled = list(args)
            for i, x in zip(positions, xs):
                filled[i] = x
            return original(*filled, **kwargs)

        return apply_rule(rule, fn, [args[i] for i in positions], [], None)

    return call


# -- subclassed models: what their `call` does between layers ---------------------------------------------------

def _has_graph(model: keras.layers.Layer) -> bool:
    return isinstance(model, keras.Sequential) or _graph(model) is not None


class Provenance:
    """Where the tensors a subclassed model hands its layers come from.

    A subclassed model's `call` may compute between its layers (`a + b`, `keras.ops.mean`, `x / 255`) with
    no graph to show it, and a gradient through such a sum or scaling moves relevance wrongly. Followed on
    the plan's run: each tensor a layer receives directly from a subclassed model's `call`, and the model's
    output, must be a layer's output or the model's input, or hold only their values (a reshape, a slice, a
    ReLU, a cast); anything else was computed outside layers and is refused, with the layer that reads it.
    """

    def __init__(self) -> None:
        self.stack: List[Any] = []
        self.tensors: dict = {}  # id -> tensor: the models' inputs and the layers' outputs
        self.reads: List[Tuple[Any, Any, list]] = []  # (subclassed model, layer or None for its output, tensors)

    def container(self, model: keras.layers.Layer, original: Callable) -> Callable:
        """`model`'s call, followed (a subclassed model's output is checked as its layers' inputs are)."""
        subclassed = not _has_graph(model)

        def call(*args, **kwargs):
            inputs = [t for t in keras.tree.flatten(args[:1] or list(kwargs.values())[:1]) if keras.ops.is_tensor(t)]
            if not self.stack:  # the model's own input (a nested model's is checked where it is read)
                self.tensors.update((id(t), t) for t in inputs)
            self.stack.append(model)
            try:
                out = original(*args, **kwargs)
            finally:
                self.stack.pop()
            if subclassed:  # its outputs that are no layer's (known now, before `note` makes them known)
                self.reads.append((model, None, [t for t in keras.tree.flatten(out)
                                                 if keras.ops.is_tensor(t) and id(t) not in self.tensors]))
            self.note(model, inputs, out)
            return out

        return call

    def around(self, layer: Any, original: Callable) -> Callable:
        """`original` (the layer's call) run with `layer` as the caller of the layers it calls."""
        def call(*args, **kwargs):
            self.stack.append(layer)
            try:
                return original(*args, **kwargs)
            finally:
                self.stack.pop()

        return call

    def note(self, layer: Any, inputs: list, out: Any) -> None:
        """`layer` read `inputs` and gave `out` (called after it ran: the stack's top is its caller)."""
        parent = self.stack[-1] if self.stack else None
        if isinstance(parent, keras.Model) and not _has_graph(parent):
            self.reads.append((parent, layer, [t for t in inputs if keras.ops.is_tensor(t)]))
        self.tensors.update((id(t), t) for t in keras.tree.flatten(out) if keras.ops.is_tensor(t))

    def check(self, paths: dict) -> None:
        """One error for every place a subclassed model computed between its layers."""
        outside = self.problems(paths)
        if outside:
            raise ValueError(
                f"LRP cannot follow what a subclassed model computes between its layers: {'; '.join(outside)} "
                "outside layers (an operation in its `call`, such as `a + b`, `keras.ops.mean(x, axis)` or "
                "`x / 255`). A gradient through it would move relevance wrongly (a sum hands each summand all "
                "of it), and keras-cam does not guess. Compute it with Keras layers (keras.layers.Add, "
                "GlobalAveragePooling2D, Rescaling, ...), or build the model with the functional API, where "
                "such operations get rules.")

    def problems(self, paths: dict) -> List[str]:
        """"'model' computes the input of layer 'x'" (or "its output") for each tensor computed outside layers."""
        found, pool = [], None
        for model, layer, inputs in self.reads:
            strangers = inputs if layer is None else [t for t in inputs if id(t) not in self.tensors]
            if not strangers:
                continue
            if pool is None:  # the values of the layers' outputs and the model's input
                computed = {id(t) for _, layer_, ts in self.reads if layer_ is None for t in ts}
                pool = _Values([keras.ops.convert_to_numpy(t) for i, t in self.tensors.items() if i not in computed])
            if not all(_holds_values_of(t, pool) for t in strangers):
                where = "its output" if layer is None else f"the input of layer '{paths.get(id(layer), layer.name)}'"
                found.append(f"'{paths.get(id(model), model.name)}' computes {where}")
        return found


class _Values:
    """The recorded tensors' values, flattened once per dtype asked for."""

    def __init__(self, arrays: list) -> None:
        self.arrays = [a for a in arrays if a.dtype.kind == "f"]
        self.by_dtype: dict = {}

    def of(self, dtype: Any) -> Any:
        if dtype not in self.by_dtype:
            self.by_dtype[dtype] = (np.concatenate([a.astype(dtype).ravel() for a in self.arrays])
                                    if self.arrays else np.zeros(0, dtype))
        return self.by_dtype[dtype]


def _holds_values_of(t: Any, pool: _Values) -> bool:
    """Every non-zero value of `t` is a value of a recorded tensor (in `t`'s dtype): `t` moved, copied,
    sliced, cast or rectified values and computed none (a sum or a scaling computes new ones)."""
    x = keras.ops.convert_to_numpy(t)
    if x.dtype.kind != "f":
        return True  # indices and masks carry no relevance
    return bool(np.isin(x[x != 0], pool.of(x.dtype)).all())
