"""LRP for transformers (AttnLRP): LayerNormalization's LN-rule and MultiHeadAttention's rules against the numpy
reference (tests/lrp_oracle.py), conservation through LayerNormalization, a small vision transformer end to
end, errors, and the model left as it was."""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import lrp_oracle as oracle

L = keras.layers
T, D = 5, 6


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.LayerNormalization):
            layer.set_weights([rng.normal(1.0 if w.name == "gamma" else 0.0, 0.5, w.shape).astype("float32")
                               for w in layer.weights])
        elif layer.weights:
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.weights])
    return model


def _top_relevance(model, features, targets):
    """Relevance of the (flattened) input of the last Dense layer, which starts as the target's logit."""
    top = model.get_layer("top")
    w = keras.ops.convert_to_numpy(top.kernel).astype(np.float64)
    b = keras.ops.convert_to_numpy(top.bias).astype(np.float64) if top.use_bias else 0.0
    flat = features.reshape(len(features), -1)
    logits = flat @ w + b
    rows = np.arange(len(flat))
    c = np.zeros_like(logits)
    c[rows, targets] = logits[rows, targets] / oracle.stabilize(logits[rows, targets], 1e-6)
    return (flat * (c @ w.T)).reshape(features.shape), logits[rows, targets]


@pytest.mark.backends
@pytest.mark.parametrize("center", [True, False])
def test_layernorm_rule_equals_the_numpy_reference_and_conserves_without_offset(center):
    model = keras.Sequential([keras.Input((T, D)), L.LayerNormalization(epsilon=1e-3, center=center, name="ln"),
                              L.Flatten(), L.Dense(3, use_bias=False, name="top")])
    _random_weights(model)
    x = np.random.default_rng(1).normal(0, 1, (3, T, D)).astype("float32")
    targets = np.array([0, 1, 2])
    lrp = kc.LRP(model, composite="epsilon")
    got = lrp.relevance(x, targets=targets)
    assert ("ln", "LayerNorm(epsilon=1e-06)") in lrp.plan()
    ln = model.get_layer("ln")
    gamma = keras.ops.convert_to_numpy(ln.gamma).astype(np.float64)
    beta = keras.ops.convert_to_numpy(ln.beta).astype(np.float64) if center else None
    x64 = x.astype(np.float64)
    y = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-3) * gamma
    y = y + (beta if center else 0.0)
    r_y, logits = _top_relevance(model, y, targets)
    want = oracle.layernorm_backward(x64, gamma, beta, r_y, axis_eps=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    if not center:  # a linear map without offset: the relevance of each image sums to its logit
        np.testing.assert_allclose(got.reshape(3, -1).sum(1), logits, rtol=1e-4)
    else:  # the offset absorbs a share: not all of it reaches the input
        assert np.abs(got.reshape(3, -1).sum(1) - logits).max() > 1e-3


@pytest.mark.backends
@pytest.mark.parametrize("causal", [False, True])
def test_attention_rules_equal_the_numpy_reference(causal):
    inputs = keras.Input((T, D))
    mha = L.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.1 if causal else 0.0, name="mha")
    outputs = L.Dense(3, name="top")(L.Flatten()(mha(inputs, inputs, use_causal_mask=causal)))
    model = _random_weights(keras.Model(inputs, outputs))
    x = np.random.default_rng(2).normal(0, 1, (2, T, D)).astype("float32")
    targets = np.array([2, 0])
    lrp = kc.LRP(model, composite="epsilon")
    got = lrp.relevance(x, targets=targets)
    assert ("mha", "AttnLRP(epsilon=1e-06)") in lrp.plan()
    weights = []
    for dense in (mha._query_dense, mha._key_dense, mha._value_dense, mha._output_dense):
        weights += [keras.ops.convert_to_numpy(v).astype(np.float64) for v in (dense.kernel, dense.bias)]
    mask = np.tril(np.ones((T, T), bool)) if causal else None
    x64 = x.astype(np.float64)
    scale = 1.0 / np.sqrt(3.0)
    _, out = oracle.attention_backward(x64, weights, np.zeros((2, T, D)), scale, mask)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(mha(x, x, use_causal_mask=causal)), rtol=1e-4,
                               atol=1e-5)
    r_out, _ = _top_relevance(model, out, targets)
    want, _ = oracle.attention_backward(x64, weights, r_out, scale, mask)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # Not the plain gradient x input: the softmax and the products have rules of their own.
    plain = kc.LRP(model, composite="epsilon", rules={"mha": kc.lrp.Epsilon()}).relevance(x, targets=targets)
    assert np.abs(plain - want).max() > 0.05 * np.abs(want).max()


def _tiny_vit():
    inputs = keras.Input((16, 16, 3))
    x = L.Reshape((16, 8))(L.Conv2D(8, 4, strides=4, name="patches")(inputs))
    h = L.LayerNormalization(name="ln1")(x)
    x = L.Add()([x, L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(h, h)])
    h = L.Dense(8, name="mlp")(L.Dense(16, activation="gelu")(L.LayerNormalization(name="ln2")(x)))
    x = L.GlobalAveragePooling1D()(L.Add()([x, h]))
    return _random_weights(keras.Model(inputs, L.Dense(3, name="top")(x)), seed=3)


@pytest.mark.backends
def test_a_small_vision_transformer_end_to_end_and_the_model_left_as_it_was():
    model = _tiny_vit()
    x = np.random.default_rng(4).random((2, 16, 16, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    logits = keras.ops.convert_to_numpy(model(x))
    lrp = kc.LRP(model)  # epsilon_plus_flat: Flat on the patch embedding
    maps = lrp(x, targets=[0, 1])
    signed = lrp.explain(x, targets=[0, 1], normalize=False)
    assert maps.shape == (2, 16, 16) and 0.0 <= maps.min() and maps.max() == pytest.approx(1.0)
    assert np.all(np.isfinite(signed)) and np.abs(signed).max() > 0
    plan = dict(lrp.plan())
    assert plan["mha"] == "AttnLRP(epsilon=1e-06)" and plan["ln1"] == plan["ln2"] == "LayerNorm(epsilon=1e-06)"
    assert plan["patches"].startswith("Flat") and plan["mha/query"] == "Epsilon(epsilon=1e-06)"  # by path
    # Each patch's relevance is flat over its 4x4 pixels (Flat spreads evenly over the receptive field).
    patches = signed.reshape(2, 4, 4, 4, 4)
    np.testing.assert_allclose(patches, patches[:, :, :1, :, :1].repeat(4, 2).repeat(4, 4), rtol=1e-4,
                               atol=1e-6 * np.abs(signed).max())
    mha = model.get_layer("mha")
    assert "_compute_attention" not in mha.__dict__ and "call" not in model.get_layer("ln1").__dict__
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), logits, rtol=1e-6)


class _OwnAttention(L.MultiHeadAttention):
    def _compute_attention(self, *args, **kwargs):  # e.g. a cache or a different scaling
        return super()._compute_attention(*args, **kwargs)


def test_transformer_rules_refuse_other_layers_and_subclasses_are_unknown():
    model = _tiny_vit()
    x = np.random.default_rng(4).random((1, 16, 16, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"AttnLRP\(epsilon=1e-06\) is the rule of keras.layers.MultiHeadAtt"):
        kc.LRP(model, rules={"top": kc.lrp.AttnLRP()})(x)
    with pytest.raises(ValueError, match=r"is the rule of keras.layers.LayerNormalization layers; layer 'mlp'"):
        kc.LRP(model, rules={"mlp": kc.lrp.LayerNorm()})(x)
    inputs = keras.Input((T, D))
    own = keras.Model(inputs, L.Dense(2)(L.Flatten()(_OwnAttention(2, 3, name="own")(inputs, inputs))))
    with pytest.raises(ValueError, match=r"no rule for layer 'own' \(_OwnAttention, holds layers\)"):
        kc.LRP(own)(np.zeros((1, T, D), "float32"))
    assert all("_compute_attention" not in layer.__dict__ for layer in own.layers)


def test_a_rule_that_changes_the_output_is_caught_and_several_unknown_layers_are_named_at_once(monkeypatch):
    from keras_cam.lrp import transformers

    model = _tiny_vit()
    x = np.random.default_rng(4).random((1, 16, 16, 3)).astype("float32")
    right = transformers.layernorm_call
    # A LayerNormalization rule that computed something else (say, after a change in Keras) is refused.
    monkeypatch.setattr(transformers, "layernorm_call",
                        lambda layer, rule: (lambda inputs, *a, **k: 2.0 * right(layer, rule)(inputs)))
    with pytest.raises(ValueError, match=r"LRP's rules change this model's output .*ln1: LayerNorm"):
        kc.LRP(model)(x)
    monkeypatch.setattr(transformers, "layernorm_call", right)
    assert kc.LRP(model)(x).shape == (1, 16, 16)

    class Twice(L.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((8, 8, 3))
    two = keras.Model(inputs, L.Dense(2)(L.Flatten()(Twice(name="b")(Twice(name="a")(inputs)))))
    with pytest.raises(ValueError, match=r"no rule for layers 'a' \(Twice\), 'b' \(Twice\).*Give them rules: "
                                         r"rules=\{'a': kc.lrp.Epsilon\(\), 'b': kc.lrp.Epsilon\(\)\}"):
        kc.LRP(two)(np.zeros((1, 8, 8, 3), "float32"))
