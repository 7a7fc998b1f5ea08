"""kc.targets.segmentation: per-pixel outputs (N, H, W, K) scored over masks, against numpy, every method."""
import importlib.util
import pathlib
import textwrap

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam._batching import CACHE
from tests import oracles

ROOT = pathlib.Path(__file__).resolve().parents[1]
K = 3  # classes of the per-pixel output
GRADIENT_ORACLES = {"gradcam": oracles.gradcam, "gradcam++": oracles.gradcam_pp, "hirescam": oracles.hirescam,
                    "xgradcam": oracles.xgradcam, "layercam": oracles.layercam}


def weights(seed=0, c1=4):
    rng = np.random.default_rng(seed)
    return dict(k1=rng.normal(size=(3, 3, 3, c1)).astype("float32") * 0.5,
                b1=rng.normal(size=(c1,)).astype("float32") * 0.1,
                k2=rng.normal(size=(1, 1, c1, K)).astype("float32"),
                b2=rng.normal(size=(K,)).astype("float32") * 0.1)


def fcn(wts, size=8, activation="softmax"):
    """conv1 (3x3, ReLU) -> a 1x1 convolution to K per-pixel classes (softmax), with fixed weights."""
    units = wts["k2"].shape[-1]
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(wts["k1"].shape[-1], 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(units, 1, activation=activation, name="logits"),
    ], name="fcn")
    model.get_layer("conv1").set_weights([wts["k1"], wts["b1"]])
    model.get_layer("logits").set_weights([wts["k2"], wts["b2"]])
    return model


def forward(wts, x):
    """numpy: conv1's activations A (N, H, W, C1) and the per-pixel logits z (N, H, W, K)."""
    a = np.maximum(oracles.conv_forward(x.astype(np.float64), wts["k1"], wts["b1"]), 0)
    return a, oracles.conv_forward(a, wts["k2"], wts["b2"])


def images(n=4, size=8, seed=1):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def masks(n=4, size=8, seed=2):
    return np.random.default_rng(seed).random((n, size, size)) < 0.4


def methods_with_callable_targets():
    model = fcn(weights())
    return [n for n in kc.available_methods() if n != "cam"
            and type(kc.get_explainer(n, model, layer="conv1")).accepts_callable_targets]


@pytest.mark.backends
def test_scores_are_the_class_logits_summed_over_the_mask():
    wts, x, m = weights(), images(), masks()
    _, z = forward(wts, x)
    explainer = kc.GradCAM(fcn(wts), layer="conv1")
    per_image = explainer.compute(x, targets=kc.targets.segmentation(1, m))
    np.testing.assert_allclose(per_image.scores, (z[..., 1] * m).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(per_image.targets, [-1] * 4)
    shared = explainer.compute(x, targets=kc.targets.segmentation(2, m[0]))
    np.testing.assert_allclose(shared.scores, (z[..., 2] * m[0]).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)
    # A shared mask is the same as that mask given to every image.
    repeated = explainer.compute(x, targets=kc.targets.segmentation(2, np.repeat(m[:1], 4, axis=0)))
    np.testing.assert_allclose(repeated.scores, shared.scores, rtol=1e-6)
    np.testing.assert_allclose(repeated.heatmaps, shared.heatmaps, atol=1e-6)
    # mask=None: the pixels predicted as the class, which equals the explicit argmax mask.
    predicted = z.argmax(-1) == 0
    assert predicted.any() and not predicted.all()
    implicit = explainer.compute(x, targets=kc.targets.segmentation(0))
    explicit = explainer.compute(x, targets=kc.targets.segmentation(0, predicted))
    np.testing.assert_allclose(implicit.scores, (z[..., 0] * predicted).sum(axis=(1, 2)), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(implicit.scores, explicit.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(implicit.heatmaps, explicit.heatmaps, atol=1e-5)
    # Soft 0-1 weights, and the target called directly on outputs (no explainer).
    soft = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    direct = kc.targets.segmentation(1, soft)(keras.ops.convert_to_tensor(z.astype(np.float32)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(direct), (z[..., 1] * soft).sum(axis=(1, 2)),
                               rtol=1e-5)


@pytest.mark.backends
def test_per_image_masks_follow_the_images_through_chunks_without_retracing():
    wts, x, m = weights(), images(n=5), masks(n=5)
    _, z = forward(wts, x)
    model = fcn(wts)
    explainer = kc.GradCAM(model, layer="conv1")
    # Two chunks of 2 and a padded last one: each image keeps its own mask.
    result = explainer.compute(x, targets=kc.targets.segmentation(1, m), batch_size=2)
    np.testing.assert_allclose(result.scores, (z[..., 1] * m).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)
    one_by_one = [explainer.compute(x[i:i + 1], targets=kc.targets.segmentation(1, m[i])).heatmaps[0]
                  for i in range(5)]
    np.testing.assert_allclose(result.heatmaps, np.stack(one_by_one), atol=1e-5)
    # Other per-image masks of the same shape reuse the compiled function (they are its arguments).
    entries = CACHE.count(model)
    other = ~m
    again = explainer.compute(x, targets=kc.targets.segmentation(1, other), batch_size=2)
    np.testing.assert_allclose(again.scores, (z[..., 1] * other).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)
    kc.GradCAM(model, layer="conv1").compute(x, targets=kc.targets.segmentation(1, m), batch_size=2)
    assert CACHE.count(model) == entries
    # The same shared mask (or None) again: no new compiled function either.
    explainer.compute(x, targets=kc.targets.segmentation(1, m[0]))
    explainer.compute(x, targets=kc.targets.segmentation(1))
    entries = CACHE.count(model)
    explainer.compute(x, targets=kc.targets.segmentation(1, m[0].copy()))
    explainer.compute(x, targets=kc.targets.segmentation(1))
    assert CACHE.count(model) == entries


@pytest.mark.backends
@pytest.mark.parametrize("per_image", [False, True])
def test_gradient_maps_match_the_numpy_oracle(per_image):
    wts, x = weights(seed=3), images(seed=4)
    m = masks(seed=5) if per_image else masks(seed=5)[0]
    a, z = forward(wts, x)
    model = fcn(wts)
    # d(sum_xy mask z_c)/dA = mask(x, y) * w2[:, c]: the 1x1 convolution's column of the class.
    w2 = wts["k2"].reshape(-1, K)
    g = np.broadcast_to(m, x.shape[:3])[..., None] * w2[:, 2]
    for method, oracle in GRADIENT_ORACLES.items():
        explainer = kc.get_explainer(method, model, layer="conv1")
        result = explainer.compute(x, targets=kc.targets.segmentation(2, m))
        np.testing.assert_allclose(result.heatmaps, oracles.finish(oracle(a, g)), atol=2e-4, err_msg=method)
    # The softmax is skipped: scores are logits (with use_logits=False, the probabilities are summed).
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    raw = kc.GradCAM(model, layer="conv1", use_logits=False).compute(x, targets=kc.targets.segmentation(2, m))
    np.testing.assert_allclose(raw.scores, (probs[..., 2] * m).sum(axis=(1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_every_method_runs_on_per_pixel_outputs():
    wts, x, m = weights(), images(n=2), masks(n=2)
    model = fcn(wts)
    names = methods_with_callable_targets()
    assert {"gradcam", "scorecam", "eigencam"} <= set(names)
    for name in names:
        explainer = kc.get_explainer(name, model)  # the automatic layer
        for target in (kc.targets.segmentation(1), kc.targets.segmentation(1, m[0])):
            maps = explainer(x, targets=target)
            assert maps.shape == (2, 8, 8) and np.all(np.isfinite(maps)), name
            assert maps.min() >= 0 and maps.max() <= 1, name
        maps = explainer(x, targets=kc.targets.segmentation(1, m))
        assert np.all(np.isfinite(maps)) and maps.min() >= 0 and maps.max() <= 1, name
        if name in ("scorecam", "ablationcam"):  # their own perturbed passes score each image on its own mask
            alone = np.concatenate([explainer(x[i:i + 1], targets=kc.targets.segmentation(1, m[i]))
                                    for i in range(2)])
            np.testing.assert_allclose(maps, alone, rtol=1e-4, atol=1e-5, err_msg=name)
    # A binary per-pixel unit (sigmoid): class 1 is its logit, class 0 the negated logit.
    binary = weights(seed=6)
    binary["k2"], binary["b2"] = binary["k2"][..., :1], binary["b2"][:1]
    _, z = forward(binary, x)
    explainer = kc.GradCAM(fcn(binary, activation="sigmoid"), layer="conv1")
    for c, logit, where in ((1, z[..., 0], z[..., 0] > 0), (0, -z[..., 0], z[..., 0] <= 0)):
        scores = explainer.compute(x, targets=kc.targets.segmentation(c)).scores
        np.testing.assert_allclose(scores, (logit * where).sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)


@pytest.mark.backends
def test_segmentation_errors_are_clear():
    x, m = images(n=2), masks(n=2)
    model = fcn(weights())
    explainer = kc.GradCAM(model, layer="conv1")
    for bad in (-1, True, 1.5, "circle", None):
        with pytest.raises(ValueError, match="`class_index` must be an integer >= 0"):
            kc.targets.segmentation(bad)
    for bad, message in ((np.zeros(8), r"got ndarray with shape \(8,\)"),
                         (np.zeros((1, 2, 8, 8)), r"\(1, 2, 8, 8\)"),
                         (np.zeros((0, 8)), r"\(0, 8\)"), ([["a"]], "got list"),
                         (np.full((8, 8), 2.0), r"values must be in \[0, 1\]"),
                         (np.full((8, 8), np.nan), r"values must be in \[0, 1\].*got NaN or infinite")):
        with pytest.raises(ValueError, match=message):
            kc.targets.segmentation(1, bad)
    with pytest.raises(ValueError, match="`class_index` 3 is out of range: the per-pixel output has 3 class"):
        explainer(x, targets=kc.targets.segmentation(3))
    expected = r"pass a mask of shape \(8, 8\) shared by every image, or \(N, 8, 8\) with one per image"
    with pytest.raises(ValueError, match=r"`mask` has shape \(4, 4\) but the model's per-pixel output .*"
                                         + expected):
        explainer(x, targets=kc.targets.segmentation(1, np.ones((4, 4))))
    with pytest.raises(ValueError, match=r"`mask` has shape \(2, 8, 6\).*" + expected):
        explainer(x, targets=kc.targets.segmentation(1, np.ones((2, 8, 6))))
    with pytest.raises(ValueError, match=r"holds 3 per-image masks \(3, 8, 8\) but there are 2 images; pass "
                                         r"one "
                                         r"mask per image, shape \(2, 8, 8\), or one mask \(8, 8\)"):
        explainer(x, targets=kc.targets.segmentation(1, masks(n=3)))
    classifier = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c"),
                                   keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"scores per-pixel outputs \(N, H, W, K\).*pass the class index"):
        kc.GradCAM(classifier, layer="c")(x, targets=kc.targets.segmentation(1))
    inputs = keras.Input((8, 8, 3))
    features = model.get_layer("conv1")(inputs)
    two = keras.Model(inputs, [model.get_layer("logits")(features), features])
    with pytest.raises(ValueError, match="several outputs; `kc.targets.segmentation` scores a model with"):
        kc.GradCAM(two, layer="conv1")(x, targets=kc.targets.segmentation(1))
    with pytest.raises(ValueError, match="explains class indices"):
        kc.get_explainer("finercam", model, layer="conv1")(x, targets=kc.targets.segmentation(1))
    # Integer targets and explain_labels still refuse per-pixel outputs, pointing to a callable.
    with pytest.raises(ValueError, match=r"integer targets need \(N, num_classes\)"):
        explainer(x, targets=1)
    with pytest.raises(ValueError, match=r"explain_labels needs a multi-label classifier with outputs"):
        explainer.explain_labels(x)
    assert m.shape == (2, 8, 8)  # nothing the user passed is modified


def test_docstring_example_runs():
    doc = kc.targets.segmentation.__doc__
    code = textwrap.dedent(doc.split("```python\n")[1].split("```")[0])
    scope = {}
    exec(code, scope)
    assert scope["heatmaps"].shape == (2, 16, 16)


@pytest.mark.slow
def test_example_grad_cam_of_circle_lands_on_circles(tmp_path):
    path = ROOT / "examples" / "segmentation_cam.py"
    spec = importlib.util.spec_from_file_location("segmentation_cam", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(out=str(tmp_path), n_train=1200, n_val=90, epochs=10, verbose=0)
    assert summary["pointing_game"] >= 0.9 and summary["circles"] >= 20, summary
    assert summary["pixel_accuracy"] > 0.9, summary
    assert (tmp_path / "segmentation_cam.png").stat().st_size > 0
