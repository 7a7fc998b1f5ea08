"""Spearman correlation and the cascading randomization sanity check (Adebayo et al. 2018)."""
import random

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.metrics.sanity import randomized_copy, spearman
from tests.models import conv, numpy_weights, random_images


def test_spearman_against_hand_worked_ranks():
    # x ranks (1, 2.5, 2.5, 4) with a tie, y ranks (1, 3, 2, 4): rho = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
    got = spearman([[1, 2, 2, 3], [1, 2, 3, 4], [5, 5, 5, 5], [5, 5, 5, 5]],
                   [[1, 3, 2, 4], [8, 6, 4, 2], [5, 5, 5, 5], [1, 2, 3, 4]])
    np.testing.assert_allclose(got, [3 / np.sqrt(10), -1.0, 1.0, 0.0])
    # Monotone transforms do not change ranks; 2-D maps are flattened.
    maps = np.random.default_rng(0).random((3, 4, 5))
    np.testing.assert_allclose(spearman(maps, np.exp(3 * maps)), 1.0)
    with pytest.raises(ValueError, match="same shape"):
        spearman(maps, maps[:, :2])


class PixelMap(kc.BaseCAM):
    """A map of the image alone (its brightness at the untouched `pixels` layer): ignores every weight."""

    needs_grads = False

    def compute_cam(self, activations, grads, targets):
        return keras.ops.sum(activations, axis=-1)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Activation("linear", name="pixels"),
        conv(6, "conv1"),
        keras.layers.MaxPooling2D(name="pool1"),
        conv(8, "conv2"),
        kc.CAMHead(3, name="cam_head"),
    ])
    numpy_weights(model, seed=0, bias=0.05)
    model.get_layer("cam_head").dense.set_weights([
        np.random.default_rng(1).normal(0, 1, (8, 3)).astype(np.float32), np.zeros(3, np.float32)])
    return model


@pytest.mark.backends
def test_gradcam_depends_on_the_weights_an_image_map_does_not_and_the_model_is_untouched():
    model = _model()
    images = random_images(4, seed=1)
    weights = [w.copy() for w in model.get_weights()]
    state = random.getstate()
    grad = kc.metrics.sanity_check("gradcam", model, images, targets=[0, 1, 2, 0])
    assert grad.layers == ["cam_head", "conv2", "conv1"]  # top down, layers with weights only
    assert grad.per_image.shape == (3, 4)
    np.testing.assert_allclose(grad.correlations, grad.per_image.mean(axis=1))
    assert grad.correlations[-1] < 0.6, grad.correlations
    pixels = kc.metrics.sanity_check(PixelMap, model, images, layer="pixels")
    np.testing.assert_allclose(pixels.correlations, 1.0, atol=1e-6)
    assert pixels.method == "PixelMap"
    # The user's model and Python's random state are as they were.
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert random.getstate() == state
    lines = grad.to_markdown().splitlines()
    assert lines[0].startswith("| gradcam: randomized down to") and lines[2].startswith("| cam_head | 1 |")


def test_layer_choices_and_steps_are_reproducible():
    model = _model()
    images = random_images(2, seed=2)
    full = kc.metrics.sanity_check("gradcam", model, images)
    top = kc.metrics.sanity_check("grad-cam", model, images, layers=1)
    assert top.layers == ["cam_head"] and top.correlations[0] == pytest.approx(full.correlations[0])
    # A layer's new weights depend on the seed and its place only: the order of randomization does not matter
    # for the last step, and randomized_copy (everything at once) gives that step too.
    reordered = kc.metrics.sanity_check("gradcam", model, images, layers=["conv1", model.get_layer("conv2"),
                                                                           "cam_head"])
    assert reordered.layers == ["conv1", "conv2", "cam_head"]
    assert reordered.correlations[-1] == pytest.approx(full.correlations[-1], abs=1e-6)
    twin, names = randomized_copy(model)
    assert names == full.layers
    maps = kc.GradCAM(model)(images)
    again = kc.GradCAM(twin)(images, targets=kc.GradCAM(model).compute(images).targets)
    assert spearman(maps, again).mean() == pytest.approx(full.correlations[-1], abs=1e-6)


def test_bad_input_gets_one_clear_error():
    model = _model()
    images = random_images(2)
    with pytest.raises(ValueError, match="`layers`: .*conv9"):
        kc.metrics.sanity_check("gradcam", model, images, layers=["conv9"])
    with pytest.raises(ValueError, match="no trainable weights of its own"):
        kc.metrics.sanity_check("gradcam", model, images, layers=["pool1"])
    with pytest.raises(ValueError, match="not an explainer"):
        kc.metrics.sanity_check(kc.GradCAM(model), model, images)
    with pytest.raises(ValueError, match="Unknown method 'gradkam'"):
        kc.metrics.sanity_check("gradkam", model, images)
    with pytest.raises(ValueError, match="`layers` must be an integer >= 1"):
        kc.metrics.sanity_check("gradcam", model, images, layers=0)
