"""LRP: every rule against the numpy reference (tests/lrp_oracle.py) on Dense, Conv1D/2D/3D, pooling and Add;
conservation; LRP-0 = gradient x input on every linear layer type; the canonizer; layouts; the composites
against zennit on a pure-PyTorch twin; errors; the model left as it was."""
import sys
import textwrap
import types

import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import lrp_oracle as oracle
from tests import oracles
from tests.helpers import requires_channels_first_conv

L = keras.layers
RULES = {
    "epsilon": (lambda: kc.lrp.Epsilon(0.1), ("epsilon", 0.1)),
    "zero": (lambda: kc.lrp.Zero(), ("epsilon", 0.0)),
    "zplus": (lambda: kc.lrp.ZPlus(), ("zplus",)),
    "alphabeta": (lambda: kc.lrp.AlphaBeta(2, 1), ("alphabeta", 2.0, 1.0)),
    "gamma": (lambda: kc.lrp.Gamma(0.25), ("gamma", 0.25)),
    "flat": (lambda: kc.lrp.Flat(), None),
    "wsquare": (lambda: kc.lrp.WSquare(), ("wsquare",)),
    "zbox": (lambda: kc.lrp.ZBox(-3.0, 3.0), ("zbox", -3.0, 3.0)),
}
TOP = ("epsilon", 1e-6)


def _set_weights(model, seed=0, bias=0.1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights and not isinstance(layer, L.BatchNormalization):
            new = [rng.normal(0, 0.5, w.shape).astype("float32") for w in weights]
            if len(new) > 1 or getattr(layer, "use_bias", False):
                new[-1] = (rng.normal(0, bias, new[-1].shape)).astype("float32")
            layer.set_weights(new)
    return model


def _oracle_rule(name, w_ones=None):
    return ("flat", w_ones) if name == "flat" else RULES[name][1]


def _inputs(shape, n=3, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (n,) + shape).astype("float32")


def _dense_oracle(model, names, rule):
    layers = []
    for name in names:
        w, b = model.get_layer(name).get_weights()
        last = name == names[-1]
        layers.append({"w": w.astype(np.float64), "b": b.astype(np.float64), "relu": not last,
                       "rule": TOP if last else _oracle_rule(rule, np.ones_like(w))})
    return layers


def _conv_oracle(layer, in_shape, rule, **geometry):
    kernel, bias = layer.get_weights()
    w, out = oracle.conv_matrix(kernel.astype(np.float64), in_shape, **geometry)
    ones, _ = oracle.conv_matrix(np.ones_like(kernel, dtype=np.float64), in_shape, **geometry)
    b = np.tile(bias.astype(np.float64), int(np.prod(out[:-1])))
    return {"w": w, "b": b, "relu": True, "rule": _oracle_rule(rule, ones)}, out


def _top(model, name):
    w, b = model.get_layer(name).get_weights()
    return {"w": w.astype(np.float64), "b": b.astype(np.float64), "rule": TOP}


@pytest.mark.backends
@pytest.mark.parametrize("rule", list(RULES))
def test_rules_on_dense_equal_the_numpy_reference(rule):
    model = _set_weights(keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu", name="d1"),
                                           L.Dense(3, name="out")]))
    x = _inputs((6,))
    lrp = kc.LRP(model, rules={"d1": RULES[rule][0](), "out": kc.lrp.Epsilon(1e-6)})
    got = lrp.relevance(x, targets=[0, 1, 2])
    want, logits, _ = oracle.run(_dense_oracle(model, ["d1", "out"], rule), x, [0, 1, 2])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).sum() > 0.1  # the reference is not trivially zero


@pytest.mark.backends
@pytest.mark.parametrize("rule", list(RULES))
def test_rules_on_conv2d_with_strides_equal_the_numpy_reference(rule):
    conv = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv")
    model = _set_weights(keras.Sequential([keras.Input((7, 7, 2)), conv, L.Flatten(), L.Dense(3, name="out")]))
    x = _inputs((7, 7, 2))
    lrp = kc.LRP(model, rules={"conv": RULES[rule][0](), "out": kc.lrp.Epsilon(1e-6)})
    got = lrp.relevance(x, targets=1)
    first, _ = _conv_oracle(conv, (7, 7, 2), rule, strides=2, padding="same")
    want, _, _ = oracle.run([first, _top(model, "out")], x, [1, 1, 1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.backends
@pytest.mark.parametrize("case", ["conv1d_dilation", "conv3d_groups", "conv2d_groups_valid"])
@pytest.mark.parametrize("rule", ["alphabeta", "gamma", "flat"])
def test_rules_on_conv1d_conv3d_groups_dilation_equal_the_numpy_reference(case, rule):
    shape, cls, geometry = {
        "conv1d_dilation": ((9, 2), L.Conv1D, dict(padding="same", dilation=2)),
        "conv3d_groups": ((4, 4, 4, 2), L.Conv3D, dict(padding="valid", groups=2)),
        "conv2d_groups_valid": ((6, 6, 4), L.Conv2D, dict(padding="valid", groups=2, strides=2)),
    }[case]
    kwargs = dict(padding=geometry["padding"], dilation_rate=geometry.get("dilation", 1),
                  groups=geometry.get("groups", 1), strides=geometry.get("strides", 1))
    conv = cls(4, 3 if cls is not L.Conv3D else 2, activation="relu", name="conv", **kwargs)
    model = _set_weights(keras.Sequential([keras.Input(shape), conv, L.Flatten(), L.Dense(3, name="out")]))
    x = _inputs(shape)
    got = kc.LRP(model, rules={"conv": RULES[rule][0](), "out": kc.lrp.Epsilon(1e-6)}).relevance(x, targets=2)
    first, _ = _conv_oracle(conv, shape, rule, **geometry)
    want, _, _ = oracle.run([first, _top(model, "out")], x, [2, 2, 2])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_pooling_equals_the_numpy_reference():
    """Average pooling hands relevance down in proportion (zennit's Norm), max pooling to the winner."""
    conv = L.Conv2D(3, 3, padding="same", activation="relu", name="conv")
    model = _set_weights(keras.Sequential([keras.Input((8, 8, 2)), conv, L.AveragePooling2D(2), L.MaxPooling2D(2),
                                           L.Flatten(), L.Dense(3, name="out")]))
    x = _inputs((8, 8, 2))
    got = kc.LRP(model, composite="epsilon_plus").relevance(x, targets=0)
    first, out = _conv_oracle(conv, (8, 8, 2), "zplus", padding="same")
    avg, pooled = oracle.average_matrix(out, 2)
    layers = [first, {"w": avg, "b": np.zeros(avg.shape[1]), "rule": ("epsilon", 1e-6)},
              {"maxpool": (pooled, (2, 2))}, _top(model, "out")]
    want, _, _ = oracle.run(layers, x, [0, 0, 0])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.backends
def test_add_splits_relevance_in_proportion_as_the_numpy_reference():
    inp = keras.Input((5, 5, 2))
    a = L.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inp)
    b = L.Conv2D(3, 3, padding="same", name="c2")(a)
    h = L.ReLU()(L.Add()([a, b]))
    model = _set_weights(keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(h))))
    x = _inputs((5, 5, 2))
    got = kc.LRP(model, composite="epsilon").relevance(x, targets=1)

    c1, shape = _conv_oracle(model.get_layer("c1"), (5, 5, 2), "epsilon", padding="same")
    c2, _ = _conv_oracle(model.get_layer("c2"), shape, "epsilon", padding="same")
    w3, b3 = [v.astype(np.float64) for v in model.get_layer("out").get_weights()]
    x64 = x.reshape(3, -1).astype(np.float64)
    act = np.maximum(x64 @ c1["w"] + c1["b"], 0)
    bz = act @ c2["w"] + c2["b"]
    h64 = np.maximum(act + bz, 0)
    logit = (h64 @ w3 + b3)[:, 1]
    r_h = oracle.rule_backward(("epsilon", 1e-6), h64, w3[:, 1:2], b3[1:2], logit[:, None])
    r_a, r_b = oracle.add_backward([act, bz], r_h)
    r_a = r_a + oracle.rule_backward(("epsilon", 1e-6), act, c2["w"], c2["b"], r_b)
    want = oracle.rule_backward(("epsilon", 1e-6), x64, c1["w"], c1["b"], r_a)
    np.testing.assert_allclose(got, want.reshape(x.shape), rtol=1e-4, atol=1e-6)


def _zero_everywhere():
    return kc.lrp.Composite(kc.lrp.Zero(), kc.lrp.Zero(), name="zero")


@pytest.mark.backends
def test_conservation_bias_free_relu_network_sums_to_the_logit():
    model = keras.Sequential([keras.Input((10, 10, 3)),
                              L.Conv2D(6, 3, padding="same", activation="relu", use_bias=False),
                              L.MaxPooling2D(), L.Conv2D(8, 3, activation="relu", use_bias=False),
                              L.Flatten(), L.Dense(16, activation="relu", use_bias=False),
                              L.Dense(4, use_bias=False)])
    x = np.random.default_rng(0).random((4, 10, 10, 3)).astype("float32")
    explanation = kc.LRP(model, composite=_zero_everywhere())
    relevance = explanation.relevance(x, targets=[0, 1, 2, 3])
    logits = keras.ops.convert_to_numpy(model(x))[np.arange(4), [0, 1, 2, 3]]
    total = relevance.reshape(4, -1).sum(1)
    assert np.all(np.abs(total - logits) <= 1e-4 * np.abs(logits))
    signed = explanation.explain(x, targets=[0, 1, 2, 3], normalize=False)
    np.testing.assert_allclose(signed, relevance.sum(-1), rtol=1e-5, atol=1e-7)


@pytest.mark.backends
def test_conservation_with_biases_counts_the_absorbed_relevance():
    model = _set_weights(keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu", name="d1"),
                                           L.Dense(5, activation="relu", name="d2"), L.Dense(3, name="out")]),
                         bias=0.5)
    x = _inputs((6,))
    layers = _dense_oracle(model, ["d1", "d2", "out"], "zero")
    layers[-1]["rule"] = ("epsilon", 0.0)
    want, logits, absorbed = oracle.run(layers, x, [0, 1, 2])
    got = kc.LRP(model, composite=_zero_everywhere()).relevance(x, targets=[0, 1, 2])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(1) + absorbed, logits[np.arange(3), [0, 1, 2]], rtol=1e-4, atol=1e-6)
    assert np.abs(absorbed).max() > 1e-2  # the biases did absorb relevance


def _every_layer_model(data_format="channels_last"):
    """Depthwise, separable, transposed, dilated and grouped convolutions, a foldable BatchNormalization,
    pooling, a residual Add and Concatenate: every linear layer type in one network."""
    cf = data_format == "channels_first"
    shape = (3, 10, 10) if cf else (10, 10, 3)
    axis = 1 if cf else -1
    kw = dict(data_format=data_format)
    inp = keras.Input(shape)
    x = L.Conv2D(6, 3, padding="same", name="conv", **kw)(inp)
    x = L.BatchNormalization(axis=axis, name="bn")(x)
    x = L.ReLU()(x)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=1, activation="relu", name="dw", **kw)(x)
    x = L.Add()([x, d])
    s = L.SeparableConv2D(4, 3, padding="same", activation="relu", name="sep", **kw)(x)
    g = L.Conv2D(4, 3, padding="same", dilation_rate=2, groups=2, activation="relu", name="grouped", **kw)(x)
    x = L.Concatenate(axis=axis)([s, g])
    x = L.AveragePooling2D(2, **kw)(x)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="up", **kw)(x)
    x = L.MaxPooling2D(2, **kw)(x)
    x = L.GlobalAveragePooling2D(**kw)(x)
    out = L.Dense(3, name="out")(L.Dropout(0.5)(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") if "moving_variance" not in v.path
                               else rng.uniform(0.5, 2, w.shape).astype("float32")
                               for w, v in zip(layer.get_weights(), layer.weights)])
    return model


@pytest.mark.backends
def test_lrp0_is_gradient_times_input_on_every_layer_type():
    """On a piecewise-linear ReLU network LRP-0 is gradient x input (also with biases): a check of the
    depthwise, separable, transposed, grouped and dilated convolutions, the folded BatchNormalization, Add,
    Concatenate, pooling and dropout."""
    model = _every_layer_model()
    x = np.random.default_rng(0).random((3, 10, 10, 3)).astype("float32")
    lrp = kc.LRP(model, composite=_zero_everywhere())
    relevance = lrp.relevance(x, targets=[0, 1, 2])
    gradient = kc.Saliency(model).attributions(x, targets=[0, 1, 2])
    np.testing.assert_allclose(relevance, gradient * x, rtol=1e-3, atol=2e-5 * np.abs(relevance).max())
    assert ("bn", "folded into the layer before") in lrp.plan()


@pytest.mark.channels_first
@pytest.mark.backends
def test_channels_first_twin_equals_channels_last():
    requires_channels_first_conv()
    last, first = _every_layer_model(), _every_layer_model("channels_first")
    first.set_weights(last.get_weights())  # same shapes: kernels do not depend on the layout
    x = np.random.default_rng(0).random((2, 10, 10, 3)).astype("float32")
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box"):
        a = kc.LRP(last, composite=composite).relevance(x, targets=1)
        b = kc.LRP(first, composite=composite).relevance(np.moveaxis(x, -1, 1), targets=1)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * np.abs(a).max())


@pytest.mark.backends
def test_batchnorm_is_folded_into_the_convolution_before_it():
    """ZPlus on Conv+BN equals ZPlus on one convolution with the BatchNormalization folded into its weights
    (a rule that is not invariant to the split: folding matters)."""
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, name="conv")(inp)
    x = L.BatchNormalization(name="bn", epsilon=1e-3)(x)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(L.ReLU()(x))))
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(0, 0.5, (3, 3, 2, 3)), rng.normal(0, 0.1, 3)
    gamma, beta, mean, var = rng.normal(1, 0.5, 3), rng.normal(0, 0.3, 3), rng.normal(0, 0.3, 3), rng.uniform(.5, 2, 3)
    model.get_layer("conv").set_weights([kernel, bias])
    model.get_layer("bn").set_weights([gamma, beta, mean, var])
    scale = gamma / np.sqrt(var + 1e-3)
    twin = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, activation="relu"), L.Flatten(), L.Dense(2)])
    twin.layers[0].set_weights([kernel * scale, (bias - mean) * scale + beta])
    twin.layers[2].set_weights(model.get_layer("out").get_weights())
    x = _inputs((6, 6, 2))
    a = kc.LRP(model, composite="epsilon_plus").relevance(x, targets=0)
    b = kc.LRP(twin, composite="epsilon_plus").relevance(x, targets=0)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    unfolded = kc.LRP(model, composite="epsilon_plus", canonize=False).relevance(x, targets=0)
    assert np.abs(unfolded - a).max() > 1e-3  # without the canonizer BatchNormalization passes relevance


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["sequential", "nested"])
def test_maps_signed_explain_several_targets_and_intermediate_layers(make_cam_model, kind):
    model = make_cam_model(kind=kind)
    head = model.get_layer("cam_head") if kind == "sequential" else model.layers[-1]
    head.bias.assign(np.array([0.3, -0.2, 0.1], "float32"))
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype("float32")
    lrp = kc.LRP(model)
    pairs = np.array([[0, 1], [1, 2], [2, 0]])
    relevance = lrp.relevance(x, targets=pairs)
    assert relevance.shape == (3, 2, 16, 16, 3)
    for k in range(2):
        np.testing.assert_allclose(relevance[:, k], lrp.relevance(x, targets=pairs[:, k]), rtol=1e-5, atol=1e-7)
    signed = lrp.explain(x, targets=pairs[:, 0], normalize=False)
    np.testing.assert_allclose(signed, relevance[:, 0].sum(-1), rtol=1e-5, atol=1e-7)
    assert signed.min() < 0 < signed.max()
    np.testing.assert_allclose(lrp(x, targets=pairs[:, 0]), oracles.minmax(np.maximum(signed, 0)), atol=1e-5)
    # At an intermediate layer, channels kept. LRP-0 there: GAP + Dense after it are linear, so its
    # relevance sums to the logit less the head's bias.
    inner = kc.LRP(model, composite=_zero_everywhere(), layer="conv2")
    at_layer = inner.relevance(x, targets=1)
    assert at_layer.shape == (3, 8, 8, 8)
    scores = inner.compute(x, targets=1).scores  # the logits (the head's softmax is skipped)
    np.testing.assert_allclose(at_layer.reshape(3, -1).sum(1), scores - (-0.2), rtol=1e-4, atol=1e-6)
    assert inner(x, targets=1).shape == (3, 16, 16)


def _stub_torchvision():
    """zennit imports torchvision for its ResNet canonizers only; PyPI has no torchvision for the CPU build of
    torch, so a stand-in serves when the real one does not import."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    vision = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.Bottleneck = type("Bottleneck", (), {})
    resnet.BasicBlock = type("BasicBlock", (), {})
    vision.models, models.resnet = models, resnet
    sys.modules.update({"torchvision": vision, "torchvision.models": models, "torchvision.models.resnet": resnet})


def _twins():
    """A small CNN in Keras and its pure-PyTorch twin with the same weights. BatchNormalization's epsilon is
    tiny: zennit 0.5.1's canonizer leaves it in the BatchNormalization it turns into the identity, which then
    divides by sqrt(1 + epsilon)."""
    torch = pytest.importorskip("torch")
    model = keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(4, 3, padding="same", name="c1"),
                              L.BatchNormalization(epsilon=1e-6, name="bn"), L.ReLU(),
                              L.Conv2D(6, 3, strides=2, name="c2", activation="relu"), L.AveragePooling2D(2),
                              L.Conv2D(8, 1, name="c3", activation="relu"), L.MaxPooling2D(2),
                              L.GlobalAveragePooling2D(), L.Dense(3, name="out")])
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") if "variance" not in v.path
                               else rng.uniform(0.5, 2, w.shape).astype("float32")
                               for w, v in zip(layer.get_weights(), layer.weights)])
    nn = torch.nn
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, eps=1e-6), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(6, 8, 1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        for keras_name, module in (("c1", twin[0]), ("c2", twin[3]), ("c3", twin[6])):
            k, b = model.get_layer(keras_name).get_weights()
            module.weight.copy_(torch.tensor(k.transpose(3, 2, 0, 1)))
            module.bias.copy_(torch.tensor(b))
        gamma, beta, mean, var = model.get_layer("bn").get_weights()
        for name, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
            getattr(twin[1], name).copy_(torch.tensor(value))
        w, b = model.get_layer("out").get_weights()
        twin[11].weight.copy_(torch.tensor(w.T))
        twin[11].bias.copy_(torch.tensor(b))
    return model, twin


@pytest.mark.parametrize("name", kc.lrp.available_composites())
def test_composites_equal_zennit_on_a_pytorch_twin(name):
    torch = pytest.importorskip("torch")
    _stub_torchvision()
    zennit = pytest.importorskip("zennit.composites")
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.rules import Epsilon
    from zennit.types import Convolution

    model, twin = _twins()
    x = np.random.default_rng(1).random((2, 12, 12, 3)).astype("float32")
    canon = [SequentialMergeBatchNorm()]
    if name == "epsilon":
        composite = zennit.LayerMapComposite(layer_map=zennit.layer_map_base() + [
            (Convolution, Epsilon()), (torch.nn.Linear, Epsilon())], canonizers=canon)
    elif name == "epsilon_gamma_box":
        composite = zennit.EpsilonGammaBox(low=0.0, high=1.0, canonizers=canon)
    else:
        composite = zennit.COMPOSITES[name](canonizers=canon)
    inputs = torch.tensor(np.moveaxis(x, -1, 1))
    with Gradient(model=twin, composite=composite) as attributor:
        output, relevance = attributor(inputs, lambda out: out * torch.eye(3)[[2, 0]])
    want = np.moveaxis(relevance.detach().numpy(), 1, -1)
    got = kc.LRP(model, composite=name).relevance(x, targets=[2, 0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), output.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())


class _Custom(L.Layer):
    def call(self, inputs):
        return inputs * 2.0


@pytest.mark.backends
def test_errors_name_the_problem_and_leave_the_model_unchanged():
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation="relu", name="conv"),
                              _Custom(name="custom"), L.GlobalAveragePooling2D(), L.Dense(2, name="out")])
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    activations = [layer.__dict__.get("activation") for layer in model.layers]
    with pytest.raises(ValueError, match=r"no rule for layer 'custom'.*rules=\{'custom': kc.lrp.Epsilon\(\)\}"):
        kc.LRP(model)(x)
    assert all("call" not in layer.__dict__ for layer in model.layers)
    # The fix from the message works: the layer itself, differentiated (x2 then /2x: relevance passes).
    fixed = kc.LRP(model, composite=_zero_everywhere(), rules={"custom": kc.lrp.Epsilon(0.0)})
    relevance = fixed.relevance(x, targets=1)
    logits = keras.ops.convert_to_numpy(model(x))[:, 1]
    np.testing.assert_allclose(relevance.reshape(2, -1).sum(1), logits, rtol=1e-4)
    for args, message in [
        (dict(rules={"nope": kc.lrp.Epsilon()}), "does not have"),
        (dict(rules={"conv": "epsilon"}), r"must be a kc.lrp rule"),
        (dict(rules={3: kc.lrp.Epsilon()}), "layer names or Keras layer classes"),
        (dict(composite="epsilon_pluss"), "Unknown LRP composite 'epsilon_pluss'.*'epsilon_plus'"),
        (dict(composite=3), "must be a name"),
    ]:
        with pytest.raises(ValueError, match=message):
            kc.LRP(model, **args)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        kc.lrp.AlphaBeta(1, 1)
    with pytest.raises(ValueError, match="modifies weights"):
        kc.LRP(model, rules={"custom": kc.lrp.Gamma()})(x)
    with pytest.raises(ValueError, match="Pass hands relevance through unchanged"):
        kc.LRP(model, rules={"custom": kc.lrp.Epsilon(), "out": kc.lrp.Pass()})(x)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert all("call" not in layer.__dict__ for layer in model.layers)
    assert [layer.__dict__.get("activation") for layer in model.layers] == activations
    assert kc.get_explainer("lrp", model, rules={"custom": kc.lrp.Pass()}).__class__ is kc.LRP
    # A normalization without a rule (LayerNormalization has one: tests/test_lrp_attention.py) is refused by name.
    normed = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.GroupNormalization(2, name="gn"),
                               L.GlobalAveragePooling2D(), L.Dense(2)])
    with pytest.raises(ValueError, match="no rule for layer 'gn' \\(GroupNormalization\\)"):
        kc.LRP(normed)(x)


def test_signed_overlay_is_red_positive_blue_negative_and_transparent_at_zero():
    image = np.full((4, 4, 3), 0.5, np.float32)
    relevance = np.array([[2.0, -2.0, 0.0, 1.0]] * 4, np.float32)
    picture = kc.overlay(image, relevance, alpha=1.0, colormap="bwr", signed=True)
    assert picture[0].tolist() == [[255, 0, 0], [0, 0, 255], [128, 128, 128], [192, 128, 128]]
    half = kc.overlay(image, relevance, alpha=0.5, colormap="bwr", signed=True)
    assert half[0, 0].tolist() == [192, 64, 64] and half[0, 2].tolist() == [128, 128, 128]
    # Unsigned "bwr": 0 blue, 0.5 white, 1 red, blended with the usual alpha.
    ramp = kc.overlay(np.zeros((1, 3, 3), np.float32), np.array([[0.0, 0.5, 1.0]], np.float32), alpha=1.0,
                      colormap="bwr")
    assert np.abs(ramp[0].astype(int) - [[0, 0, 255], [255, 255, 255], [255, 0, 0]]).max() <= 1
    assert "bwr" in kc.visualize.colormap_names()


def test_signed_signal_band_is_red_positive_blue_negative_white_at_zero():
    signal = np.sin(np.linspace(0, 4 * np.pi, 300))
    relevance = np.r_[np.full(100, 3.0), np.zeros(100), np.full(50, -3.0), np.full(50, -1.5)]
    before = relevance.copy()
    picture = kc.overlay_signal(signal, relevance, alpha=1.0, colormap="bwr", signed=True)
    np.testing.assert_array_equal(relevance, before)  # not modified
    # Row 0 lies above the line's lane margin: the band alone, one column per sample (T = 300).
    # (0 is entry 128 of the 256-entry "bwr" table, one step past its middle: white to 1 in 255.)
    expected = [[255, 0, 0], [255, 255, 255], [0, 0, 255], [128, 128, 255]]  # -1.5 / 3: half-way to blue
    assert np.abs(picture[0, [50, 150, 225, 275]].astype(int) - expected).max() <= 1
    half = kc.overlay_signal(signal, relevance, alpha=0.5, colormap="bwr", signed=True)
    expected = [[128, 0, 0], [128, 128, 128], [0, 0, 128]]
    assert np.abs(half[0, [50, 150, 225]].astype(int) - expected).max() <= 1
    # The line is black on the white of zero by default; white on the unsigned band, as before.
    assert picture[:, 150].max(-1).min() < 64  # anti-aliased: dark where the line crosses the column
    unsigned = kc.overlay_signal(signal, np.clip(relevance, 0, 1), alpha=1.0, colormap="bwr")
    assert unsigned[0, [50, 150]].tolist() == [[255, 0, 0], [0, 0, 255]]
    assert unsigned[:, 150].min(-1).max() > 192
    with pytest.raises(ValueError, match="`signed` must be True or False"):
        kc.overlay_signal(signal, relevance, signed="yes")


def test_signed_volume_montage_is_red_positive_blue_negative_and_scaled_over_the_volume():
    volume = np.full((4, 4, 4), 0.5, np.float32)
    relevance = np.zeros((4, 4, 4), np.float32)
    relevance[1] = [[2.0, -2.0, 0.0, 1.0]] * 4
    relevance[2] = 1.0  # half the volume's largest |value|: half-way to red on every slice's voxel
    before = relevance.copy()
    kwargs = dict(alpha=1.0, colormap="bwr", signed=True, labels=False, scale=1, margin=0)
    picture = kc.volume_montage(volume, relevance, slices=[1, 2], cols=2, **kwargs)
    np.testing.assert_array_equal(relevance, before)
    # As kc.overlay(..., signed=True): red positive, blue negative, the slice's grey where the map is 0.
    assert picture[0, :4].tolist() == [[255, 0, 0], [0, 0, 255], [128, 128, 128], [192, 128, 128]]
    assert np.all(picture[:, 4:] == [192, 128, 128])  # not rescaled per slice (kc.overlay's would be red)
    np.testing.assert_array_equal(picture[:, :4], kc.overlay(volume[1], relevance[1], **kwargs_2d()))
    # slices=None starts at the slice of the largest (most positive) value, axis 2 slices (D, H).
    chosen = kc.volume_montage(volume, relevance, count=1, axis=0, **kwargs)
    assert chosen[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="`signed` must be True or False"):
        kc.volume_montage(volume, relevance, signed=1)


def kwargs_2d():
    return dict(alpha=1.0, colormap="bwr", signed=True)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3, padding="same")
        self.bn = L.BatchNormalization()
        self.relu = L.ReLU()
        self.pool = L.GlobalAveragePooling2D()
        self.out = L.Dense(3)

    def call(self, x):
        return self.out(self.pool(self.relu(self.bn(self.conv(x)))))


@pytest.mark.backends
def test_subclassed_model_and_the_docstring_example():
    model = SubclassedNet()
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    model(x)
    lrp = kc.LRP(model, composite=_zero_everywhere())
    relevance = lrp.relevance(x, targets=[0, 2])
    gradient = kc.Saliency(model).attributions(x, targets=[0, 2])
    np.testing.assert_allclose(relevance, gradient * x, rtol=1e-3, atol=2e-3 * np.abs(relevance).max())
    assert [rule for name, rule in lrp.plan() if name == model.bn.name] == ["folded into the layer before"]
    example = kc.LRP.__doc__.split("```python")[1].split("```")[0]
    exec(textwrap.dedent(example), {})


def test_cli_explains_with_lrp_and_a_composite(tmp_path, capsys):
    import cv2

    from keras_cam import cli

    model = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(4, 3, activation="relu"),
                              L.GlobalAveragePooling2D(), L.Dense(2)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    png = str(tmp_path / "a.png")
    cv2.imwrite(png, (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    assert cli.main(["explain", path, png, "--method", "lrp", "--composite", "epsilon_gamma_box", "--out",
                     str(out), "--save-raw"]) == 0
    raw = np.load(next(out.glob("*.npy")))
    assert raw.shape == (16, 16) and 0 <= raw.min() and raw.max() == pytest.approx(1.0)
    capsys.readouterr()
    assert cli.main(["explain", path, png, "--composite", "epsilon", "--out", str(out)]) == 2
    assert "--composite is an option of --method lrp" in capsys.readouterr().err


def _small_cnn():
    return keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation="relu", name="c1"),
                             L.BatchNormalization(name="bn"), L.Conv2D(4, 3, name="c2"), L.ReLU(),
                             L.GlobalAveragePooling2D(), L.Dense(2, name="out")])


@pytest.mark.backends
def test_mixed_precision_gives_the_float32_relevance(mixed_precision):
    """Rules run in float32 (a float16 stabilizer of 1e-6 is 0 and gave NaN): close to the float32 twin."""
    half = _small_cnn()
    with _policy("float32"):
        full = _small_cnn()
    full.set_weights(half.get_weights())
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box"):
        a = kc.LRP(half, composite=composite).relevance(x, targets=1)
        b = kc.LRP(full, composite=composite).relevance(x, targets=1)
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, atol=2e-2 * np.abs(b).max())


class _policy:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)


@pytest.mark.backends
def test_explain_dataset_stores_the_lrp_maps(tmp_path):
    pytest.importorskip("zarr")
    model = _small_cnn()
    x = np.random.default_rng(0).random((5, 8, 8, 3)).astype("float32")
    lrp = kc.LRP(model, composite="epsilon_plus_flat")
    store = kc.explain_dataset(lrp, x, targets=1, store=str(tmp_path / "lrp.zarr"), batch_size=2, verbose=0,
                               dtype="float32")
    # Batches of 2 against one of 5: XLA's kernels for another batch size round differently (2e-6 seen on
    # JAX); a wrong or misplaced map is off by O(0.1).
    np.testing.assert_allclose(np.asarray(store["heatmaps"][:]), lrp(x, targets=1), atol=1e-5)
    assert store.settings["method"] == "lrp"
    # What a resumed run is checked against is the same for an equal explainer (no object addresses in it).
    from keras_cam.store import settings

    def made():
        return kc.LRP(model, rules={L.Dense: kc.lrp.Epsilon(0.1), "c1": kc.lrp.Flat()}, layer="c2")

    assert settings(made(), "array", 5, 1, 2, "float32") == settings(made(), "array", 5, 1, 2, "float32")
    assert "Flat" in str(settings(made(), "array", 5, 1, 2, "float32")["options"])


def test_all_zero_relevance_warns():
    # No weights, only a bias: the bias absorbs all of the logit's relevance, none reaches the input.
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Flatten(), L.Dense(2, kernel_initializer="zeros",
                                                                           bias_initializer="ones")])
    with pytest.warns(UserWarning, match="relevance of this call is zero everywhere"):
        relevance = kc.LRP(model, composite="epsilon").relevance(np.ones((2, 4, 4, 1), "float32"), targets=0)
    assert relevance.shape == (2, 4, 4, 1) and not relevance.any()
