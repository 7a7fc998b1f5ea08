"""capture.py: finding layers in any model, intercepting calls, the truncated forward and the logits patch."""
import keras
import numpy as np
import pytest

from keras_cam import capture
from tests.models import random_images


def nested_model():
    """Functional model holding a Sequential backbone (conv1, pool1, conv2) and a softmax head."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((8, 8, 3)),
                                 keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1"),
                                 keras.layers.MaxPooling2D(name="pool1"),
                                 keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")],
                                name="backbone")
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(3, 1, name="conv1")(inputs)  # same bare name as a layer inside the backbone
    x = backbone(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="outer"), backbone


class Holder(keras.layers.Layer):
    """A custom layer that holds layers as attributes (Model.layers does not list them)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="inner_dense")

    def call(self, x):
        return self.inner(x)


class Sub(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.holder = Holder(name="holder")
        self.out = keras.layers.Dense(3, activation="sigmoid", name="out")

    def call(self, x):
        return self.out(self.holder(self.gap(self.conv(x))))


def test_paths_names_and_objects():
    model, backbone = nested_model()
    paths = [ref.path for ref in capture.iter_layers(model)]
    assert paths[:5] == ["conv1", "backbone", "backbone/conv1", "backbone/pool1", "backbone/conv2"]
    assert capture.find_layer(model, "backbone/conv1").layer is backbone.get_layer("conv1")
    assert capture.find_layer(model, "conv1").layer is model.get_layer("conv1")  # the outermost bare name
    assert capture.find_layer(model, "conv2").path == "backbone/conv2"
    assert capture.find_layer(model, backbone.get_layer("pool1")).path == "backbone/pool1"
    assert capture.find_layer(model).path == "backbone/conv2"  # the last spatial layer, nested included
    assert [r.path for r in capture.spatial_layers(model)] == ["conv1", "backbone/conv1", "backbone/pool1",
                                                               "backbone/conv2"]
    with pytest.raises(ValueError, match=r"'conv3' not found in model 'outer'; did you mean .*conv"):
        capture.find_layer(model, "conv3")
    with pytest.raises(ValueError, match="not part of model 'outer'"):
        capture.find_layer(model, keras.layers.Dense(1))
    with pytest.raises(ValueError, match=r"'head' has output shape \(None, 2\).*not a spatial"):
        capture.find_layer(model, "head")


@pytest.mark.backends
def test_intercept_records_replaces_and_restores():
    model, backbone = nested_model()
    conv2 = backbone.get_layer("conv2")
    x = random_images(2, 8)
    before = dict(conv2.__dict__)
    with capture.recording(conv2) as recorded:
        out = keras.ops.convert_to_numpy(model(x))
    expected = x
    for layer in [model.get_layer("conv1")] + backbone.layers:  # the layers applied by hand, in order
        expected = layer(expected)
    expected = keras.ops.convert_to_numpy(expected)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(recorded[0]), expected, rtol=1e-5, atol=1e-6)
    # A replacement flows on: zeroed features give the head's bias alone, softmax(b).
    with capture.intercept(conv2, lambda t: t * 0.0):
        zeroed = keras.ops.convert_to_numpy(model(x))
    b = model.get_layer("head").get_weights()[1]
    np.testing.assert_allclose(zeroed, np.tile(np.exp(b) / np.exp(b).sum(), (2, 1)), rtol=1e-5)
    with pytest.raises(RuntimeError, match="boom"):
        with capture.intercept(conv2, lambda t: (_ for _ in ()).throw(RuntimeError("boom"))):
            model(x)
    assert conv2.__dict__ == before and "call" not in conv2.__dict__
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), out, rtol=1e-6)
    # The input side: the head's input is the pooled features.
    with capture.recording(model.get_layer("head"), on="input") as pooled:
        model(x)
    assert tuple(pooled[0].shape) == (2, 4)


@pytest.mark.backends
def test_forward_to_stops_after_the_layer():
    calls = []

    class Spy(keras.layers.Layer):
        def call(self, x):
            calls.append(1)
            return x

    inputs = keras.Input((6, 6, 3))
    hidden = keras.layers.Conv2D(2, 3, name="c")(inputs)
    model = keras.Model(inputs, Spy(name="spy")(hidden))
    x = random_images(2, 6)
    calls.clear()
    a = capture.forward_to(model, model.get_layer("c"), x)
    assert calls == []  # the layer behind was never run
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a),
                               keras.ops.convert_to_numpy(model.get_layer("c")(x)), rtol=1e-6)
    unused = keras.layers.Dense(1, name="unused")
    with pytest.raises(capture.CaptureError, match="'unused' was not called"):
        capture.forward_to(model, unused, x)


@pytest.mark.backends
def test_logits_patch_on_graph_and_subclassed_models():
    model, _ = nested_model()
    x = random_images(3, 8)
    probs = keras.ops.convert_to_numpy(model(x))
    assert [layer.name for layer in capture.logit_layers(model)] == ["head"]
    with capture.logits(model):
        z = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(np.exp(z) / np.exp(z).sum(-1, keepdims=True), probs, rtol=1e-5)
    assert model.get_layer("head").activation is keras.activations.softmax  # restored
    sub = Sub()
    sub(x)
    # No graph: the sigmoid layer is accepted only because removing it verifiably gives the logits.
    assert [layer.name for layer in capture.logit_layers(sub, x)] == ["out"]
    assert capture.logit_layers(sub) == []  # without a sample it cannot be verified
    softmax_layer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax()])
    with capture.logits(softmax_layer):
        raw = keras.ops.convert_to_numpy(softmax_layer(np.ones((1, 4), "float32")))
    assert not np.allclose(raw.sum(), 1.0)


@pytest.mark.backends
def test_shapes_units_and_walking():
    model, _ = nested_model()
    assert capture.input_shape(model) == (8, 8, 3)
    assert capture.output_units(model) == 2
    sub = Sub()
    x = random_images(1, 8)
    sub(x)
    assert capture.output_units(sub) is None and capture.output_units(sub, x) == 3  # seen by running it
    assert capture.input_shape(sub) == (8, 8, 3)  # the shape it was built with
    walked = [layer.name for layer in capture.walk_layers(sub)]
    assert "inner_dense" in walked and walked.index("holder") < walked.index("inner_dense")
    a, b = keras.Input((4, 4, 3)), keras.Input((2,))
    multi = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(a), b])))
    with pytest.raises(ValueError, match="has 2 inputs"):
        capture.input_shape(multi)
    seq = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Conv2D(2, 3)])
    assert [tuple(t.shape) for t in capture.graph_tensors(seq, "outputs")] == [(None, 3, 3, 2)]


# ----------------------------------------------------------------------------------- a layer that runs twice

import keras_cam as kc  # noqa: E402
from tests.models import images  # noqa: E402


@pytest.mark.backends
def test_a_layer_that_runs_twice_is_refused_not_explained_by_its_last_call():
    keras.utils.set_random_seed(0)  # the same random weights on every run
    shared = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="shared")
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="after")(shared(shared(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features)))
    x = images(n=2, size=8)
    for method in (kc.GradCAM, kc.ScoreCAM, kc.LayerCAM, kc.AblationCAM):
        with pytest.raises(ValueError, match=r"^Layer 'shared' runs 2 times in one forward pass \(a layer "
                                             r".*Explain a layer that runs once"):
            method(model, layer="shared")(x)
    # FullGrad takes no layer: it says why it cannot explain this model, not to pick another layer.
    with pytest.raises(ValueError, match=r"^Layer 'shared' runs 2 times .*FullGrad adds the bias gradients"):
        kc.FullGrad(model)(x)
    maps = kc.GradCAM(model, layer="after")(x)  # a layer that runs once
    assert maps.shape == (2, 8, 8) and np.ptp(maps) > 0
