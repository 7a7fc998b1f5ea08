"""AblationCAM, FullGrad and ShapleyCAM against numpy oracles and exact identities.

AblationCAM: on a GAP + Dense head the ablated score is known in closed form (`y_c^k = y_c - w_kc mean(A_k)`),
and behind a second convolution every ablation is recomputed by hand (im2col, `tests/oracles.py`).
FullGrad: one convolution (bias) + GAP + Dense, where the gradient at the convolution's output is `w_c / HW`,
and a strided convolution + BatchNormalization (its effective bias, upsampled). ShapleyCAM: equal to Grad-CAM
on a linear head (no curvature), and the closed form of a quadratic head (GAP -> Dense -> square).
"""
import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.explainers.ablation import AblationCAM
from tests import oracles
from tests.helpers import requires_channels_first_conv
from tests.models import (assert_unchanged, fixed_weights, functional_model, images, layout_inputs, layout_model,
                          layout_weights, model_snapshot, subclassed_model)

TARGETS = np.array([0, 1, 2, 1])


def gap_dense(seed=0, size=10, channels=5, classes=3, activation=None, head_activation=None,
              conv_activation="relu"):
    """Input -> Conv2D "conv" (3x3, same, bias) -> GAP -> Dense "head" [-> Activation]: numpy weights."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", activation=conv_activation, name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(classes, activation=activation, name="head")(x)
    if head_activation is not None:
        x = keras.layers.Activation(head_activation, name="curve")(x)
    model = keras.Model(inp, x)
    wts = dict(k=rng.normal(size=(3, 3, 3, channels)).astype("float32") * 0.5,
               b=rng.normal(size=(channels,)).astype("float32") * 0.3,
               w=rng.normal(size=(channels, classes)).astype("float32"),
               c=rng.normal(size=(classes,)).astype("float32") * 0.5)
    model.get_layer("conv").set_weights([wts["k"], wts["b"]])
    model.get_layer("head").set_weights([wts["w"], wts["c"]])
    return model, wts


def conv_gap_dense_numpy(x, wts):
    """(pre-activation z, A = relu(z), logits) of `gap_dense` in float64."""
    z = oracles.conv_forward(x.astype(np.float64), wts["k"], wts["b"])
    a = np.maximum(z, 0)
    return z, a, a.mean(axis=(1, 2)) @ wts["w"] + wts["c"]


# ------------------------------------------------------------------------------------------------ AblationCAM


@pytest.mark.backends
def test_ablationcam_closed_form_on_a_gap_dense_head():
    model, wts = gap_dense()
    x = images()
    _, a, logits = conv_gap_dense_numpy(x, wts)
    y = logits[np.arange(4), TARGETS]
    weights = wts["w"][:, TARGETS].T * a.mean(axis=(1, 2)) / np.abs(y)[:, None]  # (N, C)
    expected = oracles.finish(np.einsum("nhwc,nc->nhw", a, weights))
    before, snapshot = x.copy(), model_snapshot(model)
    result = kc.get_explainer("ablationcam", model, layer="conv", batch_size=3).compute(x, TARGETS)
    np.testing.assert_allclose(result.heatmaps, expected, atol=2e-5)
    np.testing.assert_allclose(result.scores, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, before)
    assert_unchanged(model, snapshot)
    # Several targets per image: the same ablated passes, one weight vector per target.
    both = AblationCAM(model, layer="conv")(x, targets=np.stack([TARGETS, [2, 2, 0, 0]], axis=1))
    np.testing.assert_allclose(both[:, 0], expected, atol=2e-5)
    np.testing.assert_allclose(both[:, 1], AblationCAM(model, layer="conv")(x, [2, 2, 0, 0]), atol=1e-6)


def ablated_by_hand(wts, x, targets, channels=None):
    """Relative score drops (N, C1) of `functional_model(wts)`, conv1's channel k zeroed, one at a time."""
    a = np.maximum(oracles.conv_forward(x.astype(np.float64), wts["k1"], wts["b1"]), 0)

    def score(act):
        f = np.maximum(oracles.conv_forward(act, wts["k2"], wts["b2"]), 0)
        return (f.mean(axis=(1, 2)) @ wts["w"] + wts["b"])[np.arange(len(act)), targets]

    y = score(a)
    drops = np.zeros((len(x), a.shape[-1]))
    for k in range(a.shape[-1]):
        ablated = a.copy()
        ablated[..., k] = 0
        drops[:, k] = (y - score(ablated)) / np.abs(y)
    if channels is not None:  # only the `channels` of largest mean |A| per image are ablated
        keep = np.argsort(-np.abs(a).mean(axis=(1, 2)), axis=1, kind="stable")[:, :channels]
        drops = drops * (np.arange(a.shape[-1])[None] == keep[..., None]).any(axis=1)
    return a, drops


@pytest.mark.backends
@pytest.mark.parametrize("max_channels", [None, 2])
def test_ablationcam_matches_a_numpy_ablation_loop_behind_a_second_conv(max_channels):
    wts = fixed_weights()
    net = functional_model(wts, activation=None)
    x = images()
    a, drops = ablated_by_hand(wts, x, TARGETS, max_channels)
    expected = oracles.finish(np.einsum("nhwc,nc->nhw", a, drops))
    explainer = AblationCAM(net, layer="conv1", max_channels=max_channels)
    np.testing.assert_allclose(explainer(x, TARGETS), expected, atol=2e-5)
    # Chunking and padding do not change the weights; targets=None explains the predicted class.
    np.testing.assert_allclose(explainer.explain(x, TARGETS, batch_size=5), expected, atol=2e-5)
    predicted = net.predict(x, verbose=0).argmax(-1)
    np.testing.assert_allclose(explainer(x), explainer(x, predicted), atol=1e-6)


def test_ablationcam_refuses_bad_options():
    model, _ = gap_dense()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_channels"):
            AblationCAM(model, max_channels=bad)
    with pytest.raises(ValueError, match="batch_size"):
        AblationCAM(model, batch_size=0)


# --------------------------------------------------------------------------------------------------- FullGrad


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


# ------------------------------------------------------------------------------------------------- ShapleyCAM


@pytest.mark.backends
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_shapleycam_is_gradcam_on_a_piecewise_linear_head(layer):
    net = functional_model(fixed_weights(), activation=None)  # after either layer: ReLU, GAP, Dense (H = 0)
    x, several = images(), np.stack([TARGETS, [2, 2, 0, 0]], axis=1)
    before, snapshot = x.copy(), model_snapshot(net)
    shapley = kc.get_explainer("shapleycam", net, layer=layer)
    gradcam = kc.GradCAM(net, layer=layer)
    np.testing.assert_allclose(shapley.explain(x, TARGETS, normalize=False),
                               gradcam.explain(x, TARGETS, normalize=False), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(shapley(x, several), gradcam(x, several), atol=1e-6)
    np.testing.assert_array_equal(x, before)
    assert_unchanged(net, snapshot)


@pytest.mark.backends
def test_shapleycam_closed_form_of_a_quadratic_head():
    # y_c = z_c^2 with z = mean(A) W + c: g = 2 z_c w_c / HW and H A = 2 w_c (z_c - c_c) / HW, so the weights
    # mean(g - H A / 2) are w_kc (z_c + c_c) / HW (Grad-CAM's: 2 w_kc z_c / HW).
    model, wts = gap_dense(head_activation=keras.ops.square)
    x = images()
    _, a, z = conv_gap_dense_numpy(x, wts)
    several = np.stack([TARGETS, [2, 2, 0, 0]], axis=1)
    explainer = kc.get_explainer("shapleycam", model, layer="conv")
    raw = explainer.explain(x, several, normalize=False)  # the map's values, not only its shape
    for j in range(2):
        t = several[:, j]
        weights = wts["w"][:, t].T * (z[np.arange(4), t] + wts["c"][t])[:, None] / 100.0
        np.testing.assert_allclose(raw[:, j], np.maximum(np.einsum("nhwc,nc->nhw", a, weights), 0),
                                   rtol=1e-4, atol=1e-6)
    one = explainer.explain(x, TARGETS, normalize=False)
    np.testing.assert_allclose(one, raw[:, 0], rtol=1e-5, atol=1e-7)
    gradcam = kc.GradCAM(model, layer="conv").explain(x, TARGETS, normalize=False)
    assert np.abs(gradcam - raw[:, 0]).max() > 1e-2 * np.abs(gradcam).max()  # the correction is not zero


# ---------------------------------------------------------------------------------------------- all three


@pytest.mark.channels_first
@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 2])
def test_channels_first_twins_give_the_same_maps(rank):
    requires_channels_first_conv()
    wts = layout_weights(rank, seed=3)
    last = layout_model(rank, wts, "channels_last", pool=True, head="gap")
    first = layout_model(rank, wts, "channels_first", pool=True, head="gap")
    x = layout_inputs(rank)
    t = np.array([0, 2, 1])
    for method in ("ablationcam", "fullgrad", "shapleycam"):
        a = kc.get_explainer(method, last, layer="conv1")(x, t)
        b = kc.get_explainer(method, first, layer="conv1")(np.moveaxis(x, -1, 1), t)
        assert a.shape == (3,) + x.shape[1:-1], method
        np.testing.assert_allclose(a, b, atol=2e-5, err_msg=method)


@pytest.mark.backends
def test_the_model_is_unchanged_after_an_error_and_callable_targets_work():
    model, wts = gap_dense(conv_activation="relu")
    x = images()
    snapshot = model_snapshot(model)

    def bad(outputs):
        return outputs  # (N, K): not one score per image

    for method in ("ablationcam", "fullgrad", "shapleycam"):
        explainer = kc.get_explainer(method, model, layer="conv")
        with pytest.raises(ValueError, match="one score per image"):
            explainer(x, bad)
        assert_unchanged(model, snapshot)
        # A callable that reads class 1 explains what targets=1 explains.
        np.testing.assert_allclose(explainer(x, lambda outputs: outputs[:, 1]), explainer(x, 1), atol=1e-6,
                                   err_msg=method)
        assert_unchanged(model, snapshot)


@pytest.mark.backends
def test_a_subclassed_model_gives_the_functional_maps():

    wts = fixed_weights()
    x = images()
    models = [functional_model(wts), subclassed_model(wts)]
    for method in ("ablationcam", "fullgrad", "shapleycam"):
        maps = [kc.get_explainer(method, m, layer="conv1")(x, TARGETS) for m in models]
        for other in maps[1:]:
            np.testing.assert_allclose(other, maps[0], atol=1e-5, err_msg=method)
    assert {"ablationcam", "fullgrad", "shapleycam"} <= set(kc.available_methods())
