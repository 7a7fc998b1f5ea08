"""The methods added after the first family: numpy oracles on fixed-weights models, identities, every layout.

GradCAMElementWise, EigenGradCAM and FinerCAM are checked against the im2col forward and backward pass of
`tests/oracles.py`; KPCACAM, FEM and RandomCAM against their formulas on the oracle's activations.
"""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.helpers import requires_channels_first_conv
from tests.models import LAYOUT_SIZE as SIZE, layout_inputs as inputs
from tests.models import fixed_weights, functional_model, images, layout_model, layout_weights

NEW_METHODS = ["gradcam-elementwise", "finercam", "eigengradcam", "kpcacam", "fem", "randomcam"]
TARGETS = np.array([0, 1, 2, 1])


def oracle(wts, targets=TARGETS, dlogits=None):
    """conv1 activations A (float64), d(score)/dA, and the logits of `functional_model(wts)` on `images()`.

    The score is the target's logit, or `sum_k dlogits[n, k] * logit_k` when `dlogits` (N, K) is given.
    """
    x = images().astype(np.float64)
    a = np.maximum(oracles.conv_forward(x, wts["k1"], wts["b1"]), 0)
    y2 = oracles.conv_forward(a, wts["k2"], wts["b2"])
    f = np.maximum(y2, 0)
    logits = f.mean(axis=(1, 2)) @ wts["w"] + wts["b"]
    if dlogits is None:
        dlogits = np.eye(wts["w"].shape[1])[targets]
    dpooled = dlogits @ wts["w"].T  # (N, C2)
    df = np.broadcast_to(dpooled[:, None, None, :] / (f.shape[1] * f.shape[2]), f.shape)
    grads = oracles.conv_backward_input(df * (y2 > 0), a.shape, wts["k2"])
    return a, grads, logits


# ------------------------------------------------------------------------------------------ gradient methods


@pytest.mark.backends
def test_gradcam_elementwise_and_eigengradcam_match_numpy_reference():
    wts = fixed_weights()
    net = functional_model(wts)
    a, g, logits = oracle(wts)
    elementwise = kc.get_explainer("gradcam-elementwise", net, layer="conv1").compute(images(), TARGETS)
    np.testing.assert_allclose(elementwise.heatmaps, oracles.finish(np.maximum(a * g, 0).sum(-1)), atol=2e-4)
    np.testing.assert_allclose(elementwise.scores, logits[np.arange(4), TARGETS], rtol=1e-4, atol=1e-5)
    hires = kc.HiResCAM(net, layer="conv1")(images(), TARGETS)
    assert np.abs(elementwise.heatmaps - hires).max() > 0.05  # negative products cancel in HiResCAM only
    eigen = kc.get_explainer("eigengradcam", net, layer="conv1")(images(), TARGETS)
    np.testing.assert_allclose(eigen, oracles.finish(oracles.eigencam(a * g)), atol=5e-4)
    # Class-discriminative, unlike EigenCAM: another target, another map.
    assert np.abs(kc.EigenGradCAM(net, layer="conv1")(images(), [2, 0, 1, 0]) - eigen).max() > 0.05


@pytest.mark.backends
def test_gradcam_elementwise_equals_hirescam_where_every_product_is_positive():
    wts = layout_weights(2, seed=2)
    wts["w"] = np.abs(wts["w"])  # conv2's gradients are w[:, t] / positions > 0, its activations >= 0
    net = layout_model(2, wts, head="dense")
    x = inputs(2, n=3)
    got = kc.GradCAMElementWise(net, layer="conv2")(x, targets=[0, 1, 2])
    assert got.std() > 0.05
    np.testing.assert_allclose(got, kc.HiResCAM(net, layer="conv2")(x, targets=[0, 1, 2]), atol=1e-6)


def finer_score(z, t, alpha, comparisons):
    """Finer-CAM's score of class t for one row of logits z, and the compared classes (pytorch-grad-cam's
    FinerWeightedTarget on its argsort of |z - z_t|, with the target itself first)."""
    distance = np.abs(z - z[t])
    distance[t] = -1.0
    similar = np.argsort(distance, kind="stable")[1:1 + comparisons]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    return (p[similar] * (z[t] - alpha * z[similar])).sum() / (p[similar].sum() + 1e-9), similar


def finer_oracle(wts, targets, alpha, comparisons):
    _, _, logits = oracle(wts)
    dlogits, scores = np.zeros_like(logits), np.zeros(len(logits))
    for n, (z, t) in enumerate(zip(logits, targets)):
        scores[n], similar = finer_score(z, t, alpha, comparisons)
        for k in range(len(z)):  # central differences, the compared classes held fixed (an argsort)
            step = np.eye(len(z))[k] * 1e-6
            up = finer_score(z + step, t, alpha, comparisons)
            down = finer_score(z - step, t, alpha, comparisons)
            assert (up[1] == similar).all() and (down[1] == similar).all()
            dlogits[n, k] = (up[0] - down[0]) / 2e-6
    a, g, _ = oracle(wts, dlogits=dlogits)
    return oracles.finish(np.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2)))), scores


@pytest.mark.backends
def test_finercam_matches_numpy_reference():
    wts = fixed_weights(seed=4, k=6)
    net = functional_model(wts)
    targets = np.array([0, 3, 5, 1])
    expected, scores = finer_oracle(wts, targets, alpha=1.0, comparisons=3)
    result = kc.FinerCAM(net, layer="conv1").compute(images(), targets)
    np.testing.assert_allclose(result.heatmaps, expected, atol=2e-4)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-4, atol=1e-5)
    assert np.abs(result.heatmaps - kc.GradCAM(net, layer="conv1")(images(), targets)).max() > 0.05
    # Options; None explains the predicted class; several targets per image are the single-target maps.
    expected, scores = finer_oracle(wts, targets, alpha=0.5, comparisons=2)
    np.testing.assert_allclose(kc.FinerCAM(net, layer="conv1", alpha=0.5, comparisons=2)(images(), targets),
                               expected, atol=2e-4)
    predicted = np.argmax(oracle(wts)[2], axis=-1)
    np.testing.assert_allclose(kc.FinerCAM(net, layer="conv1")(images()),
                               finer_oracle(wts, predicted, 1.0, 3)[0], atol=2e-4)
    pairs = kc.FinerCAM(net, layer="conv1").compute(images(), np.stack([targets, predicted], axis=1))
    np.testing.assert_allclose(pairs.heatmaps[:, 0], result.heatmaps, atol=1e-5)
    np.testing.assert_allclose(pairs.scores[:, 0], result.scores, rtol=1e-5, atol=1e-6)
    # alpha = 0 is Grad-CAM (up to the 1e-9 of the denominator).
    np.testing.assert_allclose(kc.FinerCAM(net, layer="conv1", alpha=0)(images(), targets),
                               kc.GradCAM(net, layer="conv1")(images(), targets), atol=1e-5)


@pytest.mark.backends
def test_finercam_refuses_what_it_cannot_compare():
    wts = fixed_weights(k=1)
    net = functional_model(wts, activation="sigmoid")
    with pytest.raises(ValueError, match="single unit"):
        kc.FinerCAM(net, layer="conv1")(images())
    with pytest.raises(ValueError, match="not a callable"):
        kc.FinerCAM(functional_model(fixed_weights()), layer="conv1")(images(), lambda out: out[:, 0])
    with pytest.raises(ValueError, match="`comparisons` must be an integer >= 1"):
        kc.FinerCAM(net, comparisons=0)


# -------------------------------------------------------------------------------------- activation methods


def kernel_pca(a, kernel, gamma=None, coef0=1.0):
    """First kernel-PCA projection of each image's centred location vectors, float64, EigenCAM's sign."""
    n, c = a.shape[0], a.shape[-1]
    gamma = 1.0 / c if gamma is None else gamma
    out = []
    for x in a.reshape(n, -1, c).astype(np.float64):
        x = x - x.mean(axis=0)
        if kernel == "sigmoid":
            k = np.tanh(gamma * x @ x.T + coef0)
        else:
            k = np.exp(-gamma * ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        ones = np.full_like(k, 1.0 / len(k))
        k = k - ones @ k - k @ ones + ones @ k @ ones
        values, vectors = np.linalg.eigh(k)
        p = k @ vectors[:, -1] / np.sqrt(values[-1])  # kernel PCA's transform of the fitted points
        out.append((-p if (p * x.sum(-1)).sum() < 0 else p).reshape(a.shape[1:-1]))
    return np.stack(out)


@pytest.mark.backends
def test_kpcacam_matches_numpy_kernel_pca():
    wts = fixed_weights(seed=1)
    net = functional_model(wts)
    a, _, logits = oracle(wts)
    for kwargs in ({}, {"kernel": "rbf"}, {"kernel": "rbf", "gamma": 2.0}, {"gamma": 0.5, "coef0": 0.0}):
        explainer = kc.KPCACAM(net, layer="conv1", **kwargs)
        kernel, gamma, coef0 = kwargs.get("kernel", "sigmoid"), kwargs.get("gamma"), kwargs.get("coef0", 1.0)
        expected = kernel_pca(a, kernel, gamma, coef0)
        result = explainer.compute(images(), TARGETS)
        np.testing.assert_allclose(result.heatmaps, oracles.finish(expected), atol=5e-4, err_msg=str(kwargs))
        raw = explainer.explain(images(), TARGETS, normalize=False)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(raw, np.maximum(expected, 0), atol=1e-3 * scale, err_msg=str(kwargs))
    np.testing.assert_allclose(result.scores, logits[np.arange(4), TARGETS], rtol=1e-4, atol=1e-5)
    # The linear kernel is EigenCAM.
    np.testing.assert_allclose(kc.KPCACAM(net, layer="conv1", kernel="linear")(images()),
                               kc.EigenCAM(net, layer="conv1")(images()), atol=5e-4)
    with pytest.raises(ValueError, match="`kernel` must be one of 'sigmoid', 'rbf', 'linear'"):
        kc.KPCACAM(net, kernel="poly")


def fem(a, k=2.0):
    axes = tuple(range(1, a.ndim - 1))
    threshold = a.mean(axis=axes, keepdims=True) + k * a.std(axis=axes, keepdims=True)
    weights = (a > threshold).mean(axis=axes)
    return np.einsum("n...c,nc->n...", a, weights)


@pytest.mark.backends
def test_fem_matches_numpy_reference():
    wts = fixed_weights(seed=2)
    net = functional_model(wts)
    a, _, _ = oracle(wts)
    for k in (2.0, 0.5):
        got = kc.FEM(net, layer="conv1", k=k).explain(images(), normalize=False)
        assert got.std() > 0
        np.testing.assert_allclose(got, np.maximum(fem(a, k), 0), rtol=1e-4, atol=1e-5)
    # A dead channel (never above its mean) weighs nothing; weights are shares of locations.
    a0 = np.zeros((1, 4, 4, 2))
    a0[0, 1, 2, 0] = 3.0
    np.testing.assert_allclose(fem(a0), a0[..., 0] / 16)


@pytest.mark.backends
def test_randomcam_is_seeded_and_matches_its_weights():
    wts = fixed_weights(seed=3)
    net = functional_model(wts)
    a, _, _ = oracle(wts)
    maps = {}
    for seed in (0, 1):
        explainer = kc.get_explainer("randomcam", net, layer="conv1", seed=seed)
        weights = np.random.default_rng(seed).uniform(-1, 1, a.shape[-1])
        np.testing.assert_allclose(explainer.channel_weights(a.shape[-1]), weights, rtol=1e-6)
        maps[seed] = explainer(images(), TARGETS)
        assert maps[seed].std() > 0.05
        np.testing.assert_allclose(maps[seed], oracles.finish(a @ weights), atol=2e-4)
        # Deterministic: a fresh explainer, another batch size and a subset give the same maps.
        again = kc.RandomCAM(net, layer="conv1", seed=seed)
        np.testing.assert_array_equal(again(images(), TARGETS), maps[seed])
        np.testing.assert_allclose(again.explain(images()[1:3], batch_size=1), maps[seed][1:3], atol=1e-6)
    assert np.abs(maps[0] - maps[1]).max() > 0.1
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0"):
        kc.RandomCAM(net, seed=-1)


# ------------------------------------------------------------------------------------------------ layouts


@pytest.mark.channels_first
@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_new_methods_on_signals_volumes_and_channels_first(rank):
    requires_channels_first_conv()
    wts = layout_weights(rank, seed=5)
    last, first = layout_model(rank, wts, pool=True), layout_model(rank, wts, "channels_first", pool=True)
    x = inputs(rank)
    x_first = np.moveaxis(x, -1, 1)
    feats = x
    for layer in last.layers[:3]:  # conv1, pool, conv2
        feats = layer(feats)
    feats = keras.ops.convert_to_numpy(feats).astype(np.float64)
    size = (SIZE[rank],) * rank
    for method in NEW_METHODS:
        options = {"layer": "conv2", **({"seed": 1} if method == "randomcam" else {})}
        expected = kc.get_explainer(method, last, **options)(x, targets=[0, 1, 2])
        got = kc.get_explainer(method, first, **options)(x_first, targets=[0, 1, 2])
        assert got.shape == x.shape[:-1], method
        assert expected.std() > 0.01, method
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=method)
        if method == "fem":
            np.testing.assert_allclose(expected, oracles.finish(fem(feats), size), atol=2e-4)
        if method == "randomcam":
            weights = np.random.default_rng(1).uniform(-1, 1, feats.shape[-1])
            np.testing.assert_allclose(expected, oracles.finish(feats @ weights, size), atol=2e-4)
        if method == "kpcacam":
            reference = oracles.finish(kernel_pca(feats, "sigmoid"), size)
            np.testing.assert_allclose(expected, reference, atol=5e-4)
