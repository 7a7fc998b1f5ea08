"""Hardening: each case of an adversarial trial that once gave a silent wrong answer, lost a file, grew
without bound or misled, on every backend where it applies."""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.test_explainers import fixed_weights, functional_model, images


class _LinearUnit(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.gap(self.conv(x)))


# ------------------------------------------------------------------------------ regression outputs


@pytest.mark.backends
def test_a_single_unit_without_sigmoid_is_a_regression_output():
    wts = fixed_weights(seed=1, k=1)
    model = functional_model(wts, activation=None)
    x = images(n=4)
    a, g, z = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                                np.zeros(4, int))
    assert (z[:, 0] < 0).any() and (z[:, 0] > 0).any()  # both signs: a negative output is explained as it is
    explainer = kc.GradCAM(model, layer="conv1")
    assert explainer.output_kind == "regression"
    for targets in (None, 0, [0, 0, 0, 0]):
        result = explainer.compute(x, targets=targets)
        np.testing.assert_allclose(result.scores, z[:, 0], rtol=1e-4, atol=1e-5)  # the model's own output
        np.testing.assert_array_equal(result.targets, 0)
        np.testing.assert_allclose(result.heatmaps, oracles.finish(oracles.gradcam(a, g)), atol=2e-4)
    with pytest.raises(ValueError, match="one regression unit, whose only index is 0.*binary=True"):
        explainer(x, targets=1)
    # Asked for: a logit output read as a binary classifier (class 0 = the negated unit, predicted z > 0).
    binary = kc.GradCAM(model, layer="conv1", binary=True)
    assert binary.output_kind == "binary"
    result = binary.compute(x)
    np.testing.assert_array_equal(result.targets, (z[:, 0] > 0).astype(int))
    np.testing.assert_allclose(result.scores, np.abs(z[:, 0]), rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_regression_on_subclassed_and_camhead_models():
    x = images(n=3)
    keras.utils.set_random_seed(0)
    sub = _LinearUnit(name="linear_unit")
    sub(x)
    out = keras.ops.convert_to_numpy(sub(x))[:, 0]
    result = kc.GradCAM(sub).compute(x)
    np.testing.assert_allclose(result.scores, out, rtol=1e-4, atol=1e-6)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              kc.CAMHead(1, activation=None)])
    cam = kc.CAM(model).compute(x)
    # CAM of the unit itself: ReLU(f @ w), no negation, for every image whatever the sign of its output.
    feats = keras.ops.convert_to_numpy(model.get_layer("conv")(x))
    w = keras.ops.convert_to_numpy(model.layers[-1].kernel)[:, 0]
    np.testing.assert_allclose(cam.heatmaps, oracles.finish(feats @ w, size=(10, 10)), atol=2e-4)
    np.testing.assert_allclose(cam.heatmaps, kc.GradCAM(model, layer="conv")(x), atol=2e-4)


# ------------------------------------------------------------------------ command line (cases below)
