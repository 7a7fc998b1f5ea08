"""Methods that weigh channels by more forward passes (explainers/perturbation.py, ablation.py, score.py).

AblationCAM: on a GAP + Dense head the ablated score is known in closed form (`y_c^k = y_c - w_kc mean(A_k)`),
and behind a second convolution every ablation is recomputed by hand (im2col, `tests/oracles.py`).
Score-CAM's numpy reference is in tests/test_explainers.py.
"""
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.explainers.ablation import AblationCAM
from tests import oracles
from tests.helpers import TARGETS, conv_gap_dense_numpy, gap_dense
from tests.models import assert_unchanged, fixed_weights, functional_model, images, model_snapshot


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
