"""Methods whose channel weights come from the activations alone (explainers/eigen.py, fem.py, reference.py):
KPCACAM, FEM and RandomCAM against their formulas on the activations of the numpy oracle; and the six methods
added after the first family on signals, volumes and channels_first layouts.
"""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.helpers import TARGETS, requires_channels_first_conv, two_conv_oracle
from tests.models import LAYOUT_SIZE as SIZE, layout_inputs as inputs
from tests.models import fixed_weights, functional_model, images, layout_model, layout_weights

NEW_METHODS = ["gradcam-elementwise", "finercam", "eigengradcam", "kpcacam", "fem", "randomcam"]


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
    a, _, logits = two_conv_oracle(wts)
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
    a, _, _ = two_conv_oracle(wts)
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
    a, _, _ = two_conv_oracle(wts)
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
