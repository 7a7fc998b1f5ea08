"""Layers without a `data_format` (ReLU, BatchNormalization, Add, Activation, Dropout, custom layers) take the
layout of the data they receive: every method on a channels_first network explained at such a layer equals
its channels_last twin (the same weights, inputs transposed), on Functional, Sequential, nested and subclassed
models; where the layout cannot be known, one clear error asks for `data_format=`.
"""
import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import capture, layout
from keras_cam.explainers import registry
from tests.helpers import requires_channels_first_conv

pytestmark = pytest.mark.channels_first

SIZE = 8


class Scale(keras.layers.Layer):
    """A custom layer without `data_format`: it keeps its input's layout."""

    def call(self, x):
        return x * 1.5


def _blocks(fmt):
    first = fmt == "channels_first"
    axis = 1 if first else -1
    return dict(
        conv1=keras.layers.Conv2D(6, 3, padding="same", data_format=fmt, name="conv1"),
        relu=keras.layers.ReLU(name="relu"),
        bn=keras.layers.BatchNormalization(axis=axis, name="bn"),
        conv2=keras.layers.Conv2D(6, 3, padding="same", data_format=fmt, name="conv2"),
        add=keras.layers.Add(name="add"),
        act=keras.layers.Activation("relu", name="act"),
        drop=keras.layers.Dropout(0.3, name="drop"),
        scale=Scale(name="scale"),
        gap=keras.layers.GlobalAveragePooling2D(data_format=fmt, name="gap"),
        dense=keras.layers.Dense(3, name="dense"),
    )


def _set_weights(blocks, seed=0):
    rng = np.random.default_rng(seed)
    for name in ("conv1", "conv2", "dense", "bn"):
        layer = blocks[name]
        layer.set_weights([
            (rng.normal(size=w.shape) * (0.3 if name != "bn" else 0.2) + (1.0 if name == "bn" and i in (0, 3) else 0))
            .astype("float32") if name != "bn" or i != 3 else (rng.random(w.shape) + 0.5).astype("float32")
            for i, w in enumerate(layer.get_weights())])


def functional(fmt, seed=0):
    b = _blocks(fmt)
    shape = (3, SIZE, SIZE) if fmt == "channels_first" else (SIZE, SIZE, 3)
    x = inputs = keras.Input(shape)
    x = b["relu"](b["conv1"](x))
    x = b["bn"](x)
    x = b["add"]([x, b["conv2"](x)])
    x = b["scale"](b["drop"](b["act"](x)))
    out = b["dense"](b["gap"](x))
    model = keras.Model(inputs, out, name=f"net_{fmt}")
    _set_weights(b, seed)
    return model


def images(n=3, seed=1):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3)).astype("float32")


def _explainer(name, model, layer):
    cls = registry.lookup(name)
    if name == "cam":
        pytest.skip("CAM explains a CAMHead's input")
    if name == "lrp":  # relevance passes the custom layer unchanged (it only scales)
        return kc.get_explainer(name, model, rules={"scale": kc.lrp.Pass()})
    if not getattr(cls, "uses_layer", True):
        return kc.get_explainer(name, model)
    return kc.get_explainer(name, model, layer=layer)


METHODS = [n for n in registry.available_methods() if n != "cam"]


@pytest.mark.backends
@pytest.mark.parametrize("layer", ["relu", "bn", "add"])
def test_every_method_at_a_layer_without_data_format_equals_its_channels_last_twin(layer):
    requires_channels_first_conv()
    last, first = functional("channels_last"), functional("channels_first")
    x = images()
    targets = [0, 1, 2]
    for name in METHODS:
        expected = _explainer(name, last, layer)(x, targets=targets)
        got = _explainer(name, first, layer)(np.moveaxis(x, -1, 1), targets=targets)
        assert got.shape == (3, SIZE, SIZE), name
        if name != "randomcam":  # random weights may leave a flat map; it must still agree
            assert expected.std() > 1e-3, name
        np.testing.assert_allclose(got, expected, atol=2e-4, err_msg=name)


@pytest.mark.backends
def test_layouts_are_traced_through_the_graph():
    first = functional("channels_first")
    traced = capture.graph_layouts(first)
    for name in ("relu", "bn", "add", "act", "drop", "scale", "conv1", "conv2"):
        assert traced[id(first.get_layer(name))] is True, name
    last = functional("channels_last")
    assert not any(capture.graph_layouts(last)[id(last.get_layer(n))] for n in ("relu", "bn", "add"))
    # The automatic layer of a conv -> ReLU stack is read in the data's layout, whatever the global setting.
    assert kc.GradCAM(first).layer_ref.path == "scale"
    assert kc.GradCAM(first).layer_ref.channels_first is True


@pytest.mark.backends
def test_permute_moves_the_layout_and_nested_models_take_the_outer_layout():
    requires_channels_first_conv()
    inner_in = keras.Input((SIZE, SIZE, 4))
    inner = keras.Model(inner_in, keras.layers.ReLU(name="inner_relu")(inner_in), name="inner")
    x = inputs = keras.Input((3, SIZE, SIZE))
    x = keras.layers.Conv2D(4, 3, padding="same", data_format="channels_first", name="conv")(x)
    x = keras.layers.Permute((2, 3, 1), name="to_last")(x)      # now channels_last
    x = inner(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, out)
    traced = capture.graph_layouts(model)
    assert traced[id(model.get_layer("to_last"))] is False
    assert traced[id(inner.get_layer("inner_relu"))] is False
    assert traced[id(model.get_layer("conv"))] is True
    x = np.random.default_rng(0).random((2, 3, SIZE, SIZE)).astype("float32")
    maps = kc.GradCAM(model, layer="inner/inner_relu").explain(x, targets=[0, 1], upsample=False, normalize=False)
    a = keras.ops.convert_to_numpy(kc.feature_maps(model, "inner/inner_relu", x))
    assert maps.shape == (2, SIZE, SIZE) and a.shape == (2, SIZE, SIZE, 4)


class Subclassed(keras.Model):
    def __init__(self, fmt, **kwargs):
        super().__init__(**kwargs)
        self.b = _blocks(fmt)
        for k, v in self.b.items():
            setattr(self, k, v)

    def call(self, x, training=False):
        x = self.bn(self.relu(self.conv1(x)), training=training)
        x = self.add([x, self.conv2(x)])
        return self.dense(self.gap(self.act(x)))


@pytest.mark.backends
def test_subclassed_models_read_layouts_from_the_probing_call():
    requires_channels_first_conv()
    nets = {}
    for fmt in ("channels_last", "channels_first"):
        net = Subclassed(fmt)
        net(np.zeros((1, 3, SIZE, SIZE) if fmt == "channels_first" else (1, SIZE, SIZE, 3), "float32"))
        _set_weights(net.b)
        nets[fmt] = net
    x = images()
    for layer in ("relu", "bn", "add", None):
        for name in ("gradcam", "scorecam", "layercam"):
            expected = kc.get_explainer(name, nets["channels_last"], layer=layer)(x, targets=[0, 1, 2])
            got = kc.get_explainer(name, nets["channels_first"], layer=layer)(np.moveaxis(x, -1, 1),
                                                                             targets=[0, 1, 2])
            np.testing.assert_allclose(got, expected, atol=2e-4, err_msg=f"{name} at {layer}")
    maps = kc.feature_maps(nets["channels_first"], "relu", np.moveaxis(x, -1, 1))
    np.testing.assert_allclose(maps, kc.feature_maps(nets["channels_last"], "relu", x), atol=1e-5)


@pytest.mark.backends
def test_an_unknown_layout_is_asked_for_and_data_format_gives_it():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Dense(4, name="mix")(keras.layers.Flatten()(inputs))
    x = keras.layers.Reshape((5, SIZE // 2, SIZE // 2), name="grid")(keras.layers.Dense(5 * SIZE * SIZE // 4)(x))
    x = keras.layers.ReLU(name="relu")(x)   # after a Reshape, no layer says where the channels are
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, out)
    x = images(2)
    with pytest.raises(ValueError, match="has no data_format of its own.*Pass data_format="):
        kc.GradCAM(model, layer="relu").explain(x, targets=[0, 1], upsample=False)
    first = kc.GradCAM(model, layer="relu", data_format="channels_first").explain(x, targets=[0, 1],
                                                                                  upsample=False, normalize=False)
    last = kc.GradCAM(model, layer="relu", data_format="channels_last").explain(x, targets=[0, 1],
                                                                                upsample=False, normalize=False)
    assert first.shape == (2, SIZE // 2, SIZE // 2) and last.shape == (2, 5, SIZE // 2)
    with pytest.raises(ValueError, match="Pass data_format="):
        kc.feature_maps(model, "relu", x)
    a = kc.feature_maps(model, "relu", x, data_format="channels_first")   # (N, 5, 4, 4) read channels first
    assert a.shape == (2, SIZE // 2, SIZE // 2, 5)
    # Grad-CAM's raw map with a linear head after the layer: ReLU(sum_c mean(dy/dA_c) A_c), channels on axis 1.
    np.testing.assert_allclose(first.sum(axis=(1, 2)) >= 0, True)


@pytest.mark.backends
def test_data_format_that_contradicts_the_layer_is_refused():
    model = functional("channels_last")
    with pytest.raises(ValueError, match="has data_format='channels_last' of its own"):
        kc.GradCAM(model, layer="conv2", data_format="channels_first")
    with pytest.raises(ValueError, match="`data_format` must be None"):
        kc.GradCAM(model, data_format="NCHW")


def test_layer_layout_of_a_bare_layer_without_data_format_raises_ours():
    with pytest.raises(layout.LayoutError, match="Pass data_format="):
        layout.layer_layout(keras.layers.ReLU(name="r"), 4)


@pytest.fixture
def image_data_format():
    before = keras.config.image_data_format()
    yield keras.config.set_image_data_format
    keras.config.set_image_data_format(before)


@pytest.mark.backends
def test_a_change_of_image_data_format_takes_effect_on_the_next_call(image_data_format):
    # No layer has a data_format: the input's layout (and so every layer's) is Keras' global setting.
    inputs = keras.Input((4, 6, 6))
    x = keras.layers.ReLU(name="relu")(inputs)
    out = keras.layers.Dense(2, name="dense")(keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=(1, 2)))(x))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).random((2, 4, 6, 6)).astype("float32")
    image_data_format("channels_last")
    last = kc.GradCAM(model, layer="relu").explain(x, targets=[0, 1], upsample=False, normalize=False)
    image_data_format("channels_first")
    first = kc.GradCAM(model, layer="relu").explain(x, targets=[0, 1], upsample=False, normalize=False)
    assert last.shape == (2, 4, 6) and first.shape == (2, 6, 6)


@pytest.mark.backends
def test_the_cache_key_holds_keras_global_settings(image_data_format):
    from keras_cam._batching import CACHE, settings_key

    image_data_format("channels_last")
    key = settings_key()
    image_data_format("channels_first")
    assert settings_key() != key
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        assert settings_key()[1] == "mixed_float16"
    finally:
        keras.config.set_dtype_policy(policy)
    model = functional("channels_last")
    x = images(2)
    kc.clear_cache()
    previous = kc.set_cache_size(64)  # nothing evicted during the test
    try:
        kc.GradCAM(model, layer="conv2")(x)
        before = len(CACHE)
        kc.GradCAM(model, layer="conv2")(x)
        assert len(CACHE) == before  # same settings: the function is shared
        image_data_format("channels_last")
        kc.GradCAM(model, layer="conv2")(x)
        assert len(CACHE) == before + 1  # another global setting: another function
    finally:
        kc.set_cache_size(previous)


@pytest.mark.backends
def test_an_option_a_method_adds_is_part_of_the_cache_key():
    class PowerCAM(kc.GradCAM):  # a user's method (no `name`: not registered)
        def __init__(self, model, layer=None, *, power=1, **options):
            super().__init__(model, layer, **options)
            self.power = power

        def get_cam_weights(self, activations, grads, targets):
            return keras.ops.mean(grads, axis=(1, 2)) ** self.power

    model = functional("channels_last")
    x = images(2)
    one = PowerCAM(model, "conv2", power=1).explain(x, targets=[0, 1], normalize=False)
    three = PowerCAM(model, "conv2", power=3).explain(x, targets=[0, 1], normalize=False)
    assert not np.allclose(one, three)


@pytest.mark.backends
def test_attach_cam_head_on_a_channels_first_relu_reads_it_channels_first():
    requires_channels_first_conv()
    backbone = functional("channels_first")
    model = kc.attach_cam_head(backbone, 4, feature_layer="relu")
    from keras_cam.layers import find_cam_head

    head = find_cam_head(model)
    assert head.data_format == "channels_first"
    # Positive class weights (the head's own are random: a class with no positive evidence has a flat map).
    kernel = np.random.default_rng(0).uniform(0.1, 1.0, tuple(head.dense.kernel.shape)).astype("float32")
    head.dense.set_weights([kernel, np.zeros(4, "float32")])
    x = np.moveaxis(images(2), -1, 1)
    assert model(x).shape == (2, 4)
    cams = kc.class_activation_maps(model, x, targets=[0, 1])
    assert cams.shape == (2, SIZE, SIZE) and np.ptp(cams) > 0.1


@pytest.mark.backends
def test_tokens_reshaped_to_their_grid_are_channels_last_and_other_reshapes_unknown():
    inputs = keras.Input((SIZE, SIZE, 3))
    tokens = keras.layers.Reshape((SIZE * SIZE, 3), name="tokens")(inputs)
    tokens = keras.layers.Dense(6, name="mix")(tokens)                      # (N, L, D)
    grid = keras.layers.Reshape((SIZE, SIZE, 6), name="grid")(tokens)       # D stays last: channels_last
    scrambled = keras.layers.Reshape((6, SIZE, SIZE), name="scrambled")(tokens)  # D no longer on an axis
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([keras.layers.Flatten()(grid),
                                                            keras.layers.Flatten()(scrambled)]))
    model = keras.Model(inputs, out)
    traced = capture.graph_layouts(model)
    assert traced[id(model.get_layer("grid"))] is False
    assert traced[id(model.get_layer("scrambled"))] is None
