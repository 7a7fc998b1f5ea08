"""Attributions at the input's resolution: Saliency, SmoothGrad, Integrated Gradients, Guided Backprop and
Guided Grad-CAM, each against a numpy oracle or an exact identity.

Oracles: on a linear model (Flatten + Dense) the input gradient is the Dense kernel's column; a hand-written
numpy forward and guided backward for a dense ReLU network; completeness of Integrated Gradients; SmoothGrad
as the mean of Saliency's gradients at the same noisy copies; Guided Grad-CAM as the public Grad-CAM map times
the public guided gradient.
"""
import pickle

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.explainers.attribution import IntegratedGradients, Saliency, SmoothGrad
from keras_cam.explainers.guided import GuidedBackprop, GuidedGradCAM
from tests.helpers import requires_channels_first_conv
from tests.models import layout_inputs, layout_model, layout_weights, numpy_weights

METHODS = {"saliency": Saliency, "smoothgrad": SmoothGrad, "integrated-gradients": IntegratedGradients,
           "guided-backprop": GuidedBackprop, "guided-gradcam": GuidedGradCAM}


def minmax(m):
    axes = tuple(range(1, m.ndim))
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    return np.where(hi - lo > 0, (m - lo) / np.where(hi - lo > 0, hi - lo, 1), 0)


def linear(shape, classes=3, seed=0, activation="softmax"):
    """Flatten + Dense: d logit_c / d x = the kernel's column c, reshaped to one input."""
    rng = np.random.default_rng(seed)
    net = keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                            keras.layers.Dense(classes, activation=activation, kernel_initializer="zeros")])
    w = rng.normal(size=(int(np.prod(shape)), classes)).astype("float32")
    net.layers[-1].set_weights([w, np.full(classes, 0.1, np.float32)])
    return net, w


def images(shape, n=3, seed=1):
    return np.random.default_rng(seed).random((n,) + tuple(shape)).astype("float32")


@pytest.mark.backends
@pytest.mark.parametrize("shape", [(10, 2), (6, 5, 3), (4, 3, 5, 2)])  # signals, images, volumes
def test_saliency_smoothgrad_and_ig_on_a_linear_model(shape):
    net, w = linear(shape)
    x, t = images(shape), np.array([0, 2, 1])
    grad = np.moveaxis(w[:, t].reshape(shape + (3,)), -1, 0)  # (N, *shape): each image's kernel column
    expected = minmax(np.abs(grad).max(axis=-1))
    before = x.copy()
    np.testing.assert_allclose(Saliency(net)(x, targets=t), expected, atol=1e-5)
    np.testing.assert_allclose(Saliency(net).attributions(x, targets=t), grad, rtol=1e-5, atol=1e-6)
    # The gradient is the same everywhere, so SmoothGrad's mean over noisy copies is it too.
    np.testing.assert_allclose(SmoothGrad(net, samples=4, noise=0.3)(x, targets=t), expected, atol=1e-5)
    # IG: (x - baseline) * gradient exactly, for an array baseline too; the map keeps positive evidence.
    baseline = np.random.default_rng(3).random(shape[-1:]).astype("float32")
    ig = IntegratedGradients(net, steps=3, baseline=baseline)
    attributions = ig.attributions(x, targets=t)
    np.testing.assert_allclose(attributions, (x - baseline) * grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ig(x, targets=t), minmax(np.maximum(attributions.sum(-1), 0)), atol=1e-5)
    np.testing.assert_array_equal(x, before)


@pytest.mark.backends
def test_several_targets_per_image_and_all():
    net, w = linear((4, 4, 2))
    x = images((4, 4, 2), n=2)
    grad = np.moveaxis(w.reshape(4, 4, 2, 3), -1, 0)  # (K, 4, 4, 2)
    for method in ("saliency", "smoothgrad", "guided-backprop"):
        explainer = kc.get_explainer(method, net, layer=None)
        maps = explainer(x, targets="all")
        assert maps.shape == (2, 3, 4, 4), method
        for k in range(3):
            np.testing.assert_allclose(maps[:, k], minmax(np.abs(grad[k:k + 1]).max(-1))[[0, 0]], atol=1e-5)
        result = explainer.compute(x, targets=np.array([[2, 0], [1, 1]]))
        np.testing.assert_array_equal(result.targets, [[2, 0], [1, 1]])
        np.testing.assert_allclose(result.heatmaps[1, 0], result.heatmaps[1, 1], atol=1e-6)


def ig_model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 3)),
                            keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer="zeros"),
                            keras.layers.Conv2D(4, 3, activation="tanh", kernel_initializer="zeros"),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros")])
    return numpy_weights(net, seed=4, bias=0.05)


@pytest.mark.backends
def test_integrated_gradients_is_complete():
    net = ig_model()
    x = images((8, 8, 3), n=4, seed=2)
    def logits(v):  # the Dense pre-activation: what the explainer scores (use_logits)
        for layer in net.layers[:-1]:
            v = layer(v)
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in (net.layers[-1].kernel, net.layers[-1].bias))
        return keras.ops.convert_to_numpy(v) @ kernel + bias

    for baseline in (0.0, 0.5):
        ig = IntegratedGradients(net, steps=128, baseline=baseline)
        result = ig.compute(x, targets=[0, 1, 2, 1])
        total = ig.attributions(x, targets=[0, 1, 2, 1]).sum(axis=(1, 2, 3))
        z, z0 = logits(x), logits(np.full_like(x, baseline))
        rows = np.arange(4), [0, 1, 2, 1]
        expected = z[rows] - z0[rows]
        assert np.all(np.abs(expected) > 1e-3)
        np.testing.assert_allclose(total, expected, rtol=0.01, atol=1e-4)  # within 1 %
        np.testing.assert_allclose(result.scores, z[rows], rtol=1e-5)  # the score at x itself


@pytest.mark.backends
def test_smoothgrad_is_the_mean_gradient_at_seeded_noisy_copies():
    net = ig_model()
    x = images((8, 8, 3), n=3, seed=5)
    smooth = SmoothGrad(net, samples=3, noise=0.2, seed=7)
    got = smooth.attributions(x)
    predicted = Saliency(net).compute(x).targets
    spread = x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))
    expected = []
    for i in range(3):
        noise = np.random.default_rng([7, i]).standard_normal((3, 8, 8, 3), dtype=np.float32)
        copies = x[i] + 0.2 * spread[i] * noise
        expected.append(Saliency(net).attributions(copies, targets=[predicted[i]] * 3).mean(axis=0))
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-4, atol=1e-6)
    # Reproducible, independent of the batch size; another seed is other noise; noise=0 is Saliency.
    np.testing.assert_array_equal(smooth(x), SmoothGrad(net, samples=3, noise=0.2, seed=7)(x))
    np.testing.assert_allclose(smooth.explain(x, batch_size=1), smooth(x), atol=1e-6)
    assert np.abs(SmoothGrad(net, samples=3, noise=0.2, seed=8)(x) - smooth(x)).max() > 1e-3
    np.testing.assert_allclose(SmoothGrad(net, samples=2, noise=0.0)(x), Saliency(net)(x), atol=1e-5)


def relu_mlp(seed=0):
    """Dense-ReLU(max 1) -> Dense-Activation(relu) -> Dense(relu) -> Dense, and a numpy guided backward."""
    rng = np.random.default_rng(seed)
    sizes = [(18, 8), (8, 6), (6, 5), (5, 3)]
    wts = [(rng.normal(size=s).astype("float32"), rng.normal(size=s[1:]).astype("float32") * 0.3) for s in sizes]
    dense = [keras.layers.Dense(s[1], kernel_initializer="zeros") for s in sizes]
    dense[2] = keras.layers.Dense(5, activation="relu", kernel_initializer="zeros")
    net = keras.Sequential([keras.Input((3, 3, 2)), keras.layers.Flatten(), dense[0],
                            keras.layers.ReLU(max_value=1.0), dense[1], keras.layers.Activation("relu"),
                            dense[2], dense[3]])
    wts[0] = (wts[0][0] * 0.2, wts[0][1])  # first pre-activations mostly inside the ReLU's (0, 1)
    for layer, (k, b) in zip(dense, wts):
        layer.set_weights([k, b])

    def guided(x, c):
        h, pre = x.reshape(len(x), -1), []
        for i, (k, b) in enumerate(wts):
            h = h @ k + b
            if i < 3:
                pre.append(h)
                h = np.clip(h, 0, 1) if i == 0 else np.maximum(h, 0)
        g = wts[3][0][:, c].T  # (N, 5)
        for i in (2, 1, 0):
            open_ = (pre[i] > 0) & (g > 0) & ((pre[i] < 1) if i == 0 else True)
            g = np.where(open_, g, 0) @ wts[i][0].T
        return g.reshape(x.shape)

    return net, guided


@pytest.mark.backends
def test_guided_backprop_matches_a_numpy_guided_backward():
    net, guided = relu_mlp()
    x = images((3, 3, 2), n=4, seed=3) * 2 - 0.5
    t = np.array([0, 1, 2, 0])
    expected = guided(x, t)
    assert np.abs(expected).max() > 1e-3
    gb = GuidedBackprop(net)
    np.testing.assert_allclose(gb.attributions(x, targets=t), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gb(x, targets=t), minmax(np.abs(expected).max(-1)), atol=1e-5)
    # Without ReLUs the guided gradient is the plain gradient.
    tanh = ig_model()
    for layer in tanh.layers:
        if getattr(layer, "activation", None) is keras.activations.relu:
            layer.activation = keras.activations.tanh
    xt = images((8, 8, 3), n=2)
    np.testing.assert_allclose(GuidedBackprop(tanh).attributions(xt), Saliency(tanh).attributions(xt),
                               rtol=1e-5, atol=1e-7)


def _state(model):
    return [(layer, getattr(layer, "activation", None), "call" in layer.__dict__) for layer in model.layers]


@pytest.mark.backends
def test_the_model_is_unchanged_by_guided_methods_also_after_an_error(tmp_path):
    def boom(outputs):
        raise ValueError("no score here")

    conv = layout_model(2, layout_weights(2), pool=True, head="dense")
    for net, x, explainer in ((relu_mlp()[0], images((3, 3, 2), n=2), GuidedBackprop),
                              (conv, layout_inputs(2), GuidedGradCAM)):
        state, before = _state(net), keras.ops.convert_to_numpy(net(x))
        explainer(net)(x)
        with pytest.raises(ValueError, match="no score here"):
            explainer(net)(x, targets=boom)
        assert _state(net) == state
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(net(x)), before)
    net, guided = relu_mlp()
    x = images((3, 3, 2), n=2)
    state, before = _state(net), keras.ops.convert_to_numpy(net(x))
    # A second shape (a new compiled function) is guided too: the swap happens in every trace and eager run.
    gb = GuidedBackprop(net)
    gb(x)
    five = images((3, 3, 2), n=5)
    np.testing.assert_allclose(gb.attributions(five), guided(five, gb.compute(five).targets), rtol=1e-4, atol=1e-6)
    assert _state(net) == state
    net.save(tmp_path / "m.keras")
    restored = pickle.loads(pickle.dumps(net))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), before, rtol=1e-6)


@pytest.mark.backends
def test_guided_gradcam_is_gradcam_times_the_guided_gradient():
    wts = layout_weights(2, seed=3)
    net = layout_model(2, wts, pool=True, head="dense")
    x = layout_inputs(2)
    t = [0, 1, 2]
    cam = kc.GradCAM(net, layer="conv2")(x, targets=t)
    guided = GuidedBackprop(net).attributions(x, targets=t)
    ggc = GuidedGradCAM(net, layer="conv2")
    expected = cam[..., None] * guided
    np.testing.assert_allclose(ggc.attributions(x, targets=t), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ggc(x, targets=t), minmax(np.abs(expected).max(-1)), atol=1e-5)
    assert ggc(x, targets=t).std() > 0.05


@pytest.mark.channels_first
@pytest.mark.backends
@pytest.mark.parametrize("rank", [2, pytest.param(1, marks=pytest.mark.slow)])
def test_channels_first_equals_its_channels_last_twin(rank):
    requires_channels_first_conv()
    wts = layout_weights(rank, seed=5)
    last, first = (layout_model(rank, wts, f, pool=True, head="dense") for f in ("channels_last", "channels_first"))
    x = layout_inputs(rank)
    x_first = np.moveaxis(x, -1, 1)
    for name, cls in METHODS.items():
        kwargs = {"samples": 3} if name == "smoothgrad" else {"steps": 4} if name == "integrated-gradients" else {}
        expected = cls(last, **kwargs)(x, targets=[0, 1, 2])
        got = cls(first, **kwargs)(x_first, targets=[0, 1, 2])
        assert got.shape == x.shape[:-1] and expected.std() > 0.01, name
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)
    # The raw values come back in the input's own layout (SmoothGrad: the same noise in both layouts).
    attributions = SmoothGrad(first, samples=3).attributions(x_first, targets=[0, 1, 2])
    np.testing.assert_allclose(np.moveaxis(attributions, 1, -1),
                               SmoothGrad(last, samples=3).attributions(x, targets=[0, 1, 2]), rtol=1e-4, atol=1e-6)


@pytest.mark.backends
def test_names_predicted_class_and_bad_options():
    net, _ = linear((4, 4, 3))
    x = images((4, 4, 3), n=2)
    for name, cls in METHODS.items():
        if cls is GuidedGradCAM:  # needs a feature map for its Grad-CAM part
            with pytest.raises(ValueError, match="Could not choose a layer automatically"):
                kc.get_explainer(name, net)
            continue
        assert type(kc.get_explainer(name, net)) is cls
        result = kc.get_explainer(name, net).compute(x)
        np.testing.assert_array_equal(result.targets, keras.ops.convert_to_numpy(net(x)).argmax(-1))
    assert type(kc.get_explainer("Integrated_Gradients", net)) is IntegratedGradients
    with pytest.raises(ValueError, match="`samples` must be an integer >= 1"):
        SmoothGrad(net, samples=0)
    with pytest.raises(ValueError, match="`noise`"):
        SmoothGrad(net, noise=-0.1)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        IntegratedGradients(net, steps=0)
    with pytest.raises(ValueError, match="`baseline` contains NaN"):
        IntegratedGradients(net, baseline=np.nan)
    baseline = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"`baseline` has shape \(5, 3\), which does not broadcast to one image "
                                         r"of shape \(4, 4, 3\)"):
        IntegratedGradients(net, baseline=np.zeros((5, 3)))(x)
    IntegratedGradients(net, baseline=baseline)(x)  # (4, 3) broadcasts over the rows
    np.testing.assert_array_equal(baseline, 0)
