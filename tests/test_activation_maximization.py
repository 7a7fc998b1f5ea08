"""Filter visualization by gradient ascent: values, not only shapes.

Oracles: hand-set edge kernels (the pattern's stripes must follow the kernel), the filter's own activation
(a pattern must beat the same pixels shuffled), and the keras.io recipe's own `deprocess_image`.
"""
import random

import keras
import numpy as np
import pytest

from keras_cam.activation_maximization import AscentOptions, FilterVisualizer
from keras_cam.visualize import deprocess_image
from keras_cam.feature_extraction import feature_maps
from tests.conftest import classifier, conv, numpy_weights, random_images

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # responds to vertical edges


def edge_model(size=32):
    """One Conv2D + ReLU whose filter 0 detects vertical edges and filter 1 horizontal ones (any color)."""
    model = keras.Sequential([keras.Input((size, size, 3)),
                              keras.layers.Conv2D(2, 3, use_bias=False, activation="relu", name="edges",
                                                  kernel_initializer="zeros")])
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    kernel[..., 0] = SOBEL_X[:, :, None]
    kernel[..., 1] = SOBEL_X.T[:, :, None]
    model.get_layer("edges").set_weights([kernel])
    return model


def deep_model(seed=2, name="deep"):
    """conv1 (8) -> pool1 -> conv2 (8, 16x16) with numpy He-normal kernels and bias 0.1."""
    model = keras.Sequential([keras.Input((32, 32, 3)), conv(8, "conv1"),
                              keras.layers.MaxPooling2D(name="pool1"), conv(8, "conv2")], name=name)
    return numpy_weights(model, seed)


@pytest.fixture(scope="module")
def backbone():
    return deep_model()


@pytest.fixture(scope="module")
def conv2_viz(backbone):
    return FilterVisualizer(backbone, "conv2")


def interior_mean(maps, border=2):
    return maps[:, border:-border, border:-border].mean(axis=(1, 2))


@pytest.mark.backends
def test_edge_kernels_give_stripes_along_the_kernel():
    patterns = FilterVisualizer(edge_model(), "edges").visualize(filters=[0, 1])
    assert patterns.shape == (2, 32, 32, 3) and patterns.dtype == np.uint8
    grey = patterns.astype(np.float32).mean(-1)
    along_x = np.mean(np.diff(grey, axis=2) ** 2, axis=(1, 2))  # changes across columns: vertical stripes
    along_y = np.mean(np.diff(grey, axis=1) ** 2, axis=(1, 2))
    assert along_x[0] > 3 * along_y[0]  # vertical-edge detector -> vertical stripes
    assert along_y[1] > 3 * along_x[1]  # horizontal-edge detector -> horizontal stripes
    # The same seen in the spectrum: the energy sits on the axis of the kernel's derivative.
    spectrum = np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2
    f = np.abs(np.fft.fftfreq(32))
    fx_dominant = (f[None, :] > f[:, None])[None]
    share_x = (spectrum * fx_dominant).sum(axis=(1, 2)) / spectrum.sum(axis=(1, 2))
    assert share_x[0] > 0.7 and share_x[1] < 0.3


@pytest.mark.backends
def test_deeper_patterns_excite_their_filter_more_than_matched_noise(backbone, conv2_viz):
    start = conv2_viz.optimize(steps=0)  # all 8 filters: the grey start with noise
    # A filter that is zero on the whole start image has a zero gradient through its ReLU: gradient ascent
    # cannot move it (in the keras.io recipe as here). On a near-uniform grey start, about half of a random layer is.
    initial = interior_mean(feature_maps(backbone, "conv2", start))[np.arange(8), np.arange(8)]
    own = np.flatnonzero(initial > 0)
    assert len(own) >= 4
    patterns = conv2_viz.optimize(filters=own)
    gained = interior_mean(feature_maps(backbone, "conv2", patterns))[np.arange(len(own)), own]
    assert np.all(gained > 1.2 * initial[own])
    # Contrast-matched noise: the pattern's own pixels, shuffled (same histogram per channel and image).
    rng = np.random.default_rng(1)
    for _ in range(3):
        shuffled = np.stack([p.reshape(-1, 3)[rng.permutation(32 * 32)].reshape(32, 32, 3) for p in patterns])
        noise = interior_mean(feature_maps(backbone, "conv2", shuffled))[np.arange(len(own)), own]
        assert np.all(gained > 1.1 * noise), (gained, noise)


@pytest.mark.backends
def test_batched_and_one_at_a_time_agree(conv2_viz):
    together = conv2_viz.optimize(filters=[0, 1, 2, 3, 6], steps=15)  # filters active on the start image
    alone = conv2_viz.optimize(filters=[2], steps=15)
    chunked = conv2_viz.optimize(filters=[6, 2, 1], steps=15, batch_size=2)  # chunks of 2, last one padded
    np.testing.assert_allclose(alone[0], together[2], atol=1e-4)
    np.testing.assert_allclose(chunked, together[[4, 2, 1]], atol=1e-4)
    assert np.abs(together[2] - conv2_viz.optimize(filters=[2], steps=0)[0]).max() > 0.02  # it did move
    pictures = conv2_viz.visualize(filters=[0, 1, 2, 3, 6], steps=15)
    assert np.abs(pictures[2].astype(int) - conv2_viz.visualize(filters=[2], steps=15)[0]).max() <= 1


@pytest.mark.backends
def test_deterministic_and_side_effect_free(backbone, conv2_viz):
    weights = [w.copy() for w in backbone.get_weights()]
    np_state, py_state = np.random.get_state(), random.getstate()
    filters = [1, 2]
    first = conv2_viz.visualize(filters=filters, steps=5, seed=3)
    second = conv2_viz.visualize(filters=filters, steps=5, seed=3)
    other = conv2_viz.visualize(filters=filters, steps=5, seed=4)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first.astype(int) - other).mean() > 1
    assert filters == [1, 2]
    np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    for before, after in zip(weights, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.backends
def test_layer_inside_a_nested_model():
    inner = deep_model(seed=3, name="backbone")
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inner(inputs)))
    model = keras.Model(inputs, outputs)  # a Sequential backbone inside a Functional model
    nested = FilterVisualizer(model, "backbone/conv2").optimize(filters=[2, 4], steps=10)
    direct = FilterVisualizer(inner, "conv2").optimize(filters=[2, 4], steps=10)
    np.testing.assert_allclose(nested, direct, atol=1e-5)
    images = random_images(3, 32)
    np.testing.assert_allclose(feature_maps(model, "conv1", images), feature_maps(inner, "conv1", images),
                               atol=1e-6)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.conv1 = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer="zeros", name="conv1")
        self.conv2 = keras.layers.Conv2D(6, 3, activation="relu", kernel_initializer="zeros", name="conv2")
        self.head = keras.layers.Dense(2, kernel_initializer="zeros")

    def call(self, x):
        return self.head(keras.ops.mean(self.conv2(self.conv1(x)), axis=(1, 2)))


@pytest.mark.backends
def test_subclassed_model_and_one_compilation_per_shape(monkeypatch):
    import keras_cam.activation_maximization as am

    traces = []
    score = am._filter_score
    monkeypatch.setattr(am, "_filter_score", lambda *a: traces.append(1) or score(*a))
    model = Subclassed()
    model(np.zeros((1, 16, 16, 3), np.float32))
    numpy_weights(model)
    viz = FilterVisualizer(model, "conv2")
    patterns = viz.visualize(filters=range(6), size=16, steps=4, batch_size=3)  # 2 chunks of 3
    viz.visualize(filters=[5, 1, 0], size=16, steps=4)
    assert patterns.shape == (6, 16, 16, 3)
    expected = (2 + 1) * 4 if keras.backend.backend() == "torch" else 1  # torch runs eagerly: every step
    assert len(traces) == expected
    maps = feature_maps(model, "conv1", random_images(2, 16))
    assert maps.shape == (2, 14, 14, 4)


@pytest.mark.backends
def test_class_visualization_increases_the_class_logit():
    model = classifier()
    viz = FilterVisualizer(model, "probs")
    start, end = viz.optimize(filters=[0, 1, 2], steps=0), viz.optimize(filters=[0, 1, 2], steps=20)
    assert model.get_layer("probs").activation.__name__ == "softmax"  # patched only during calls
    gap = keras.Model(model.inputs[0], model.get_layer("gap").output)
    kernel, bias = model.get_layer("probs").get_weights()

    def logits(x):
        return keras.ops.convert_to_numpy(gap(x)) @ kernel + bias

    classes = np.arange(3)
    assert np.all(logits(end)[classes, classes] > logits(start)[classes, classes] + 1e-3)


def test_sizes_penalties_and_octaves():
    free = keras.Sequential([keras.Input((None, None, 1)), conv(4, "c1"), conv(4, "c2")])
    numpy_weights(free, seed=1)
    viz = FilterVisualizer(free, "c2", value_range=(0, 255))
    assert viz.visualize(filters=[0], steps=2).shape == (1, 64, 64, 3)  # free size: 64; grey -> RGB
    assert viz.visualize(filters=[0, 1], size=(20, 28), steps=2).shape == (2, 20, 28, 3)
    raw = viz.optimize(filters=[1], size=24)
    assert 0 < raw.min() and raw.max() < 255  # the 0..255 scale: grey start, step 1
    smooth = viz.optimize(filters=[1], size=24, tv_weight=10.0)

    def tv(x):
        return np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2)

    assert tv(smooth) < 0.5 * tv(raw)
    coarse = viz.optimize(filters=[1], size=24, octaves=3, steps=10)
    assert coarse.shape == (1, 24, 24, 1) and np.all(np.isfinite(coarse))
    fixed = FilterVisualizer(edge_model(), "edges")
    assert fixed.optimize(filters=[0], octaves=2, steps=3).shape == (1, 32, 32, 3)


def test_grid_progress_bar_and_deprocess(conv2_viz, capsys):
    grid = conv2_viz.grid(size=32, steps=2)  # filters=None: all 8 (fewer than 64) -> 3 columns
    assert grid.shape == (3 * 32 + 2 * 5, 3 * 32 + 2 * 5, 3) and grid.dtype == np.uint8
    assert grid[32:37].max() == 0  # black 5 px margins
    capsys.readouterr()
    conv2_viz.visualize(filters=[0], steps=2)
    assert capsys.readouterr().out == ""
    conv2_viz.visualize(filters=[0], steps=2, verbose=1)
    assert "loss" in capsys.readouterr().out

    def recipe_deprocess(x):  # verbatim from the keras.io recipe
        x -= x.mean()
        x /= (x.std() + 1e-5)
        x *= 0.1
        x += 0.5
        x = np.clip(x, 0, 1)
        x *= 255
        x = np.clip(x, 0, 255).astype("uint8")
        return x

    images = np.random.default_rng(0).normal(100, 30, (2, 8, 8, 3)).astype(np.float32)
    copy = images.copy()
    ours = deprocess_image(images)
    np.testing.assert_array_equal(images, copy)
    for i in range(2):
        assert np.abs(ours[i].astype(int) - recipe_deprocess(images[i].astype(np.float64))).max() <= 1


def test_clear_errors(backbone, conv2_viz):
    with pytest.raises(ValueError, match="out of range.*8 filters"):
        conv2_viz.visualize(filters=[3, 8])
    with pytest.raises(ValueError, match="sequence of filter indices"):
        conv2_viz.visualize(filters=3)
    with pytest.raises(ValueError, match="fixed input size 32x32"):
        conv2_viz.visualize(filters=[0], size=64)
    with pytest.raises(ValueError, match="steps"):
        conv2_viz.visualize(filters=[0], steps=-1)
    with pytest.raises(ValueError, match="Unknown ascent option 'stpes'; the options are steps, step_size"):
        conv2_viz.visualize(filters=[0], stpes=3)
    with pytest.raises(ValueError, match="value_range"):
        FilterVisualizer(backbone, "conv2", value_range=(1, 0))
    with pytest.raises(ValueError, match="not found"):
        FilterVisualizer(backbone, "conv9")
    # Too small: the layer's output would vanish, or leave nothing inside the border.
    free = keras.Sequential([keras.Input((None, None, 3)),
                             keras.layers.Conv2D(4, 3, kernel_initializer="zeros", name="c1"),
                             keras.layers.MaxPooling2D(),
                             keras.layers.Conv2D(4, 3, kernel_initializer="zeros", name="c2"),
                             keras.layers.MaxPooling2D(),
                             keras.layers.Conv2D(4, 3, kernel_initializer="ones", name="c3")])
    with pytest.raises(ValueError, match="too small"):
        FilterVisualizer(free, "c3").visualize(filters=[0], size=6)
    with pytest.raises(ValueError, match="too small.*border=2"):
        FilterVisualizer(free, "c3").visualize(filters=[0], size=24)  # c3 is 2x2
    no_border = FilterVisualizer(free, "c3").optimize(filters=[0], size=24, border=0, steps=1)
    assert no_border.shape == (1, 24, 24, 3)


def test_options_are_one_validated_frozen_dataclass():
    opts = AscentOptions.of({"steps": 3, "seed": 1})
    assert (opts.steps, opts.seed, opts.jitter, opts.border) == (3, 1, 2, 2)
    with pytest.raises(Exception):
        opts.steps = 4  # frozen
    for bad, message in [({"jitter": -1}, "`jitter` must be an integer >= 0"),
                         ({"step_size": 0}, "`step_size` must be a finite number > 0"),
                         ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
                         ({"octave_scale": float("nan")}, "`octave_scale` must be a finite number")]:
        with pytest.raises(ValueError, match=message):
            AscentOptions.of(bad)
