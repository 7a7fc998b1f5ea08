"""Gradient-weighted methods (explainers/gradient.py, shapley.py) added after Grad-CAM's first family:
GradCAMElementWise, EigenGradCAM and FinerCAM against the im2col forward and backward pass of
`tests/oracles.py`; ShapleyCAM equal to Grad-CAM on a linear head (no curvature), and the closed form of a
quadratic head (GAP -> Dense -> square).
"""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.helpers import TARGETS, conv_gap_dense_numpy, gap_dense, two_conv_oracle
from tests.models import layout_inputs as inputs
from tests.models import (assert_unchanged, fixed_weights, functional_model, images, layout_model,
                          layout_weights, model_snapshot)


@pytest.mark.backends
def test_gradcam_elementwise_and_eigengradcam_match_numpy_reference():
    wts = fixed_weights()
    net = functional_model(wts)
    a, g, logits = two_conv_oracle(wts)
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
    _, _, logits = two_conv_oracle(wts)
    dlogits, scores = np.zeros_like(logits), np.zeros(len(logits))
    for n, (z, t) in enumerate(zip(logits, targets)):
        scores[n], similar = finer_score(z, t, alpha, comparisons)
        for k in range(len(z)):  # central differences, the compared classes held fixed (an argsort)
            step = np.eye(len(z))[k] * 1e-6
            up = finer_score(z + step, t, alpha, comparisons)
            down = finer_score(z - step, t, alpha, comparisons)
            assert (up[1] == similar).all() and (down[1] == similar).all()
            dlogits[n, k] = (up[0] - down[0]) / 2e-6
    a, g, _ = two_conv_oracle(wts, dlogits=dlogits)
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
    predicted = np.argmax(two_conv_oracle(wts)[2], axis=-1)
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
