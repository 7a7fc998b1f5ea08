"""FullGrad (explainers/fullgrad.py) against numpy: one convolution (bias) + GAP + Dense, where the gradient
at the convolution's output is `w_c / HW`, and a strided convolution + BatchNormalization (its effective
bias, upsampled)."""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.helpers import TARGETS, conv_gap_dense_numpy, gap_dense
from tests.models import assert_unchanged, images, model_snapshot


def psi(term):
    """|term| (N, *spatial, C) min-max normalized per image over positions and channels, summed over them."""
    return oracles.minmax(np.abs(term)).sum(-1)


@pytest.mark.backends
def test_fullgrad_matches_numpy_on_conv_gap_dense():
    model, wts = gap_dense()
    x = images()
    z, _, _ = conv_gap_dense_numpy(x, wts)
    grad_a = np.broadcast_to(wts["w"][:, TARGETS].T[:, None, None, :] / 100.0, z.shape)  # w_c / HW everywhere
    grad_z = grad_a * (z > 0)  # the bias is added before the fused ReLU
    grad_x = oracles.conv_backward_input(grad_z, x.shape, wts["k"])
    expected = oracles.minmax(psi(grad_x * x) + psi(grad_z * wts["b"]))
    before, snapshot = x.copy(), model_snapshot(model)
    explainer = kc.get_explainer("fullgrad", model, layer="conv")  # `layer` is ignored
    result = explainer.compute(x, TARGETS)
    np.testing.assert_allclose(result.heatmaps, expected, atol=1e-5)
    logits = conv_gap_dense_numpy(x, wts)[2]
    np.testing.assert_allclose(result.scores, logits[np.arange(4), TARGETS], rtol=1e-5)
    np.testing.assert_array_equal(x, before)
    assert_unchanged(model, snapshot)
    # Several targets per image give each target's own map.
    both = explainer(x, targets=np.stack([TARGETS, [2, 2, 0, 0]], axis=1))
    np.testing.assert_allclose(both[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(both[:, 1], explainer(x, [2, 2, 0, 0]), atol=1e-6)


@pytest.mark.backends
def test_fullgrad_batchnorm_effective_bias_upsampled():
    rng = np.random.default_rng(4)
    inp = keras.Input((9, 9, 3))
    h = keras.layers.Conv2D(4, 3, strides=2, use_bias=False, name="conv")(inp)  # 4 x 4, no bias: no term
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    k = rng.normal(size=(3, 3, 3, 4)).astype("float32") * 0.5
    gamma, beta = rng.uniform(0.5, 2, 4).astype("float32"), rng.normal(size=4).astype("float32")
    mean, var = rng.normal(size=4).astype("float32") * 0.3, rng.uniform(0.5, 2, 4).astype("float32")
    w, c = rng.normal(size=(4, 3)).astype("float32"), np.zeros(3, "float32")
    model.get_layer("conv").set_weights([k])
    model.get_layer("bn").set_weights([gamma, beta, mean, var])
    model.get_layer("head").set_weights([w, c])
    x = np.random.default_rng(5).random((3, 9, 9, 3)).astype("float32")
    t = np.array([0, 2, 1])
    # Numpy: a valid stride-2 convolution is the 'same' stride-1 one at odd positions.
    z = oracles.conv_forward(x.astype(np.float64), k, np.zeros(4))[:, 1::2, 1::2]
    scale = gamma / np.sqrt(var + 1e-3)
    y = (z - mean) * scale + beta
    grad_y = np.broadcast_to(w[:, t].T[:, None, None, :] / 16.0, y.shape) * (y > 0)
    dense = np.zeros((3, 9, 9, 4))
    dense[:, 1::2, 1::2] = grad_y * scale
    grad_x = oracles.conv_backward_input(dense, x.shape, k)
    bias = beta - mean * scale
    expected = oracles.minmax(psi(grad_x * x) + oracles.upsample(psi(grad_y * bias), (9, 9)))
    np.testing.assert_allclose(kc.get_explainer("fullgrad", model)(x, t), expected, atol=1e-5)
