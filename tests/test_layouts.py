"""Every layout: signals (1-D), images (2-D) and volumes (3-D), channels last or first, from one N-D core.

Oracles: the numpy im2col reference in N-D (direct convolution and its backpropagation), channels_first twins
(the same weights, inputs transposed) that must give the same maps, and Grad-CAM = CAM on CAMHead models.
"""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.helpers import requires_channels_first_conv
from tests.models import LAYOUT_SIZE as SIZE
from tests.models import layout_inputs as inputs, layout_model as model, layout_weights as weights

METHODS = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "scorecam", "eigencam", "cam"]


@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam"])
def test_gradient_methods_match_numpy_reference_in_1d_and_3d(rank, method):
    wts = weights(rank)
    net = model(rank, wts, head="dense")
    x = inputs(rank)
    targets = np.array([0, 2, 1])
    a, g, logits = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"],
                                                     wts["b"], targets)
    reference = {"gradcam": oracles.gradcam, "gradcam++": oracles.gradcam_pp, "hirescam": oracles.hirescam,
                 "xgradcam": oracles.xgradcam, "layercam": oracles.layercam}[method]
    result = kc.get_explainer(method, net, layer="conv1").compute(x, targets=targets)
    assert result.heatmaps.shape == (3,) + (SIZE[rank],) * rank
    np.testing.assert_allclose(result.heatmaps, oracles.finish(reference(a, g)), atol=2e-4)
    np.testing.assert_allclose(result.scores, logits[np.arange(3), targets], rtol=1e-4, atol=1e-5)


@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_upsampling_from_a_pooled_layer_and_eigencam(rank):
    wts = weights(rank, seed=3)
    net = model(rank, wts, pool=True)
    x = inputs(rank)
    # conv2 is at half the input's size; a GAP + Dense head makes Grad-CAM = ReLU(A @ w[:, t]).
    pooled = x
    for layer in net.layers[:3]:
        pooled = layer(pooled)
    feats = keras.ops.convert_to_numpy(pooled)
    expected = oracles.finish(feats @ wts["w"][:, 1], size=(SIZE[rank],) * rank)
    np.testing.assert_allclose(kc.GradCAM(net, layer="conv2")(x, targets=1), expected, atol=2e-4)
    np.testing.assert_allclose(kc.EigenCAM(net, layer="conv2")(x, targets=1),
                               oracles.finish(oracles.eigencam(feats), size=(SIZE[rank],) * rank), atol=5e-4)
    raw = kc.GradCAM(net, layer="conv2").explain(x, targets=1, upsample=False, normalize=False)
    positions = np.prod(feats.shape[1:-1])  # Grad-CAM's weights are the mean gradients, w / positions
    np.testing.assert_allclose(raw, np.maximum(feats @ wts["w"][:, 1], 0) / positions, rtol=1e-4, atol=1e-6)


@pytest.mark.channels_first
@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_channels_first_equals_its_channels_last_twin_for_every_method(rank):
    requires_channels_first_conv()
    wts = weights(rank, seed=5)
    last, first = model(rank, wts, pool=True), model(rank, wts, "channels_first", pool=True)
    x = inputs(rank)
    x_first = np.moveaxis(x, -1, 1)
    for method in METHODS:
        expected = kc.get_explainer(method, last, layer="conv2")(x, targets=[0, 1, 2])
        got = kc.get_explainer(method, first, layer="conv2")(x_first, targets=[0, 1, 2])
        assert got.shape == x.shape[:-1], method
        assert expected.std() > 0.01, method
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=method)
    # The automatic layer is found in either layout.
    assert kc.GradCAM(first).layer_ref.path == "conv2"


@pytest.mark.backends
@pytest.mark.parametrize("rank", [1, 3])
def test_gradcam_equals_cam_on_camhead_models(rank):
    wts = weights(rank, seed=7)
    net = model(rank, wts, pool=True)
    x = inputs(rank, n=4)
    cam = kc.CAM(net).compute(x, [0, 1, 2, 0])
    grad = kc.GradCAM(net, layer="conv2").compute(x, [0, 1, 2, 0])
    assert cam.heatmaps.std() > 0.05
    np.testing.assert_allclose(grad.heatmaps, cam.heatmaps, atol=2e-4)
    np.testing.assert_allclose(grad.scores, cam.scores, rtol=1e-5)
    np.testing.assert_allclose(kc.class_activation_maps(net, x, [0, 1, 2, 0]), cam.heatmaps, atol=1e-6)


@pytest.fixture
def global_channels_first():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


@pytest.mark.channels_first
@pytest.mark.backends
def test_the_global_channels_first_setting(global_channels_first):
    requires_channels_first_conv()
    wts = weights(2, seed=9)
    default = model(2, wts, data_format=None, pool=True)  # built under the setting: channels_first layers
    x = np.moveaxis(inputs(2), -1, 1)
    keras.config.set_image_data_format("channels_last")
    twin = model(2, wts, pool=True)
    expected = kc.GradCAM(twin, layer="conv2")(np.moveaxis(x, 1, -1), targets=2)
    keras.config.set_image_data_format("channels_first")
    np.testing.assert_allclose(kc.GradCAM(default, layer="conv2")(x, targets=2), expected, atol=1e-5)
    np.testing.assert_allclose(kc.ScoreCAM(default, layer="conv2")(x, targets=2),
                               kc.ScoreCAM(twin, layer="conv2")(np.moveaxis(x, 1, -1), targets=2), atol=1e-5)
    # A model built explicitly channels_last under the global setting keeps its own layout.
    np.testing.assert_allclose(kc.GradCAM(twin, layer="conv2")(np.moveaxis(x, 1, -1), targets=2), expected,
                               atol=1e-6)


def test_auto_layer_has_as_many_spatial_axes_as_the_input():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    tokens = keras.layers.Reshape((64, 4), name="tokens")(conv)  # rank 3 with a spatial-looking axis
    mixed = keras.layers.Conv1D(4, 3, padding="same", name="mix")(tokens)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D(name="gap")(mixed))
    assert kc.GradCAM(keras.Model(image, out)).layer_ref.path == "conv"
    signal = keras.Sequential([keras.Input((32, 1)), keras.layers.Conv1D(4, 5, name="c1"),
                               keras.layers.Conv1D(4, 5, name="c2"), keras.layers.GlobalAveragePooling1D(),
                               keras.layers.Dense(2)])
    assert kc.GradCAM(signal).layer_ref.path == "c2"
    with pytest.raises(ValueError, match="'gap' has output shape .* 2 spatial axes, as the input has"):
        kc.GradCAM(keras.Model(image, out), layer="gap")
    # A rank-3 layer of an image model is read as tokens on their grid: here the conv's map, row-major.
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    by_tokens = kc.GradCAM(keras.Model(image, out), layer="tokens").explain(x, upsample=False, normalize=False)
    by_conv = kc.GradCAM(keras.Model(image, out), layer="conv").explain(x, upsample=False, normalize=False)
    np.testing.assert_allclose(by_tokens, by_conv, rtol=1e-5, atol=1e-7)
    assert by_conv.shape == (2, 8, 8) and by_conv.any()
    with pytest.raises(ValueError, match=r"images must have rank 3 \(N, T, C\), got shape \(32, 1\).*\[None\]"):
        kc.GradCAM(signal).check_inputs(np.zeros((32, 1)))


@pytest.mark.channels_first
@pytest.mark.backends
def test_camhead_and_attach_cam_head_in_every_layout(tmp_path):
    requires_channels_first_conv()
    for rank in (1, 3):
        for data_format in ("channels_last", "channels_first"):
            wts = weights(rank, seed=11)
            net = model(rank, wts, data_format=data_format)
            x = inputs(rank, n=2)
            x = np.moveaxis(x, -1, 1) if data_format == "channels_first" else x
            feats = keras.ops.convert_to_numpy(net.layers[1](net.layers[0](x)))
            axes = tuple(range(2, rank + 2)) if data_format == "channels_first" else tuple(range(1, rank + 1))
            logits = feats.mean(axis=axes) @ wts["w"] + wts["b"]
            probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(net(x)), probs, rtol=1e-4, atol=1e-6)
            path = tmp_path / f"{rank}_{data_format}.keras"
            net.save(path)
            loaded = keras.saving.load_model(path)
            assert loaded.get_layer("head").data_format == data_format
            np.testing.assert_allclose(kc.class_activation_maps(loaded, x), kc.class_activation_maps(net, x),
                                       atol=1e-6)
    backbone = keras.Sequential([keras.Input((32, 1)), keras.layers.Conv1D(8, 3), keras.layers.ReLU()])
    attached = kc.attach_cam_head(backbone, 3)  # ends in ReLU: a 1-D feature map, accepted
    assert attached.output_shape == (None, 3)
    assert kc.CAM(attached)(np.random.default_rng(0).random((2, 32, 1))).shape == (2, 32)


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["signals", "volumes"])
def test_cam_snapshot_on_conv1d_and_conv3d_models(kind, tmp_path):
    import cv2

    keras.utils.set_random_seed(0)
    if kind == "signals":
        x, y, masks = kc.datasets.make_signals(16, length=64, seed=1)
        layers = [keras.layers.Conv1D(8, 5, padding="same", activation="relu"), keras.layers.MaxPooling1D(),
                  keras.layers.Conv1D(8, 5, padding="same", activation="relu", name="features")]
    else:
        x, y, masks = kc.datasets.make_volumes(8, size=16, seed=1)
        layers = [keras.layers.Conv3D(4, 3, padding="same", activation="relu"), keras.layers.MaxPooling3D(),
                  keras.layers.Conv3D(8, 3, padding="same", activation="relu", name="features")]
    net = keras.Sequential([keras.Input(x.shape[1:])] + layers + [kc.CAMHead(3)])
    net.compile("adam", "sparse_categorical_crossentropy")
    snap = kc.callbacks.CAMSnapshot(x[:3], method="cam", targets=y[:3], masks=masks[:3], output_dir=tmp_path)
    history = net.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[snap])
    assert len(history.history["cam_pointing_game"]) == 2
    frame = cv2.imread(str(tmp_path / "epoch_002.png"))
    assert frame is not None and frame.shape[1] > 3 * 64 and frame.std() > 10  # three pictures side by side
    assert {"epoch_001.png", "evolution.png", "evolution.gif"} <= {p.name for p in tmp_path.iterdir()}
    # FeatureMapSnapshot draws Conv1D / Conv3D maps too.
    maps = kc.callbacks.FeatureMapSnapshot(x[:2], layer="features", output_dir=tmp_path / "maps")
    net.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[maps])
    assert cv2.imread(str(tmp_path / "maps" / "epoch_001.png")).std() > 5


# ---------------------------------------------------------------------- AblationCAM, FullGrad and ShapleyCAM

from tests.models import layout_inputs, layout_model, layout_weights  # noqa: E402


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
