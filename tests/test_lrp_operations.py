"""LRP through operations that are not layers in functional models (`a + b`, `keras.ops.mean(x, axis)`, a
product with a constant): the same relevance as the model written with layers, conservation (a gradient
through `+` doubled it), refusals by name, and user rules for them."""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests.models import numpy_weights

L = keras.layers
ops = keras.ops


def _model(raw: bool) -> keras.Model:
    """conv -> conv, a residual sum, a scaling by 0.5, mean pooling, dense; the same graph with operations
    (`raw`) or with layers, bias-free."""
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", use_bias=False, name="c1")(inputs)
    b = L.Conv2D(4, 3, padding="same", use_bias=False, name="c2")(a)
    if raw:
        s = ops.reshape(ops.relu(a + b) * 0.5, (-1, 64, 4))
        pooled = ops.mean(s, axis=1)
    else:
        s = L.Reshape((64, 4))(L.Rescaling(0.5)(L.ReLU()(L.Add()([a, b]))))
        pooled = L.GlobalAveragePooling1D()(s)
    return keras.Model(inputs, L.Dense(3, use_bias=False, name="top")(pooled))


def _named(model, prefix=""):
    """Operation class name -> its path in `model` (Keras numbers operations' names across models)."""
    out = {}
    for op in model.operations:
        if isinstance(op, keras.Model):
            out.update(_named(op, prefix + op.name + "/"))
        elif not isinstance(op, keras.layers.Layer):
            out[type(op).__name__] = prefix + op.name
    return out


def _images(n=3):
    return np.random.default_rng(1).random((n, 8, 8, 3)).astype("float32")


@pytest.mark.backends
def test_operations_get_the_rules_of_the_layers_they_replace_and_conserve():
    raw, layered = _model(True), numpy_weights(_model(False), bias=0.0)
    raw.set_weights(layered.get_weights())
    x, targets = _images(), np.array([0, 1, 2])
    lrp = kc.LRP(raw, composite="epsilon")
    got = lrp.relevance(x, targets=targets)
    want = kc.LRP(layered, composite="epsilon").relevance(x, targets=targets)
    # (the scaling is Norm here, Pass as Rescaling: they differ by the stabilizer near 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * np.abs(want).max())
    logits = ops.convert_to_numpy(raw(x))[np.arange(3), targets]
    # A gradient through `a + b` hands both summands all of the sum's relevance: about twice the logit.
    np.testing.assert_allclose(got.reshape(3, -1).sum(1), logits, rtol=1e-4)
    plan, name = dict(lrp.plan()), _named(raw)
    assert {plan[name[op]] for op in ("Add", "Mean", "Multiply")} == {"Norm(epsilon=1e-06)"}
    assert plan[name["Relu"]] == "Pass()" and name["Reshape"] not in plan  # its own gradient
    assert not any("call" in vars(op) for op in raw.operations)  # the graph's operations as they were


@pytest.mark.backends
def test_a_difference_and_a_nested_models_operations_conserve():
    inner_in = keras.Input((6,))
    a = L.Dense(5, activation="relu", use_bias=False, name="a")(inner_in)
    b = L.Dense(5, activation="relu", use_bias=False, name="b")(inner_in)
    inner = keras.Model(inner_in, ops.sum(ops.stack([a - b, -b], axis=1), axis=1), name="inner")
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="top")(inner(inputs)))
    numpy_weights(inner, bias=0.0), numpy_weights(model, seed=1, bias=0.0)
    x = np.random.default_rng(2).normal(0, 1, (4, 6)).astype("float32")
    lrp = kc.LRP(model, composite="epsilon")
    relevance = lrp.relevance(x, targets=1)
    logits = ops.convert_to_numpy(model(x))[:, 1]
    np.testing.assert_allclose(relevance.sum(1), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    plan, name = dict(lrp.plan()), _named(model)
    assert name["Subtract"].startswith("inner/")
    assert {plan[name[op]] for op in ("Subtract", "Negative", "Sum")} == {"Norm(epsilon=1e-06)"}


@pytest.mark.backends
def test_an_operation_without_a_rule_is_refused_by_path_and_takes_a_users_rule():
    inputs = keras.Input((6,))
    a = L.Dense(5, activation="relu", use_bias=False, name="a")(inputs)
    b = L.Dense(5, activation="relu", use_bias=False, name="b")(inputs)
    gated = a * b  # a product of two tensors: no rule of its own
    inverse = 1.0 / (1.0 + a)  # nor a quotient by a tensor
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="top")(L.Concatenate()([gated, inverse])))
    numpy_weights(model, bias=0.0)
    x = np.random.default_rng(3).normal(0, 1, (4, 6)).astype("float32")
    name = _named(model)
    with pytest.raises(ValueError, match=rf"'{name['Multiply']}' \(Multiply, an operation between layers\).*"
                                         rf"'{name['TrueDivide']}' \(TrueDivide, an operation between layers\).*"
                                         r"kc\.lrp\.UniformProduct\(\)"):
        kc.LRP(model).relevance(x, targets=0)
    # Half the product's relevance to each factor (a user's rule): the rest of the network conserves it.
    product = keras.Model(inputs, L.Dense(2, use_bias=False, name="top")(gated))
    numpy_weights(product, bias=0.0)
    lrp = kc.LRP(product, composite="epsilon", rules={name["Multiply"]: kc.lrp.UniformProduct()})
    relevance = lrp.relevance(x, targets=0)
    np.testing.assert_allclose(relevance.sum(1), ops.convert_to_numpy(product(x))[:, 0], rtol=1e-4)
    assert dict(lrp.plan())[name["Multiply"]].startswith("UniformProduct")


class _Residual(keras.Model):
    """A subclassed model; `between` is what its call computes between its layers."""

    def __init__(self, between, after=None):
        super().__init__(name="residual")
        self.c1 = L.Conv2D(4, 3, padding="same", activation="relu", use_bias=False, name="c1")
        self.c2 = L.Conv2D(4, 3, padding="same", activation="relu", use_bias=False, name="c2")
        self.pool = L.GlobalAveragePooling1D(name="pool")
        self.top = L.Dense(3, use_bias=False, name="top")
        self.between, self.after = between, after

    def call(self, x):
        a = self.c1(x)
        out = self.top(self.pool(self.between(a, self.c2)))
        return out if self.after is None else self.after(out)


def _subclassed(between, after=None):
    model = _Residual(between, after)
    model(_images(1))
    return numpy_weights(model, bias=0.0)


@pytest.mark.backends
def test_a_subclassed_model_that_computes_between_its_layers_is_refused_by_name():
    x = _images()
    cases = {"the input of layer 'pool'": (lambda a, c2: ops.reshape(a + c2(a), (-1, 64, 4)), None),
             "the input of layer 'c2'": (lambda a, c2: ops.reshape(c2(a / 2.0), (-1, 64, 4)), None),
             "its output": (lambda a, c2: ops.reshape(c2(a), (-1, 64, 4)), lambda out: out * 2.0)}
    for where, (between, after) in cases.items():
        with pytest.raises(ValueError, match=rf"subclassed model computes between its layers: 'residual' "
                                             rf"computes {where} outside layers.*keras\.layers\.Add"):
            kc.LRP(_subclassed(between, after)).relevance(x, targets=0)


@pytest.mark.backends
def test_a_subclassed_model_that_moves_values_between_its_layers_gets_the_functional_models_relevance():
    # Reshapes, transposes, slices and a ReLU compute no new values: their gradients move relevance right.
    def between(a, c2):
        b = ops.transpose(c2(ops.relu(a)), (0, 2, 1, 3))
        return ops.reshape(ops.concatenate([b[:, 4:], b[:, :4]], axis=1), (-1, 64, 4))

    model, x = _subclassed(between), _images()
    inputs = keras.Input((8, 8, 3))
    twin = keras.Model(inputs, model.top(model.pool(between(model.c1(inputs), model.c2))))
    got = kc.LRP(model, composite="epsilon").relevance(x, targets=1)
    want = kc.LRP(twin, composite="epsilon").relevance(x, targets=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    logits = ops.convert_to_numpy(model(x))[:, 1]
    np.testing.assert_allclose(got.reshape(3, -1).sum(1), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


@pytest.mark.backends
def test_subtract_maximum_and_minimum_layers_conserve_and_a_difference_is_not_taken_as_nonnegative():
    inputs = keras.Input((6,))
    a = L.Dense(5, activation="relu", use_bias=False, name="a")(inputs)
    b = L.Dense(5, activation="relu", use_bias=False, name="b")(inputs)
    merged = L.Concatenate()([L.Subtract(name="sub")([a, b]), L.Maximum()([a, b]), L.Minimum()([a, b])])
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="top")(merged))
    numpy_weights(model, bias=0.0)
    x = np.random.default_rng(4).normal(0, 1, (4, 6)).astype("float32")
    # ZPlus on `top`: its input holds a difference, negative in places, so the negative part of its input
    # must not be skipped as it is after a ReLU. Against numpy, from the logit down to the input:
    lrp = kc.LRP(model, composite="epsilon", rules={"top": kc.lrp.ZPlus()})
    got = lrp.relevance(x, targets=0)
    f = lambda layer: ops.convert_to_numpy(model.get_layer(layer).kernel).astype(np.float64)  # noqa: E731
    stab = lambda v: v + 1e-6 * np.where(v >= 0, 1.0, -1.0)  # noqa: E731
    x64 = x.astype(np.float64)
    za, zb = x64 @ f("a"), x64 @ f("b")
    a_, b_ = np.maximum(za, 0), np.maximum(zb, 0)
    z = np.concatenate([a_ - b_, np.maximum(a_, b_), np.minimum(a_, b_)], axis=1)
    w = f("top")[:, 0]
    zp = np.maximum(z, 0) * np.maximum(w, 0) + np.minimum(z, 0) * np.minimum(w, 0)  # zennit's ZPlus terms
    logits = z @ w
    r = zp / stab(zp.sum(1, keepdims=True)) * logits[:, None]
    r_sub, r_max, r_min = r[:, :5], r[:, 5:10], r[:, 10:]
    a_wins = a_ >= b_
    r_a = a_ / stab(a_ - b_) * r_sub + np.where(a_wins, r_max, 0) + np.where(a_wins, 0, r_min)
    r_b = -b_ / stab(a_ - b_) * r_sub + np.where(a_wins, 0, r_max) + np.where(a_wins, r_min, 0)
    want = sum(x64 * (f(name) @ (rel / stab(pre)).T).T for name, rel, pre in (("a", r_a, za), ("b", r_b, zb)))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())
    total = kc.LRP(model, composite="epsilon").relevance(x, targets=0).sum(1)
    np.testing.assert_allclose(total, logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())


@pytest.mark.backends
def test_masks_and_selections_between_layers_move_relevance_as_their_gradient():
    inputs = keras.Input((6,))
    a = L.Dense(5, activation="relu", use_bias=False, name="a")(inputs)
    mask = ops.greater(a, 0.5)  # a comparison: no relevance flows through it
    kept = ops.where(mask, a, 0.0)  # selects values: its gradient hands each its own relevance
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="top")(kept))
    numpy_weights(model, bias=0.0)
    x = np.random.default_rng(5).normal(0, 1, (4, 6)).astype("float32")
    relevance = kc.LRP(model, composite="epsilon").relevance(x, targets=1)
    logits = ops.convert_to_numpy(model(x))[:, 1]
    np.testing.assert_allclose(relevance.sum(1), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    # Against numpy: the epsilon rule on both Dense layers, the kept units only.
    w_a, w_top = (ops.convert_to_numpy(model.get_layer(n).kernel).astype(np.float64) for n in ("a", "top"))
    z = x.astype(np.float64) @ w_a
    kept_values = np.where(z > 0.5, z, 0.0)
    r_kept = kept_values * w_top[:, 1]  # the logit's share of each unit (the stabilizer's factor is ~1)
    want = x * ((r_kept / np.where(z > 0.5, z, 1.0)) @ w_a.T)
    np.testing.assert_allclose(relevance, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
