"""Explainer core: oracles (numpy, identities, tf-keras-vis), model kinds, targets, errors, no side effects."""
import gc
import os

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.capture import iter_layers
from tests import oracles
from tests.models import (assert_unchanged, conv_layers, fixed_weights, functional_model, images, model_snapshot,
                          sequential_model, set_fixed, subclassed_model)

BACKEND = keras.backend.backend()
GRADIENT_METHODS = {
    "gradcam": oracles.gradcam,
    "gradcam++": oracles.gradcam_pp,
    "hirescam": oracles.hirescam,
    "xgradcam": oracles.xgradcam,
    "layercam": oracles.layercam,
}


# ---------------------------------------------------------------------------------------------- numpy oracle


@pytest.mark.backends
@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_gradient_methods_match_numpy_reference(method):
    wts = fixed_weights()
    model = functional_model(wts)
    x = images()
    targets = np.array([0, 1, 2, 1])
    a, g, logits = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"],
                                                     wts["b"], targets)
    expected = oracles.finish(GRADIENT_METHODS[method](a, g))
    result = kc.get_explainer(method, model, layer="conv1").compute(x, targets=targets)
    np.testing.assert_allclose(result.heatmaps, expected, atol=2e-4)
    # Scores are taken on the logits (the softmax is removed for the duration of the call).
    np.testing.assert_allclose(result.scores, logits[np.arange(4), targets], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.targets, targets)


@pytest.mark.backends
def test_predicted_class_and_raw_maps():
    wts = fixed_weights(seed=3)
    model = functional_model(wts)
    x = images(n=6)
    logits = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"],
                                               wts["b"], np.zeros(6, int))[2]
    predicted = logits.argmax(-1)
    a, g, _ = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                                predicted)
    explainer = kc.GradCAM(model, layer="conv1")
    result = explainer.compute(x)
    np.testing.assert_array_equal(result.targets, predicted)
    raw = explainer.explain(x, upsample=False, normalize=False)
    np.testing.assert_allclose(raw, np.maximum(oracles.gradcam(a, g), 0), rtol=1e-3, atol=1e-6)


@pytest.mark.backends
def test_upsampling_matches_opencv_bilinear():
    wts = fixed_weights(seed=5)
    layers = conv_layers(wts)
    inp = keras.Input((12, 12, 3))
    x = layers[0](inp)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    for layer in layers[1:]:
        x = layer(x)
    model = keras.Model(inp, x)
    set_fixed(layers, wts)
    xs = images(n=3, size=12)
    # conv2 is 6x6; a GAP + Dense head makes dS/dA = w / hw, so Grad-CAM = ReLU(A @ w[:, t]).
    feats = keras.Model(inp, model.get_layer("conv2").output).predict(xs, verbose=0)
    expected = oracles.finish(feats @ wts["w"][:, 2], size=(12, 12))
    np.testing.assert_allclose(kc.GradCAM(model, layer="conv2")(xs, targets=2), expected, atol=2e-4)


# --------------------------------------------------------------------------------------------- identities


@pytest.mark.backends
def test_hirescam_and_xgradcam_equal_gradcam_on_gap_dense_head():
    model = functional_model(fixed_weights(seed=7))
    x = images(n=5)
    ref = kc.GradCAM(model, layer="conv2")(x, targets=1)
    assert ref.std() > 0.05
    np.testing.assert_allclose(kc.HiResCAM(model, layer="conv2")(x, targets=1), ref, atol=2e-4)
    np.testing.assert_allclose(kc.XGradCAM(model, layer="conv2")(x, targets=1), ref, atol=2e-4)


@pytest.mark.backends
def test_gradcam_at_camhead_input_equals_cam():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
        kc.CAMHead(4),
    ])
    x = images(n=5, size=16)
    targets = [0, 1, 2, 3, 1]
    cam = kc.CAM(model).compute(x, targets)
    grad = kc.GradCAM(model, layer="c2").compute(x, targets)
    assert cam.heatmaps.std() > 0.05
    np.testing.assert_allclose(grad.heatmaps, cam.heatmaps, atol=2e-4)
    np.testing.assert_allclose(grad.scores, cam.scores, rtol=1e-5)
    np.testing.assert_allclose(kc.class_activation_maps(model, x, targets), cam.heatmaps, atol=1e-6)


# ------------------------------------------------------------------------------------------- other methods


@pytest.mark.backends
def test_eigencam_matches_numpy_svd():
    wts = fixed_weights(seed=11, c1=6)
    model = functional_model(wts)
    x = images(n=3)
    a = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                          np.zeros(3, int))[0]
    np.testing.assert_allclose(kc.EigenCAM(model, layer="conv1")(x), oracles.finish(oracles.eigencam(a)),
                               atol=5e-4)


def _scorecam_reference(x, wts, targets, channels=None):
    a, _, _ = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                                targets)
    out = []
    for i in range(len(x)):
        ai = a[i] if channels is None else a[i][..., channels[i]]
        masks = oracles.minmax(np.transpose(ai, (2, 0, 1)))  # conv1 has the input's resolution
        masked = x[i][None] * masks[..., None]
        logits = oracles.two_conv_forward_backward(masked, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"],
                                                   wts["b"], np.zeros(len(masks), int))[2]
        s = logits[:, targets[i]]
        weights = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        out.append(np.einsum("hwc,c->hw", ai, weights))
    return oracles.finish(np.stack(out))


@pytest.mark.backends
def test_scorecam_matches_numpy_reference_and_is_batch_invariant():
    wts = fixed_weights(seed=2, c1=6)
    model = functional_model(wts)
    x = images(n=3)
    targets = np.array([2, 0, 1])
    expected = _scorecam_reference(x, wts, targets)
    np.testing.assert_allclose(kc.ScoreCAM(model, layer="conv1")(x, targets), expected, atol=2e-4)
    np.testing.assert_allclose(kc.ScoreCAM(model, layer="conv1", batch_size=4)(x, targets), expected, atol=2e-4)
    # Faster Score-CAM: the channels of largest variance only.
    a = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                          targets)[0]
    top = [np.sort(np.argsort(-ai.reshape(-1, 6).var(0), kind="stable")[:3]) for ai in a]
    fast = kc.ScoreCAM(model, layer="conv1", max_channels=3).explain(x, targets, batch_size=2)
    np.testing.assert_allclose(fast, _scorecam_reference(x, wts, targets, top), atol=2e-4)


# ------------------------------------------------------------------------------------------- model kinds


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_sequential_and_subclassed_models_match_functional(kind):
    wts = fixed_weights(seed=4)
    x = images()
    ref = kc.GradCAMPlusPlus(functional_model(wts), layer="conv1")(x, targets=[0, 1, 2, 0])
    model = sequential_model(wts) if kind == "sequential" else subclassed_model(wts)
    snapshot = model_snapshot(model)
    out = kc.GradCAMPlusPlus(model, layer="conv1")(x, targets=[0, 1, 2, 0])
    np.testing.assert_allclose(out, ref, atol=2e-4)
    # layer=None finds the last spatial layer also without a graph (subclassed: by one probing call).
    auto = kc.GradCAM(model)
    np.testing.assert_allclose(auto(x), kc.GradCAM(functional_model(wts))(x), atol=2e-4)
    assert auto.layer_ref.path == "conv2"
    assert_unchanged(model, snapshot)


def _nested_backbone_model(size=64, app="MobileNetV2"):
    keras.utils.set_random_seed(1)
    kwargs = {"alpha": 0.35} if app == "MobileNetV2" else {}
    backbone = getattr(keras.applications, app)(weights=None, include_top=False, input_shape=(size, size, 3),
                                                **kwargs)
    model = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model.build((None, size, size, 3))
    return model, backbone


@pytest.mark.backends
def test_nested_keras_applications_backbone():
    model, backbone = _nested_backbone_model()
    x = images(n=2, size=64)
    explainer = kc.GradCAM(model)
    assert explainer.layer_ref.path == f"{backbone.name}/out_relu"
    feats = keras.ops.convert_to_numpy(backbone(x, training=False))
    w = model.layers[-1].get_weights()[0]
    np.testing.assert_allclose(explainer(x, targets=1), oracles.finish(feats @ w[:, 1], size=(64, 64)), atol=2e-4)
    # An inner layer of the nested backbone, by path and by bare name, gives the same maps.
    by_path = kc.LayerCAM(model, layer=f"{backbone.name}/block_5_expand_relu")(x, targets=1)
    by_name = kc.LayerCAM(model, layer="block_5_expand_relu")(x, targets=1)
    np.testing.assert_array_equal(by_path, by_name)
    assert by_path.std() > 0.05


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf-keras-vis runs on TensorFlow only")
def test_agrees_with_tf_keras_vis_gradcam():
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    # VGG16: without BatchNorm its random-init activations do not collapse to ~1e-10 as MobileNetV2's do.
    model, backbone = _nested_backbone_model(app="VGG16")
    # tf-keras-vis needs a flat Functional model: same backbone layers, a copied head.
    gap, dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")
    flat = keras.Model(backbone.input, dense(gap(backbone.output)))
    dense.set_weights(model.layers[-1].get_weights())
    x = images(n=3, size=64)
    layer = "block4_conv3"
    peer = Gradcam(flat, model_modifier=ReplaceToLinear(), clone=True)
    ref = peer(CategoricalScore([0, 2, 1]), x, penultimate_layer=layer, expand_cam=False, normalize_cam=False)
    ours = kc.GradCAM(model, layer=layer).explain(x, [0, 2, 1], upsample=False, normalize=False)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


@pytest.mark.backends
def test_multi_input_model():
    keras.utils.set_random_seed(2)
    image = keras.Input((12, 12, 3), name="image")
    meta = keras.Input((4,), name="meta")
    f = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(image)
    h = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(f), meta])
    out = keras.layers.Dense(3, name="out")(h)
    model = keras.Model([meta, image], out)
    x = images(n=3, size=12)
    m = np.random.default_rng(0).random((3, 4)).astype("float32")
    feats = keras.Model(image, f).predict(x, verbose=0)
    w = model.get_layer("out").get_weights()[0][:5]
    expected = oracles.finish(feats @ w[:, 2])
    np.testing.assert_allclose(kc.GradCAM(model)([m, x], targets=2), expected, atol=2e-4)
    np.testing.assert_allclose(kc.GradCAM(model, input_name="image")({"meta": m, "image": x}, targets=2),
                               expected, atol=2e-4)
    with pytest.raises(ValueError, match="list"):
        kc.GradCAM(model)(x)


@pytest.mark.backends
def test_sigmoid_multilabel_and_binary():
    wts = fixed_weights(seed=9)
    model = functional_model(wts, activation="sigmoid")
    x = images(n=2)
    logits = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                               np.zeros(2, int))[2]
    explainer = kc.GradCAM(model, layer="conv1")
    maps = [explainer.compute(x, targets=label) for label in range(3)]
    for label, result in enumerate(maps):
        np.testing.assert_allclose(result.scores, logits[:, label], rtol=1e-4, atol=1e-5)
    assert np.abs(maps[0].heatmaps - maps[1].heatmaps).max() > 0.1  # each label has its own map
    # Each label present gets its map; the threshold is on the sigmoid outputs.
    probs = 1 / (1 + np.exp(-logits))
    per_image = explainer.explain_labels(x, threshold=0.5)
    for i in range(2):
        assert sorted(per_image[i]) == np.nonzero(probs[i] > 0.5)[0].tolist()
        for label, heatmap in per_image[i].items():
            np.testing.assert_allclose(heatmap, maps[label].heatmaps[i], atol=1e-5)
    chosen = explainer.explain_labels(x, labels=[[1, 0, 1], [0, 0, 0]])
    assert sorted(chosen[0]) == [0, 2] and chosen[1] == {}

    # One sigmoid unit: class 1 is the unit, class 0 its negation.
    binary = functional_model(fixed_weights(seed=9, k=1), activation="sigmoid")
    result = kc.GradCAM(binary, layer="conv1").compute(x, targets=[0, 1])
    z = keras.ops.convert_to_numpy(binary(x))[:, 0]
    z_logit = np.log(z / (1 - z))
    np.testing.assert_allclose(result.scores, [-z_logit[0], z_logit[1]], rtol=1e-3, atol=1e-4)
    assert kc.GradCAM(binary, layer="conv1").compute(x).targets.tolist() == [int(v > 0) for v in z_logit]
    # On probabilities (use_logits=False) class 0 scores 1 - p, and the predicted class is p > 0.5.
    on_probs = kc.GradCAM(binary, layer="conv1", use_logits=False)
    result = on_probs.compute(x, targets=[0, 1])
    np.testing.assert_allclose(result.scores, [1 - z[0], z[1]], rtol=1e-4, atol=1e-5)
    assert on_probs.compute(x).targets.tolist() == [int(v > 0.5) for v in z]


@pytest.mark.backends
def test_callable_targets():
    wts = fixed_weights(seed=1)
    model = functional_model(wts)
    x = images(n=3)
    via_callable = kc.GradCAM(model, layer="conv1")(x, targets=lambda out: out[:, 2] - out[:, 0])
    a, g2, _ = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                                 np.full(3, 2))
    _, g0, _ = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                                 np.full(3, 0))
    np.testing.assert_allclose(via_callable, oracles.finish(oracles.gradcam(a, g2 - g0)), atol=2e-4)


# ------------------------------------------------------------------------------- layers, errors, side effects


def test_unknown_layer_suggests_names():
    model = functional_model(fixed_weights())
    with pytest.raises(ValueError, match=r"'conv' not found.*did you mean.*conv1.*Spatial layers: conv1, conv2"):
        kc.GradCAM(model, layer="conv")


def test_non_spatial_layer_is_refused():
    model = functional_model(fixed_weights())
    with pytest.raises(ValueError, match=r"'gap' has output shape \(None, 5\).*not a spatial"):
        kc.GradCAM(model, layer="gap")
    other = functional_model(fixed_weights())
    with pytest.raises(ValueError, match="not part of model"):
        kc.GradCAM(model, layer=other.get_layer("conv1"))


def test_bad_inputs_raise_and_leave_everything_unmodified():
    model = functional_model(fixed_weights())
    explainer = kc.GradCAM(model)
    x = images()
    x_copy = x.copy()
    snapshot = model_snapshot(model)
    cases = [
        (x[0], "rank 4"),
        (x[..., :1], "channels 1 but the model expects 3"),
        (x[:0], "empty batch"),
        (np.where(x > 0.5, np.nan, x), "NaN"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            explainer(bad)
    with pytest.raises(ValueError, match="out of range"):
        explainer(x, targets=3)
    with pytest.raises(ValueError, match="4 images"):
        explainer(x, targets=[0, 1])
    with pytest.raises(ValueError, match="Unknown method 'gradkam'.*gradcam"):
        kc.get_explainer("gradkam", model)
    np.testing.assert_array_equal(x, x_copy)
    assert_unchanged(model, snapshot)


@pytest.mark.backends
def test_model_restored_after_a_call_that_raises():
    model = functional_model(fixed_weights())
    snapshot = model_snapshot(model)
    preds = keras.ops.convert_to_numpy(model(images()))

    def broken(outputs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        kc.GradCAM(model)(images(), targets=broken)
    assert_unchanged(model, snapshot)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images())), preds)  # softmax is back
    assert model.get_layer("head").activation is keras.activations.softmax


def test_get_explainer_names():
    model = functional_model(fixed_weights())
    for name, cls in [("Grad-CAM++", kc.GradCAMPlusPlus), ("grad_cam_plus_plus", kc.GradCAMPlusPlus),
                      ("gradcam", kc.GradCAM), ("Score-CAM", kc.ScoreCAM), ("eigen_cam", kc.EigenCAM),
                      ("HiResCAM", kc.HiResCAM), ("x-grad-cam", kc.XGradCAM), ("layercam", kc.LayerCAM)]:
        assert type(kc.get_explainer(name, model)) is cls
    assert set(kc.available_methods()) >= {"gradcam", "gradcam++", "scorecam", "cam"}


@pytest.mark.backends
@pytest.mark.skipif(BACKEND == "torch", reason="torch runs eagerly: nothing is traced")
def test_compiled_once_per_shape():
    traces = []

    class Counting(kc.GradCAM):
        def compute_cam(self, a, g, t):
            traces.append(1)
            return super().compute_cam(a, g, t)

    model = functional_model(fixed_weights())
    explainer = Counting(model)
    for targets in (None, 1, [0, 1, 2, 0], None):
        explainer(images(), targets=targets)
    assert len(traces) == 1
    explainer(images(n=7), targets=None)  # a new shape compiles once more
    explainer(images(n=7))
    assert len(traces) == 2
    # Padding keeps one signature for ragged chunks.
    explainer.explain(images(n=10), batch_size=3)  # chunks of 3, 3, 3 and 1 padded to 3
    assert len(traces) == 3


@pytest.mark.backends
def test_repeated_calls_do_not_leak():
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    model = functional_model(fixed_weights())
    explainer = kc.GradCAM(model)
    x = images()
    for _ in range(50):
        explainer(x)
    gc.collect()
    before = rss_mb()
    for _ in range(1000):
        explainer(x)
    gc.collect()
    assert rss_mb() - before < 50
    assert not any("call" in ref.layer.__dict__ for ref in iter_layers(model))


@pytest.mark.backends
@pytest.mark.skipif(BACKEND != "torch", reason="autograd recording is a PyTorch (eager) concern")
def test_torch_records_autograd_only_downstream_of_the_layer():
    import torch

    seen = {}

    class GradMode(keras.layers.Layer):
        def call(self, x):
            seen[self.name] = torch.is_grad_enabled()
            return x

    wts = fixed_weights()
    layers = conv_layers(wts)
    conv1, conv2, gap, dense = layers
    model = keras.Sequential([keras.Input((10, 10, 3)), conv1, GradMode(name="before"), conv2,
                              GradMode(name="after"), gap, dense])
    set_fixed(layers, wts)
    x = images()
    np.testing.assert_allclose(kc.GradCAM(model, layer="conv2")(x, [0, 1, 2, 0]),
                               kc.GradCAM(functional_model(wts), layer="conv2")(x, [0, 1, 2, 0]), atol=1e-5)
    # The backbone's forward is not recorded (no graph through its weights); the head's is, for the gradient.
    assert seen == {"before": False, "after": True}
    assert torch.is_grad_enabled()  # the global grad mode is restored


# ------------------------------------------------------------------------------------- messages that mislead

@pytest.mark.backends
def test_each_misleading_case_gets_one_clear_message():
    model = functional_model(fixed_weights())
    explainer = kc.GradCAM(model)
    x = images(n=4)
    with pytest.raises(ValueError, match=r"one input, but `images` is a list of 4 items.*np.stack\(images\)"):
        explainer(list(x))
    np.testing.assert_allclose(explainer([x]), explainer(x), atol=1e-6)  # a list of one batch is fine

    def generator():
        yield x

    with pytest.raises(ValueError, match="images is an iterator or generator; explainers take arrays"):
        explainer(generator())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with pytest.raises(ValueError, match=r"images is a tf.data.Dataset.*for x, \*_ in data: explainer\(x\)"):
            explainer(tf.data.Dataset.from_tensor_slices(x).batch(2))
    # explain_labels on per-pixel outputs: what it needs, and what to do instead.
    keras.utils.set_random_seed(0)
    seg = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, padding="same", name="c"),
                            keras.layers.Conv2D(2, 1, activation="sigmoid")])
    with pytest.raises(ValueError, match=r"explain_labels needs a multi-label classifier with outputs \(N, K\)"):
        kc.GradCAM(seg, layer="c").explain_labels(x)
    # Errors raised inside the compiled function read as on every backend, without autograph's wrapper.
    two = keras.Model(model.inputs, [model.output, model.get_layer("gap").output])
    with pytest.raises(ValueError) as info:
        kc.GradCAM(two, layer="conv2")(x)
    assert "in user code" not in str(info.value)
    assert str(info.value).startswith("The model has several outputs; pass `targets=kc.targets.output(")


# ------------------------------------------------------------ several targets and several layers in one pass

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


# ------------------------------------------- AblationCAM, FullGrad and ShapleyCAM: side effects, model kinds

from tests.helpers import TARGETS, gap_dense  # noqa: E402


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
