"""Several targets per image and several layers, each in one pass: equal to the one-at-a-time results."""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests.models import fixed_weights, functional_model, images

METHODS = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam"]


@pytest.mark.backends
@pytest.mark.parametrize("method", METHODS)
def test_k_targets_in_one_pass_equal_one_target_at_a_time(method):
    model = functional_model(fixed_weights(seed=4, k=4))
    x = images(n=3)
    targets = np.array([[0, 2, 3], [1, 1, 0], [3, 0, 2]])
    explainer = kc.get_explainer(method, model, layer="conv1")
    result = explainer.compute(x, targets=targets)
    assert result.heatmaps.shape == (3, 3, 10, 10) and result.targets.shape == (3, 3)
    np.testing.assert_array_equal(result.targets, targets)
    for k in range(3):
        one = explainer.compute(x, targets=targets[:, k])
        np.testing.assert_allclose(result.heatmaps[:, k], one.heatmaps, atol=2e-5, err_msg=f"{method} k={k}")
        np.testing.assert_allclose(result.scores[:, k], one.scores, rtol=1e-5, atol=1e-6)
    every = explainer.explain(x, targets="all")
    assert every.shape == (3, 4, 10, 10)
    np.testing.assert_allclose(every[:, 3], explainer.explain(x, targets=3), atol=2e-5)


@pytest.mark.backends
def test_k_targets_on_camhead_and_a_binary_unit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, name="conv"), kc.CAMHead(3)])
    x = images(n=2)
    cam = kc.CAM(model)
    np.testing.assert_allclose(cam.explain(x, targets="all")[:, 1], cam.explain(x, targets=1), atol=1e-6)
    binary = functional_model(fixed_weights(seed=9, k=1), activation="sigmoid")
    both = kc.GradCAM(binary, layer="conv1").compute(x, targets="all")  # class 0 (the negation) and class 1
    np.testing.assert_allclose(both.scores[:, 0], -both.scores[:, 1], rtol=1e-6)


@pytest.mark.backends
@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam"])
def test_several_layers_average_their_normalized_maps(method):
    model = functional_model(fixed_weights(seed=2))
    x = images(n=3)
    single = [kc.get_explainer(method, model, layer=name)(x, targets=[0, 1, 2]) for name in ("conv1", "conv2")]
    mean = np.mean(single, axis=0)
    span = mean.max(axis=(1, 2), keepdims=True) - mean.min(axis=(1, 2), keepdims=True)
    expected = (mean - mean.min(axis=(1, 2), keepdims=True)) / span
    both = kc.get_explainer(method, model, layer=["conv1", "conv2"])
    np.testing.assert_allclose(both(x, targets=[0, 1, 2]), expected, atol=1e-5)
    assert [r.path for r in both.layer_refs] == ["conv1", "conv2"]
    k = both.explain(x, targets=[[0, 1], [1, 2], [2, 0]])  # several layers and several targets at once
    np.testing.assert_allclose(k[:, 0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="empty list"):
        kc.GradCAM(model, layer=[])
