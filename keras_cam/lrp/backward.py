"""A layer's LRP rule as its backward pass (docs/architecture.md, "Relevance propagation").

`apply_rule` gives `fn(xs, kernels, bias)` a backward pass that turns the relevance of its output into the
relevance of its inputs. For a term `t = f(P; W_k, b_k)` of a rule, `P = sg(m(x)) + (x - sg(x)) * sg(m(x))`
has the value `m(x)` and the derivative `diag(m(x))`, and the layer's output is

    out = sg(z) + sum_k (t_k - sg(t_k)) * sg(c_k)        (sg: stop_gradient)

whose value is `z` and whose backward pass is `v -> sum_k m_k(x) * J_k^T (c_k * v)`: the rule. That form
needs no backend support (PyTorch runs it); where the backend offers `rule_gradient` (TensorFlow, JAX) the
same backward pass is a custom gradient instead (`_rule_backward`): the forward pass is the layer alone, and
the terms, multipliers and Jacobian products run in the backward pass, which spares the identities'
elementwise passes. `propagation.py`, `transformers.py` and `hub_layers.py` build their layers' calls on it.
"""
from __future__ import annotations

from typing import Any, Callable, List, Tuple

import keras

from keras_cam import backend
from keras_cam.lrp.rules import KEEP_ON_NONNEGATIVE, VANISH_ON_NONNEGATIVE, Rule, _identity

ops = keras.ops
sg = ops.stop_gradient
standardize_dtype = keras.backend.standardize_dtype


def _through(value: Any, x: Any) -> Any:
    """Value `value`, derivative `diag(value)` with respect to `x`."""
    value = sg(value)
    return value + (x - sg(x)) * value


def apply_rule(rule: Rule, fn: Callable, xs: List[Any], kernels: list, bias: Any,
               nonnegative: bool = False, custom: bool = True) -> Any:
    """`fn(xs, kernels, bias)` (the layer's pre-activation output) whose backward pass is `rule`. With
    `nonnegative` inputs (after a ReLU) the terms of their negative part are exactly 0 and are skipped.
    `custom=False` keeps the stop-gradient form: for a layer whose call runs layers with rules of their own
    (JAX cannot differentiate custom gradients nested in a custom gradient's backward pass)."""
    # float32 throughout (a float16 stabilizer of 1e-6 is 0): the result goes back to the input's dtype.
    dtype = xs[0].dtype
    xs = [_float32(x) for x in xs]
    kernels = [None if k is None else _float32(k) for k in kernels]
    bias = None if bias is None else _float32(bias)
    inner = fn

    def fn(ps, k, b):
        return _float32(inner(ps, k, b))

    terms = []  # (input modifier, kernels, bias) per term; None for a term that is 0
    for term in rule.terms():
        if nonnegative and term.inputs in VANISH_ON_NONNEGATIVE:
            terms.append(None)  # min(x, 0) = 0, and such terms carry no bias
            continue
        # max(x, 0) is x itself on a non-negative input: no pass over it.
        modify = _identity if nonnegative and term.inputs in KEEP_ON_NONNEGATIVE else term.inputs
        terms.append((modify,) + tuple(term.params(kernels, bias)))
    gradient = getattr(backend.get(), "rule_gradient", None) if custom else None
    if gradient is None:
        out = _identities(rule, fn, xs, kernels, bias, terms)
    else:
        out = gradient(lambda xs: fn(xs, kernels, bias),
                       lambda xs, z, v: _rule_backward(rule, fn, terms, xs, z, v, backend.get().vjp), xs)
    return out if standardize_dtype(dtype) == "float32" else ops.cast(out, dtype)


def _identities(rule: Rule, fn: Callable, xs: List[Any], kernels: list, bias: Any, terms: list) -> Any:
    """The rule as a forward expression whose ordinary backward pass is the rule (the two identities of the
    module docstring): one graph, any backend."""
    outputs = [0.0 if term is None else _term_output(xs, term, fn) for term in terms]
    z = outputs[rule.identity] if rule.identity is not None else fn(xs, kernels, bias)
    out = sg(z)
    for t, c in zip(outputs, rule.multipliers(outputs, z)):
        if c is not None and not isinstance(t, float):
            out = out + (t - sg(t)) * sg(c)
    return out


def _term_output(xs: List[Any], term: Tuple[Callable, list, Any], fn: Callable) -> Any:
    """The term's output `f(P; W_k, b_k)` at the input identity `P` of the module docstring."""
    modify, k, b = term
    return fn([_through(modify(x), x) for x in xs], k, b)


def _rule_backward(rule: Rule, fn: Callable, terms: list, xs: List[Any], z: Any, v: Any,
                   vjp: Callable) -> List[Any]:
    """`R_in = sum_k m_k(x) * J_k^T (c_k * v)` written out, for a backend's custom gradient (`rule_gradient`):
    the terms are evaluated here, in the backward pass, and the layer's own output `z` is reused."""
    outputs, pullbacks = [], []
    for i, term in enumerate(terms):
        if term is None:
            outputs.append(0.0)
            pullbacks.append(None)
            continue
        modify, k, b = term
        ps = [modify(x) for x in xs]
        t, pullback = vjp(lambda ps, k=k, b=b: fn(ps, k, b), ps)
        outputs.append(z if i == rule.identity else t)
        pullbacks.append((ps, pullback))
    relevance: List[Any] = [None] * len(xs)
    for entry, c in zip(pullbacks, rule.multipliers(outputs, z)):
        if entry is None or c is None:
            continue
        ps, pullback = entry
        for i, (p, g) in enumerate(zip(ps, pullback(v * c))):
            if g is not None:  # None: the term does not read that input (TensorFlow's tape says so)
                relevance[i] = p * g if relevance[i] is None else relevance[i] + p * g
    return [ops.zeros_like(x) if r is None else r for r, x in zip(relevance, xs)]


def _float32(x: Any) -> Any:
    """`x` in float32; as it is when it already is (no cast op in an eager backend's loop)."""
    return x if standardize_dtype(x.dtype) == "float32" else ops.cast(x, "float32")


def pass_through(y: Any, x: Any) -> Any:
    """Value `y`, relevance of `y` handed to `x` unchanged (same shape)."""
    return sg(y) + (x - sg(x))
