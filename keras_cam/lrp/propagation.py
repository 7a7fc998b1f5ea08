"""Relevance propagation as a modified backward pass, built with call interception (docs/architecture.md,
"Relevance propagation").

Each layer's `call` is replaced for the duration of one traced call (`capture.hooks.patched`, restored in
`finally`) by a function with the same forward value and a backward pass that is the layer's rule
(`backward.apply_rule`): the "gradient" that reaches any tensor is its relevance. Layers that move values
without mixing them (Flatten, Reshape, max pooling, Concatenate, padding) keep their own gradient, which
moves relevance the same way; activations pass it unchanged. Transformer layers: `transformers.py` (Keras's
LayerNormalization and MultiHeadAttention) and `hub_layers.py` (keras-hub's ViT, DeiT and DINOv2 blocks).

`build_plan` runs the model once on one sample with every layer recorded, to learn which layers run, in which
order (the "first layer" of a composite), and which BatchNormalization directly follows a convolution or
Dense layer whose output nothing else reads (the canonizer folds those pairs). `propagating(plan)` installs the
modified calls.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import keras

from keras_cam import capture
from keras_cam.capture.hooks import activation_name, patched
from keras_cam.lrp.composites import CONV, DENSE, Composite, RuleKey, user_rule
from keras_cam.lrp import hub_layers, raw_ops, transformers
from keras_cam.lrp.backward import apply_rule, pass_through
from keras_cam.lrp.linear import stages
from keras_cam.lrp.rules import AttnLRP, LayerNorm, Norm, Pass, Rule

ops = keras.ops
sg = ops.stop_gradient
standardize_dtype = keras.backend.standardize_dtype
L = keras.layers

#: Layers whose own gradient moves relevance correctly: each output value is one input value (or a sum of
#: copies of it), so d out / d in routes every output's relevance to the input it came from.
_GRADIENT = tuple(getattr(L, n) for n in (
    "InputLayer", "Flatten", "Reshape", "Permute", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "Concatenate", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling3D", "Maximum", "Minimum",
    "Embedding") if hasattr(L, n))  # Embedding: its input is indices, which take no relevance
#: Elementwise layers: relevance passes unchanged (zennit's `Pass` for activations).
_PASS = tuple(getattr(L, n) for n in (
    "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Activation", "Rescaling", "Normalization")
    if hasattr(L, n))
_AVERAGE = (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
            L.GlobalAveragePooling2D, L.GlobalAveragePooling3D)
_MERGE = (L.Add, L.Subtract, L.Average)
#: Linear layers whose weights keras-cam reads, by the public class whose `call` they must keep.
_LINEAR = ((L.Dense, DENSE), (L.Conv1D, CONV), (L.Conv2D, CONV), (L.Conv3D, CONV), (L.Conv1DTranspose, CONV),
           (L.Conv2DTranspose, CONV), (L.Conv3DTranspose, CONV), (L.DepthwiseConv1D, CONV),
           (L.DepthwiseConv2D, CONV), (L.SeparableConv1D, CONV), (L.SeparableConv2D, CONV), (L.EinsumDense, DENSE))


def layer_kind(layer: keras.layers.Layer) -> str:
    """"container", "camhead", "conv", "dense", "average" (pooling), "merge", "batchnorm", "attention",
    "layernorm", "vit_block", "vit_embedding" (keras-hub), "pass", "gradient" or "unknown"."""
    from keras_cam.layers import CAMHead  # (layers imports nothing of lrp)

    if isinstance(layer, keras.Model):
        return "container"
    if isinstance(layer, CAMHead) and type(layer).call is CAMHead.call:
        return "camhead"
    for cls, kind in _LINEAR:
        if isinstance(layer, cls):
            # A subclass that computes something else in `call` is not the layer whose weights we read.
            return kind if type(layer).call is cls.call else "unknown"
    if isinstance(layer, L.BatchNormalization):
        return "batchnorm"
    kind = transformers.layer_kind(layer) or hub_layers.layer_kind(layer)
    if kind is not None:
        return kind
    if isinstance(layer, L.UpSampling2D):
        return "gradient" if layer.interpolation == "nearest" else "unknown"
    for group, kind in ((_AVERAGE, "average"), (_MERGE, "merge"), (_PASS, "pass"), (_GRADIENT, "gradient")):
        if isinstance(layer, group):
            return kind
    return "unknown"


def _activation(layer: keras.layers.Layer, z: Any) -> Any:
    """The layer's fused activation (read at call time: the logits patch may have removed it), with Pass."""
    fn = getattr(layer, "activation", None)
    if fn is None or activation_name(fn) == "linear":
        return z
    return pass_through(fn(z), z)


# -- the plan: which layers run, and the rule of each --------------------------------------------------------

@dataclass
class Plan:
    """What one model's propagation does: `entries` (layer, kind, rule) in call order, BatchNormalization
    layers folded into the linear layer before them (`folds`: id(linear) -> bn; `folded`: ids of the bns)."""

    entries: List[Tuple[keras.layers.Layer, str, Optional[Rule]]] = field(default_factory=list)
    folds: Dict[int, keras.layers.Layer] = field(default_factory=dict)
    folded: set = field(default_factory=set)
    nonnegative: set = field(default_factory=set)  # ids of layers whose every input comes out of a ReLU
    paths: Dict[int, str] = field(default_factory=dict)  # id(layer) -> its path in the model
    reference: Any = None  # the model's own output on the sample `build_plan` ran (for `check_forward`)

    def describe(self) -> List[Tuple[str, str]]:
        """(layer path, rule) in call order, for users checking which rule went where. The path is the name
        for a layer of the model itself, `outer/inner` for a nested one (every keras-hub block has an `ln_1`)."""
        out = []
        for layer, kind, rule in self.entries:
            path = self.paths.get(id(layer), layer.name)
            if id(layer) in self.folded:
                out.append((path, "folded into the layer before"))
            elif rule is not None:
                out.append((path, repr(rule)))
        return out


def _unknown(layers: List[Tuple[keras.layers.Layer, str]]) -> ValueError:
    """One error for every layer without a rule (with its path), in call order, with the fix."""
    def what(l):
        if raw_ops.is_operation(l):
            return ", an operation between layers"
        return ", holds layers" if capture.walk_layers(l) else ""

    names = ", ".join(f"'{path}' ({type(l).__name__}{what(l)})" for l, path in layers)
    fix = ", ".join(f"'{path}': kc.lrp.Epsilon()" for _, path in layers[:3])
    return ValueError(
        f"LRP has no rule for layer{'s' if len(layers) > 1 else ''} {names}: keras-cam propagates relevance "
        "through Dense, EinsumDense, convolutions, pooling, BatchNormalization, LayerNormalization, "
        "MultiHeadAttention, Add/Subtract/Average, Maximum/Minimum, Concatenate, reshapes, dropout and "
        "activations, and operations between layers that are sums, means, reshapes or activations (a custom "
        "layer that holds layers applies operations between them that have no rule). Give "
        f"{'them rules' if len(layers) > 1 else 'it a rule'}: rules={{{fix}}} (the layer itself, "
        "differentiated: any layer), kc.lrp.UniformProduct() for a product of two tensors (half the relevance "
        "to each), or kc.lrp.Pass() for a layer that keeps its input's shape.")


@dataclass
class _Recording:
    """One run of the model: `calls` (layer, input tensor ids, output id) in call order, by id the outputs'
    ranks and the operations' kinds, every layer's and operation's path, and the model's output."""

    calls: List[Tuple[keras.layers.Layer, List[int], int]]
    ranks: Dict[int, int]
    op_kinds: Dict[int, str]
    paths: Dict[int, str]
    reference: Any
    keep: List[Any]  # the tensors, alive as long as the ids are used


def _record(model: keras.layers.Layer, run: Callable[[], Any]) -> _Recording:
    """Runs `run()` with every layer and graph operation recorded; refuses a subclassed model that computes
    between its layers."""
    refs = list(capture.iter_layers(model))
    paths = {id(r.layer): r.path for r in refs}
    # Operations of functional graphs that are not layers (`a + b`): recorded and given rules as layers are.
    raw = raw_ops.operations(model, [(r.layer, r.path) for r in refs])
    paths.update((id(op), path) for op, path in raw)
    layers = [l for l in capture.walk_layers(model) if layer_kind(l) != "container"] + [op for op, _ in raw]
    op_kinds: Dict[int, str] = {}  # an operation's kind depends on its arguments: decided when it runs
    calls: List[Tuple[keras.layers.Layer, List[int], int]] = []
    ranks: Dict[int, int] = {}
    keep: List[Any] = []  # tensors stay alive during the run, so their ids stay unique

    provenance = raw_ops.Provenance()  # what subclassed models compute between their layers

    def recorder(layer):
        original = provenance.around(layer, layer.call)

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            if raw_ops.is_operation(layer):
                flat = raw_ops.tensors(args, kwargs)
                op_kinds[id(layer)] = raw_ops.kind(layer, args, out)
            else:
                # The inputs: the first argument, or the first keyword one (a layer called as `layer(inputs=x)`).
                inputs = args[0] if args else next(iter(kwargs.values()), None)
                flat = keras.tree.flatten(inputs)
            keep.extend(flat + [out])
            ranks[id(out)] = len(getattr(out, "shape", ()))
            calls.append((layer, [id(t) for t in flat], id(out)))
            provenance.note(layer, flat, out)
            return out

        return call

    containers = [model] + [l for l in capture.walk_layers(model) if layer_kind(l) == "container"]
    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(patched(layer, "call", recorder(layer)))
        for container in containers:
            stack.enter_context(patched(container, "call", provenance.container(container, container.call)))
        reference = run()
    provenance.check(paths)
    return _Recording(calls, ranks, op_kinds, paths, reference, keep)


def build_plan(model: keras.layers.Layer, run: Callable[[], Any], composite: Composite,
               rules: Sequence[Tuple[RuleKey, Rule]], canonize: bool) -> Plan:
    """Runs `run()` (the model on one sample) with every layer recorded, then picks each layer's rule; its
    output is kept as `Plan.reference`."""
    recording = _record(model, run)
    calls, ranks, paths = recording.calls, recording.ranks, recording.paths

    counts: Dict[int, int] = {}
    consumers: Dict[int, int] = {}
    for layer, inputs, _ in calls:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
        for t in inputs:
            consumers[t] = consumers.get(t, 0) + 1
    producer = {out: layer for layer, _, out in calls}

    def kind_of(layer):
        return recording.op_kinds.get(id(layer)) or layer_kind(layer)

    plan = Plan(paths=paths, reference=recording.reference)
    positive: set = set()  # ids of tensors that are >= 0 by construction
    for layer, inputs, out in calls:
        operation = raw_ops.is_operation(layer)
        if counts[id(layer)] == 1 and inputs and all(t in positive for t in inputs):
            plan.nonnegative.add(id(layer))
            if raw_ops.keeps_sign(layer) if operation else (kind_of(layer) in ("gradient", "average", "merge")
                                                             and not isinstance(layer, L.Subtract)):
                positive.add(out)
        if raw_ops.is_relu(layer) if operation else _relu_output(layer):
            positive.add(out)
    first_seen = False
    seen: set = set()
    unknown: List[Tuple[keras.layers.Layer, str]] = []
    for layer, inputs, _ in calls:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        kind = kind_of(layer)
        rule = user_rule(layer, paths.get(id(layer), layer.name), rules)
        is_first = False
        if kind in composite.first_kinds and not first_seen:
            first_seen = is_first = True
        if rule is not None:
            transformers.check_rule(rule, kind, layer)
            if rule.needs_params and kind not in (CONV, DENSE, "average"):
                raise ValueError(f"Rule {rule!r} modifies weights, which keras-cam reads on Dense, convolution and "
                                 f"pooling layers only; layer '{layer.name}' is a {type(layer).__name__}. Give it "
                                 "kc.lrp.Epsilon() or kc.lrp.Pass().")
        elif kind in (CONV, DENSE):
            rule = composite.rule_for(kind, is_first)
        elif kind in ("average", "merge", "camhead", "op_linear") or kind in hub_layers.KINDS:
            rule = Norm()
        elif kind in ("attention", "layernorm"):
            rule = transformers.default_rule(kind)
        elif kind == "batchnorm":
            source = producer.get(inputs[0]) if len(inputs) == 1 else None
            if canonize and source is not None and _foldable(source, layer, counts, consumers, inputs[0],
                                                                    ranks.get(inputs[0], -1)):
                plan.folds[id(source)] = layer
                plan.folded.add(id(layer))
            rule = Pass()
        elif kind == "pass":
            rule = Pass()
        elif kind == "gradient":
            rule = None
        else:
            unknown.append((layer, paths.get(id(layer), layer.name)))
        plan.entries.append((layer, kind, rule))
    if unknown:
        raise _unknown(unknown)
    # A fold decided after its linear layer's entry: nothing else to update (folds are looked up at call time).
    return plan


def check_forward(plan: Plan, run: Callable[[], Any]) -> None:
    """The rules must not change the model's output: `run()` (the model on the sample `build_plan` ran) with
    them against the output `build_plan` recorded without them. A rule that recomputes a layer
    (MultiHeadAttention, LayerNormalization, a folded BatchNormalization) and no longer matches it would
    otherwise give relevance of another function, silently."""
    want = [keras.ops.convert_to_numpy(t).astype("float64") for t in keras.tree.flatten(plan.reference)]
    with propagating(plan):
        got = [keras.ops.convert_to_numpy(t).astype("float64") for t in keras.tree.flatten(run())]
    for a, b in zip(got, want):
        scale = max(float(abs(b).max()) if b.size else 0.0, 1e-6)
        tolerance = 1e-2 if any(standardize_dtype(t.dtype) in ("float16", "bfloat16") for t in (a, b)) else 1e-3
        if a.shape != b.shape or float(abs(a - b).max()) > tolerance * scale:
            raise ValueError(
                "LRP's rules change this model's output (the layers recomputed with rules: "
                f"{', '.join(f'{n}: {r}' for n, r in plan.describe())}); this is a keras-cam bug, please "
                "report it. Meanwhile give the layer you suspect kc.lrp.Epsilon() (its own call, differentiated).")


def _relu_output(layer: keras.layers.Layer) -> bool:
    """The layer's output is >= 0 by construction: a ReLU (no negative slope), or relu/relu6 fused."""
    if isinstance(layer, L.ReLU):
        return not layer.negative_slope and float(layer.threshold) >= 0
    name = activation_name(getattr(layer, "activation", None))
    return name in ("relu", "relu6") and layer_kind(layer) in (CONV, DENSE, "pass")


def _foldable(source: keras.layers.Layer, bn: keras.layers.Layer, counts: Dict[int, int],
              consumers: Dict[int, int], tensor: int, rank: int) -> bool:
    """BatchNormalization `bn` reads the output of linear layer `source` directly and alone, both run once,
    `source` has no activation, and `bn` normalizes `source`'s channel axis."""
    if isinstance(source, L.EinsumDense):  # its output's channel axis is the equation's business
        return False
    if layer_kind(source) not in (CONV, DENSE) or counts.get(id(source)) != 1 or counts.get(id(bn)) != 1:
        return False
    if consumers.get(tensor) != 1 or activation_name(getattr(source, "activation", None)) not in ("linear", ""):
        return False
    first = getattr(source, "data_format", "channels_last") == "channels_first"
    axis = bn.axis[0] if isinstance(bn.axis, (list, tuple)) else bn.axis
    if rank < 2:
        return False
    channel = 1 if first and not isinstance(source, L.Dense) else rank - 1
    return axis % rank == channel


# -- the modified calls ----------------------------------------------------------------------------------------

def _linear_call(layer: keras.layers.Layer, rule: Rule, fold: Optional[keras.layers.Layer],
                 nonnegative: bool) -> Callable:
    def call(inputs, *args, **kwargs):
        x = inputs
        for i, (fn, kernels, bias) in enumerate(stages(layer, fold)):
            x = apply_rule(rule, lambda xs, k, b, fn=fn: fn(xs[0], k, b), [x], kernels, bias,
                           nonnegative and i == 0)
        return _activation(layer, x)

    return call


def _own_call(original: Callable, rule: Rule, layer: keras.layers.Layer) -> Callable:
    """A layer whose weights keras-cam does not modify, through its own `call` (pooling, Add, or any layer
    given a rule such as Epsilon)."""

    def call(inputs, *args, **kwargs):
        several = isinstance(inputs, (list, tuple))
        xs = list(inputs) if several else [inputs]
        if isinstance(rule, Pass):
            y = original(inputs, *args, **kwargs)
            if several or tuple(y.shape) != tuple(inputs.shape):
                got = "several inputs" if several else tuple(inputs.shape)
                raise ValueError(f"Pass hands relevance through unchanged, so it needs a layer with one input of "
                                 f"its output's shape; layer '{layer.name}' changes {got} to {tuple(y.shape)}. "
                                 "Give it kc.lrp.Epsilon().")
            return pass_through(y, inputs)

        def fn(ps, k, b):
            return original(list(ps) if several else ps[0], *args, **kwargs)

        return apply_rule(rule, fn, xs, [], None, custom=not capture.walk_layers(layer))

    return call


def _camhead_call(layer: keras.layers.Layer) -> Callable:
    """CAMHead: global average pooling (Norm, as zennit's AvgPool) and its Dense (its own rule)."""
    def call(inputs, *args, **kwargs):
        spatial = layer._layout(len(inputs.shape)).spatial_axes
        pooled = apply_rule(Norm(), lambda xs, k, b: ops.mean(xs[0], axis=spatial), [inputs], [], None)
        logits = ops.cast(layer.dense(pooled), "float32")
        return _activation(layer, logits)

    return call


@contextlib.contextmanager
def propagating(plan: Plan) -> Iterator[None]:
    """Within the block, the model's layers propagate relevance backward as `plan` says; restored on exit."""
    with contextlib.ExitStack() as stack:
        for layer, kind, rule in plan.entries:
            if rule is None:
                continue
            if id(layer) in plan.folded:
                replacement = lambda inputs, *args, **kwargs: inputs  # noqa: E731  (the linear layer did it)
            elif kind == "camhead":
                replacement = _camhead_call(layer)
            elif kind == "attention" and isinstance(rule, AttnLRP):  # the part between the projections
                stack.enter_context(patched(layer, "_compute_attention", transformers.attention_call(layer, rule)))
                continue
            elif kind in hub_layers.KINDS and isinstance(rule, Norm):
                replacement = hub_layers.call_for(layer, kind, rule)
            elif kind == "layernorm" and isinstance(rule, LayerNorm):
                replacement = transformers.layernorm_call(layer, rule)
            elif raw_ops.is_operation(layer) and not isinstance(rule, Pass):
                replacement = raw_ops.call_for(layer, rule)  # over all its tensor arguments
            elif kind in (CONV, DENSE) and (rule.needs_params or not isinstance(rule, Pass)):
                replacement = _linear_call(layer, rule, plan.folds.get(id(layer)), id(layer) in plan.nonnegative)
            else:
                replacement = _own_call(layer.call, rule, layer)
            stack.enter_context(patched(layer, "call", replacement))
        yield
