"""`eigen_smooth` and `aug_smooth` on every method, against numpy and against the explainer's own plain maps."""
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.models import fixed_weights, functional_model, images

TARGETS = np.array([0, 1, 2, 1])


def _reference(wts, x):
    return oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                             TARGETS)[:2]


@pytest.mark.backends
@pytest.mark.parametrize("method, weighted", [
    ("gradcam", lambda a, g: a * g.mean(axis=(1, 2))[:, None, None, :]),
    ("hirescam", lambda a, g: a * g),
    ("layercam", lambda a, g: np.maximum(g, 0) * a),
    ("gradcam-elementwise", lambda a, g: np.maximum(a * g, 0)),
])
def test_eigen_smooth_is_the_first_component_of_the_weighted_activations(method, weighted):
    wts = fixed_weights(seed=5, c1=6)
    x = images()
    a, g = _reference(wts, x)
    explainer = kc.get_explainer(method, functional_model(wts), layer="conv1")
    got = explainer.explain(x, targets=TARGETS, eigen_smooth=True)
    np.testing.assert_allclose(got, oracles.finish(oracles.eigencam(weighted(a, g))), atol=5e-4)
    # the plain map is unchanged by the smoothed one (separate compiled functions)
    np.testing.assert_allclose(explainer.explain(x, targets=TARGETS), explainer.explain(x, targets=TARGETS))
    assert not np.allclose(got, explainer.explain(x, targets=TARGETS), atol=1e-3)


@pytest.mark.backends
def test_eigen_smooth_on_eigen_methods_scorecam_and_attributions():
    wts = fixed_weights(seed=5, c1=6)
    model, x = functional_model(wts), images(n=2)
    eigen = kc.EigenCAM(model, layer="conv1")
    np.testing.assert_allclose(eigen.explain(x, eigen_smooth=True), eigen.explain(x), atol=1e-6)  # already one
    score = kc.ScoreCAM(model, layer="conv1")
    plain = score.compute(x, targets=[0, 1])
    smooth = score.explain(x, targets=[0, 1], eigen_smooth=True)
    assert smooth.shape == plain.heatmaps.shape and np.isfinite(smooth).all() and smooth.max() == pytest.approx(1)
    assert not np.allclose(smooth, plain.heatmaps, atol=1e-3)
    with pytest.raises(ValueError, match="eigen_smooth applies to class activation maps.*Saliency"):
        kc.Saliency(model).explain(x, eigen_smooth=True)


def _augmented_reference(explainer, x, targets):
    """The six copies explained one by one with the public API, flipped back, averaged, normalized."""
    maps = []
    for flip in (False, True):
        xf = x[:, :, ::-1] if flip else x
        for factor in (1.0, 0.9, 1.1):
            m = explainer.explain(xf * factor, targets=targets)
            maps.append(m[..., ::-1] if flip else m)
    return oracles.minmax(np.mean(maps, axis=0))


@pytest.mark.backends
@pytest.mark.parametrize("method", ["gradcam", "scorecam", "saliency"])
def test_aug_smooth_averages_flips_and_intensities(method):
    wts = fixed_weights(seed=3)
    model, x = functional_model(wts), images(n=3)
    explainer = kc.get_explainer(method, model, layer="conv1")
    predicted = explainer.compute(x).targets
    result = explainer.compute(x, aug_smooth=True)
    np.testing.assert_array_equal(result.targets, predicted)  # the image's own class, for every copy
    np.testing.assert_allclose(result.heatmaps, _augmented_reference(explainer, x, predicted), atol=1e-4)
    several = explainer.explain(x, targets=[[0, 2]] * 3, aug_smooth=True)
    np.testing.assert_allclose(several[:, 1], explainer.explain(x, targets=2, aug_smooth=True), atol=1e-4)


def test_aug_smooth_refuses_per_image_masks_and_leaves_inputs_alone():
    wts = fixed_weights(seed=3)
    model, x = functional_model(wts), images(n=2)
    before = x.copy()
    explainer = kc.GradCAM(model, layer="conv1")
    explainer.explain(x, aug_smooth=True, eigen_smooth=True)
    np.testing.assert_array_equal(x, before)
    plain = explainer.explain(x, targets=lambda out: out[:, 2], aug_smooth=True)  # a plain callable is fine
    np.testing.assert_allclose(plain, explainer.explain(x, targets=2, aug_smooth=True), atol=1e-5)
    with pytest.raises(ValueError, match="aug_smooth flips the images"):
        explainer.explain(x, targets=kc.targets.segmentation(1, mask=np.ones((2, 10, 10), bool)), aug_smooth=True)
