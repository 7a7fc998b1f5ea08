"""CAMHead, attach_cam_head, find_cam_head and class_activation_maps: values, serialization, errors."""
import cv2
import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.layers import find_cam_head
from tests.models import random_images, tiny_backbone, tiny_cam_model


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


# ------------------------------------------------------------------------------------------------- CAMHead


@pytest.mark.backends
@pytest.mark.parametrize("activation, fn", [
    ("softmax", np_softmax), (None, lambda z: z), ("linear", lambda z: z), ("sigmoid", np_sigmoid),
])
def test_camhead_equals_gap_dense(activation, fn):
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).normal(size=(4, 5, 6, 7)).astype("float32")
    head = kc.CAMHead(3, activation=activation, bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(head(x))
    w, b = np.array(head.kernel), np.array(head.bias)
    assert w.shape == (7, 3) and b.shape == (3,) and np.abs(b).max() > 0
    np.testing.assert_allclose(out, fn(x.mean(axis=(1, 2)) @ w + b), rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32
    assert head.compute_output_shape((None, 5, 6, 7)) == (None, 3)


def test_camhead_config_round_trip():
    head = kc.CAMHead(4, activation="sigmoid", kernel_regularizer="l2", bias_initializer="ones", name="h")
    config = head.get_config()
    assert config["num_classes"] == 4 and config["activation"] == "sigmoid"
    clone = kc.CAMHead.from_config(config)
    assert clone.get_config() == config
    assert clone.activation is keras.activations.sigmoid
    x = random_images(2, size=5, channels=6)
    head(x), clone(x)
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(head(x)))
    # The registered name lets keras.layers.deserialize find the class without custom_objects.
    again = keras.layers.deserialize(keras.layers.serialize(head))
    assert isinstance(again, kc.CAMHead) and again.num_classes == 4


def test_camhead_rejects_non_spatial_input_and_bad_num_classes():
    with pytest.raises(ValueError, match="CAMHead needs a spatial feature map.*before any Flatten"):
        kc.CAMHead(3)(keras.Input((10,)))
    for bad in (0, -2, 2.5, "3", True):
        with pytest.raises(ValueError, match="num_classes"):
            kc.CAMHead(bad)


def test_camhead_mixed_precision_outputs_float32(mixed_precision):
    model = tiny_cam_model(kind="sequential")
    head = model.get_layer("cam_head")
    assert head.compute_dtype == "float16" and head.dense.compute_dtype == "float16"
    assert head.kernel.dtype == "float32"  # variables stay float32 under mixed precision
    out = model(random_images(3))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out).sum(axis=-1), 1.0, atol=1e-6)


# --------------------------------------------------------------------------------------- saving and loading


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["sequential", "functional", "nested"])
def test_keras_file_round_trip_keeps_predictions_and_cams(tmp_path, kind):
    model = tiny_cam_model(kind=kind, num_classes=3, seed=2)
    x = random_images(4, seed=3)
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: CAMHead is registered
    assert isinstance(find_cam_head(loaded), kc.CAMHead)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(kc.class_activation_maps(loaded, x, targets=[0, 1, 2, 0]),
                               kc.class_activation_maps(model, x, targets=[0, 1, 2, 0]), atol=1e-6)


# ----------------------------------------------------------------------------------------- attach_cam_head


@pytest.mark.backends
def test_attach_cam_head_on_sequential_and_functional_backbones():
    seq = tiny_backbone(seed=4)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="fconv")(inputs)
    func = keras.Model(inputs, keras.layers.MaxPooling2D()(x), name="func_backbone")
    imgs = random_images(2)
    for backbone, channels in ((seq, 8), (func, 5)):
        before = weights_of(backbone)
        features_before = keras.ops.convert_to_numpy(backbone(imgs))
        model = kc.attach_cam_head(backbone, 4, activation="sigmoid")
        assert model.name == f"{backbone.name}_cam"
        assert model.output_shape == (None, 4)
        head = find_cam_head(model)
        assert head.kernel.shape == (channels, 4) and head.activation is keras.activations.sigmoid
        # The head sees exactly the backbone's features, so the output is sigmoid(GAP(features) W + b).
        want = np_sigmoid(features_before.mean(axis=(1, 2)) @ np.array(head.kernel) + np.array(head.bias))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(imgs)), want, rtol=1e-5, atol=1e-6)
        # The backbone is unchanged: same weights, same output, same layers.
        for a, b in zip(before, weights_of(backbone)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(backbone(imgs)), features_before)
        assert not any(isinstance(l, kc.CAMHead) for l in backbone.layers)


def test_attach_cam_head_on_nested_mobilenetv2():
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
    before = weights_of(backbone)
    n_layers = len(backbone.layers)
    model = kc.attach_cam_head(backbone, 5, name="mnv2_cam")
    assert model.name == "mnv2_cam" and model.output_shape == (None, 5)
    assert model.layers[1] is backbone  # nested, not rebuilt
    assert find_cam_head(model).kernel.shape == (1280, 5)
    x = random_images(2, size=64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)).sum(axis=-1), 1.0, atol=1e-5)
    assert len(backbone.layers) == n_layers
    for a, b in zip(before, weights_of(backbone)):
        np.testing.assert_array_equal(a, b)
    cams = kc.class_activation_maps(model, x)
    assert cams.shape == (2, 64, 64) and cams.dtype == np.float32

    # feature_layer: the head goes on an inner layer of the (Functional) backbone, by name or by object.
    inner = kc.attach_cam_head(backbone, 5, feature_layer="block_13_expand_relu")
    assert find_cam_head(inner).kernel.shape == (576, 5)
    by_object = kc.attach_cam_head(backbone, 5, feature_layer=backbone.get_layer("block_13_expand_relu"))
    assert find_cam_head(by_object).kernel.shape == (576, 5)
    with pytest.raises(ValueError, match="'block_13_expand_rel' not found.*'block_13_expand_relu'"):
        kc.attach_cam_head(backbone, 5, feature_layer="block_13_expand_rel")
    # A name inside a nested backbone: say which model to pass instead.
    outer = keras.Sequential([keras.Input((64, 64, 3)), backbone], name="outer")
    with pytest.raises(ValueError, match="inside the nested model 'mobilenetv2_1.00_64'"):
        kc.attach_cam_head(outer, 5, feature_layer="block_13_expand_relu")


def test_attach_cam_head_feature_layer_on_sequential():
    backbone = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(2, name="fc"),
    ])
    model = kc.attach_cam_head(backbone, 3, feature_layer="c2")
    assert find_cam_head(model).kernel.shape == (6, 3)
    assert model.get_layer("c2") is backbone.get_layer("c2")  # shared, not copied
    assert kc.class_activation_maps(model, random_images(2)).shape == (2, 16, 16)


def test_attach_cam_head_errors():
    pooled = keras.applications.MobileNetV2(weights=None, include_top=False, pooling="avg",
                                            input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"output shape \(None, 1280\), which is not a spatial.*"
                                         r"include_top=False, pooling=None.*feature_layer="):
        kc.attach_cam_head(pooled, 3)
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="not found in backbone 'backbone'. Did you mean 'conv2'"):
        kc.attach_cam_head(backbone, 3, feature_layer="conv_2")
    with pytest.raises(ValueError, match="is not a layer of backbone"):
        kc.attach_cam_head(backbone, 3, feature_layer=keras.layers.Conv2D(2, 3))
    with pytest.raises(ValueError, match="feature_layer"):
        kc.attach_cam_head(backbone, 3, feature_layer=3)
    with_gap = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(name="gap")])
    with pytest.raises(ValueError, match="'gap' has output shape.*not a spatial feature map"):
        kc.attach_cam_head(with_gap, 3, feature_layer="gap")
    no_input = keras.Sequential([keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="no defined inputs.*keras.Input"):
        kc.attach_cam_head(no_input, 3)
    with pytest.raises(ValueError, match="must be a keras.Model"):
        kc.attach_cam_head(keras.layers.Conv2D(2, 3), 3)


# ------------------------------------------------------------------------------------------- find_cam_head


@pytest.mark.backends
def test_find_cam_head_in_nested_models():
    inner = tiny_cam_model(kind="functional")
    outer = keras.Sequential([keras.Input((16, 16, 3)), inner], name="outer")
    outer2 = keras.Sequential([keras.Input((16, 16, 3)), outer], name="outer2")
    assert find_cam_head(outer2) is inner.get_layer("cam_head")
    assert find_cam_head(inner.get_layer("cam_head")) is inner.get_layer("cam_head")
    nested = tiny_cam_model(kind="nested")
    assert find_cam_head(nested) is nested.layers[-1]
    # Several heads: the last one in layer order (nearest the output).
    first, last = kc.CAMHead(2, name="first"), kc.CAMHead(3, name="last")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, [first(inputs), last(inputs)])
    assert find_cam_head(model) is last


@pytest.mark.backends
def test_find_cam_head_error_names_camhead_and_the_fix():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)], name="plain")
    msg = r"Model 'plain' has no CAMHead layer; add one with kc.CAMHead\(num_classes\).*kc.GradCAM"
    with pytest.raises(ValueError, match=msg):
        find_cam_head(model)
    with pytest.raises(ValueError, match=msg):
        kc.class_activation_maps(model, random_images(1, size=8))


# ------------------------------------------------------------------------------------ class_activation_maps


def cam_oracle(features, kernel, classes, size):
    """Seed 001 in numpy: M_c = sum_k w_k^c f_k, ReLU, bilinear upsampling (cv2), per-image min-max."""
    out = []
    for f, c in zip(features, classes):
        m = np.maximum(np.einsum("hwk,k->hw", f, kernel[:, c]), 0)
        m = np.maximum(cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR), 0)
        out.append((m - m.min()) / (m.max() - m.min()))
    return np.stack(out).astype("float32")


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["sequential", "nested"])
def test_class_activation_maps_match_numpy_formula(kind):
    model = tiny_cam_model(input_shape=(20, 24, 3), num_classes=4, kind=kind, seed=5)
    head = find_cam_head(model)
    # Larger biases and kernel values make the classes differ; set them through the public variables.
    rng = np.random.default_rng(6)
    head.kernel.assign(rng.normal(size=head.kernel.shape).astype("float32"))
    x = random_images(5, size=24, seed=7)[:, :20].copy()  # (5, 20, 24, 3): non-square input
    # The CAMHead's input: everything before the head (for "nested", the backbone model).
    if kind == "nested":
        features = keras.ops.convert_to_numpy(model.layers[1](x))
    else:
        features = x
        for layer in model.layers[:-1]:
            features = layer(features)
        features = keras.ops.convert_to_numpy(features)
    assert features.shape == (5, 10, 12, 8)
    kernel = np.array(head.kernel)
    x_copy = x.copy()

    targets = [0, 1, 2, 3, 1]
    cams = kc.class_activation_maps(model, x, targets=targets)
    assert cams.shape == (5, 20, 24) and cams.dtype == np.float32
    np.testing.assert_allclose(cams, cam_oracle(features, kernel, targets, (20, 24)), atol=1e-4)
    predicted = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1)
    np.testing.assert_allclose(kc.class_activation_maps(model, x), cam_oracle(features, kernel, predicted,
                                                                              (20, 24)), atol=1e-4)
    np.testing.assert_allclose(kc.class_activation_maps(model, x, targets=2),
                               cam_oracle(features, kernel, [2] * 5, (20, 24)), atol=1e-4)
    np.testing.assert_array_equal(x, x_copy)  # the caller's images are untouched
    # Averaging M_c over locations gives back the logit: S_c = mean_{x,y} M_c(x, y) + b_c.
    logits = features.mean(axis=(1, 2)) @ kernel + np.array(head.bias)
    np.testing.assert_allclose(np_softmax(logits), keras.ops.convert_to_numpy(model(x)), rtol=1e-4, atol=1e-6)


@pytest.mark.backends
def test_class_activation_maps_bad_inputs():
    model = tiny_cam_model(num_classes=3)
    good = random_images(2)
    cases = [
        (good[0], "rank 4.*images\\[None\\]"),
        (random_images(2, channels=1), "channels 1 but the model expects 3"),
        (good[:0], "empty batch"),
    ]
    for images, match in cases:
        kept = images.copy()
        with pytest.raises(ValueError, match=match):
            kc.class_activation_maps(model, images)
        np.testing.assert_array_equal(images, kept)
    nan = good.copy()
    nan[1, 3, 3, 0] = np.nan
    kept = nan.copy()
    with pytest.raises(ValueError, match="NaN"):
        kc.class_activation_maps(model, nan)
    np.testing.assert_array_equal(nan, kept)
    with pytest.raises(ValueError, match="Target index 3 is out of range.*3 classes"):
        kc.class_activation_maps(model, good, targets=3)
    with pytest.raises(ValueError, match="Target index -1 is out of range"):
        kc.class_activation_maps(model, good, targets=[0, -1])
    with pytest.raises(ValueError, match="one per image"):
        kc.class_activation_maps(model, good, targets=[0, 1, 2])
    np.testing.assert_array_equal(good, random_images(2))


def test_a_saved_camhead_model_loads_after_a_plain_import_keras_cam(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), kc.CAMHead(2)]).save(path)
    # A fresh process: `import keras_cam` does not import Keras, yet CAMHead is registered once Keras is.
    code = ("import sys, keras_cam; assert 'keras' not in sys.modules; import keras; "
            f"print(type(keras.saving.load_model({str(path)!r}).layers[-1]).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "CAMHead"
