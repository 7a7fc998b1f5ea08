"""targets.py: targets -> class indices (validated), and outputs -> the score of each image's class."""
import keras
import numpy as np
import pytest

from keras_cam.targets import PREDICTED, callable_scores, class_scores, resolve_targets


def test_resolve_targets_forms_and_errors():
    np.testing.assert_array_equal(resolve_targets(None, 3, 5), [PREDICTED] * 3)
    np.testing.assert_array_equal(resolve_targets(2, 3, 5), [2, 2, 2])
    np.testing.assert_array_equal(resolve_targets(np.int64(4), 2, 5), [4, 4])
    np.testing.assert_array_equal(resolve_targets([0, 4, 1], 3, 5), [0, 4, 1])
    np.testing.assert_array_equal(resolve_targets(np.array([1.0, 2.0]), 2, 5), [1, 2])  # integral floats
    assert resolve_targets([7, 9], 2, None).dtype == np.int32  # no class count known: any index >= 0
    fn = lambda out: out[:, 0]  # noqa: E731
    assert resolve_targets(fn, 3, 5) is fn
    # A single unit is a binary classifier: indices 0 and 1.
    np.testing.assert_array_equal(resolve_targets([0, 1], 2, 1), [0, 1])
    # Several classes per image: an (N, K) array, or "all".
    np.testing.assert_array_equal(resolve_targets([[0, 2], [1, 1]], 2, 3), [[0, 2], [1, 1]])
    np.testing.assert_array_equal(resolve_targets("all", 2, 3), [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(resolve_targets("all", 1, 1), [[0, 1]])  # a binary unit: both classes
    np.testing.assert_array_equal(resolve_targets("all", 1, 1, binary=False), [[0]])  # regression: the unit
    cases = [
        ((True, 2, 3), "got a bool"),
        (([0, 1], 3, 3), "2 entries but there are 3 images"),
        ((3, 2, 3), r"Target index 3 is out of range: the model has 3 classes \(valid indices 0..2\)"),
        (([0, 2], 2, 1), "Target index 2 is out of range: the model has 2 classes"),
        (([-1], 1, 3), "Target index -1 is out of range"),
        (([-2], 1, None), "must be >= 0, got -2"),
        (([0.5], 1, 3), "sequence of ints"),
        ((np.zeros((2, 2, 2), int), 2, 3), r"shape \(2, 2, 2\)"),
        ((np.zeros((2, 0), int), 2, 3), r"shape \(2, 0\)"),
        (("al", 2, 3), "may be the string 'all'"),
        (("all", 2, None), "targets='all' needs a model"),
        (([[0, 3]], 1, 3), "Target index 3 is out of range"),
        ((["a"], 1, 3), "sequence of ints"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            resolve_targets(*args)


@pytest.mark.backends
def test_class_scores_on_logits_and_probabilities():
    logits = np.array([[1.0, 3.0, 2.0], [0.5, -1.0, 4.0]], np.float32)
    scores, idx = class_scores(keras.ops.convert_to_tensor(logits), keras.ops.convert_to_tensor([-1, 0]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(idx), [1, 0])  # -1: the predicted class
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), [3.0, 0.5])
    # One unit on logits: class 1 is z, class 0 is -z; predicted where z > 0.
    z = keras.ops.convert_to_tensor(np.array([[2.0], [-0.5], [0.25]], np.float32))
    scores, idx = class_scores(z, keras.ops.convert_to_tensor([-1, -1, 0]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(idx), [1, 0, 0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), [2.0, 0.5, -0.25])
    # One unit on probabilities: class 1 is p, class 0 is 1 - p; predicted where p > 0.5.
    p = keras.ops.convert_to_tensor(np.array([[0.9], [0.3]], np.float32))
    scores, idx = class_scores(p, keras.ops.convert_to_tensor([-1, 1]), probabilities=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(idx), [1, 1])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), [0.9, 0.3], rtol=1e-6)
    scores, idx = class_scores(p, keras.ops.convert_to_tensor([-1, -1]), probabilities=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores), [0.9, 0.7], rtol=1e-6)


@pytest.mark.backends
def test_scores_need_one_value_per_image():
    out = keras.ops.convert_to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(callable_scores(lambda o: o[:, 2] - o[:, 0], out)),
                               [2.0, 2.0])
    with pytest.raises(ValueError, match=r"one score per image, shape \(N,\)"):
        callable_scores(lambda o: o, out)
    with pytest.raises(ValueError, match="several outputs.*callable"):
        class_scores([out, out], keras.ops.convert_to_tensor([0, 0]))
    with pytest.raises(ValueError, match=r"integer targets need \(N, num_classes\)"):
        class_scores(keras.ops.reshape(out, (2, 3, 1)), keras.ops.convert_to_tensor([0, 0]))


@pytest.mark.backends
def test_output_target_picks_an_output_by_position_name_or_key():
    import keras_cam as kc

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    cls = keras.layers.Dense(3, activation="softmax", name="species")(pooled)
    reg = keras.layers.Dense(1, name="size")(pooled)
    x = np.random.default_rng(0).random((3, 8, 8, 3)).astype("float32")
    listed = keras.Model(image, [cls, reg])
    explainer = kc.GradCAM(listed, layer="conv")
    by_lambda = explainer.compute(x, targets=lambda out: out[0][:, 2])  # logits: the softmax is skipped
    for target in (kc.targets.output(0, 2), kc.targets.output("species", class_index=2)):
        result = explainer.compute(x, targets=target)
        np.testing.assert_allclose(result.heatmaps, by_lambda.heatmaps, atol=1e-6)
        np.testing.assert_allclose(result.scores, by_lambda.scores, rtol=1e-6)
    size = explainer.compute(x, targets=kc.targets.output("size"))
    np.testing.assert_allclose(size.scores, keras.ops.convert_to_numpy(listed(x)[1])[:, 0], rtol=1e-5)
    predicted = explainer.compute(x, targets=kc.targets.output("species"))  # None: the largest logit
    logits = by_lambda.scores  # class 2's logit; the predicted logit is at least as large
    assert np.all(predicted.scores >= logits - 1e-6)
    keyed = keras.Model(image, {"a": cls, "b": reg})
    np.testing.assert_allclose(kc.GradCAM(keyed, layer="conv").compute(x, targets=kc.targets.output("b")).scores,
                               size.scores, rtol=1e-5)
    with pytest.raises(ValueError, match=r"Output 'nope' not found; the model's outputs are \['species', 'size'\]"):
        explainer(x, targets=kc.targets.output("nope"))
    with pytest.raises(ValueError, match="Output index 5 is out of range: the model has 2 outputs"):
        explainer(x, targets=kc.targets.output(5))
    with pytest.raises(ValueError, match="several outputs.*kc.targets.output"):
        explainer(x)


# ---------------------------------------------------------------------------------------- regression outputs

import keras_cam as kc  # noqa: E402
from tests import oracles  # noqa: E402
from tests.models import fixed_weights, functional_model, images  # noqa: E402


class _LinearUnit(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.gap(self.conv(x)))


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
