"""Filter visualization by gradient ascent: values, not only shapes.

Oracles: hand-set kernels (a vertical-edge detector must give vertical stripes, a red-vertical-bar detector
red vertical bars), the filter's own activation (a pattern must beat the same pixels shuffled), numpy's
`irfft2` for the Fourier parameterization, OpenCV's `warpAffine` and `np.roll` for the transforms, hand
computations for the objectives, the previous ascent written out in numpy for `param="pixel",
transforms=()`, and the keras.io recipe's own `deprocess_image`.
"""
import doctest
import importlib
import random

import cv2
import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import backend as seam
from keras_cam.activation_maximization import (AscentOptions, Channel, Direction, Diversity, FilterVisualizer,
                                               Jitter, Neuron, Rotate, Scale, Sum)
from keras_cam.activation_maximization.parameterization import (COLOR_BASIS, FourierImage, irfft2,
                                                                 spectrum_scale)
from keras_cam.activation_maximization.transforms import DEFAULT_TRANSFORMS, resample, sample_matrix
from keras_cam.feature_extraction import feature_maps
from keras_cam.visualize import deprocess_image
from tests.models import classifier, conv, numpy_weights, random_images

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # responds to vertical edges
PIXEL = {"param": "pixel", "transforms": ()}  # the ascent before the Fourier default


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


def bar_model(size=32):
    """Filter 0 detects a red vertical bar one pixel wide, filter 1 a green horizontal one (weights by hand).

    The bar's column counts +1 for red and -0.5 for green and blue (it must be red, not white); the other
    four columns count -0.25 for red, so a uniform red area, a red horizontal bar and a white bar all add 0
    to the bias. The bias, 3, keeps the unit open on the grey start (2.5 below it), and squaring the ReLU
    makes a layer's mean favour strong responses in places over a uniform colour.
    """
    def relu_squared(x):
        return keras.ops.square(keras.ops.relu(x))

    model = keras.Sequential([keras.Input((size, size, 3)),
                              keras.layers.Conv2D(2, 5, activation=relu_squared, name="bars",
                                                  kernel_initializer="zeros")])
    vertical = np.zeros((5, 5, 3), np.float32)
    vertical[:, :, 0] = -0.25
    vertical[:, 2] = (1.0, -0.5, -0.5)
    horizontal = np.transpose(vertical, (1, 0, 2))[..., [1, 0, 2]]  # the same turned and green
    kernel = np.stack([vertical, horizontal], axis=-1)
    model.get_layer("bars").set_weights([kernel, np.full(2, 3.0, np.float32)])
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


def tv(x):
    return np.mean(np.diff(x, axis=1) ** 2) + np.mean(np.diff(x, axis=2) ** 2)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


# -- the Fourier parameterization and the transforms ----------------------------------------------------


@pytest.mark.backends
def test_fourier_inverse_is_numpys_irfft2():
    rng = np.random.default_rng(0)
    for hw in [(8, 8), (7, 10), (12, 9)]:
        shape = (2, 3, hw[0], hw[1] // 2 + 1)
        spectrum = rng.normal(size=shape) + 1j * rng.normal(size=shape)
        got = to_numpy(irfft2(spectrum.real.astype(np.float32), spectrum.imag.astype(np.float32), hw))
        np.testing.assert_allclose(got, np.fft.irfft2(spectrum, s=hw), atol=1e-5)
    # A known spectrum gives the known image: one cosine of 2 cycles along x, amplitude 1.
    known = np.zeros((6, 5), np.complex64)
    known[0, 2] = 8 * 6 / 2  # H * W / 2: irfft2's normalization and the conjugate half
    image = to_numpy(irfft2(known.real[None], known.imag[None], (6, 8)))[0]
    np.testing.assert_allclose(image, np.tile(np.cos(2 * np.pi * 2 * np.arange(8) / 8), (6, 1)), atol=1e-5)
    # The whole decode: 1/f**decay scale, colour basis, sigmoid into the value range.
    param = FourierImage((-1.0, 3.0), (6, 8), 3)
    coefficients = rng.normal(size=(2, 2, 3, 5, 6)).astype(np.float32)  # kept transposed: (.., W // 2 + 1, H)
    spectrum = np.swapaxes(coefficients[:, 0] + 1j * coefficients[:, 1], -1, -2)
    scaled = spectrum * spectrum_scale((6, 8), param.decay)
    rgb = np.einsum("nchw,kc->nhwk", np.fft.irfft2(scaled, s=(6, 8)), COLOR_BASIS)
    np.testing.assert_allclose(to_numpy(param.decode(coefficients)), -1 + 4 / (1 + np.exp(-rgb)), atol=1e-5)
    assert spectrum_scale((6, 8), 1.0)[0, 1] == pytest.approx(np.sqrt(48) * 8)  # 1 / (1/8 cycles per pixel)


@pytest.mark.backends
def test_resample_is_roll_for_whole_pixels_and_opencv_bilinear_otherwise():
    images = random_images(2, 12)
    images = np.concatenate([images, images[:, :, :2]], axis=2)  # 12x14: not square
    shift = sample_matrix((), np.random.default_rng(0), (12, 14), shift=(-3, 5))
    np.testing.assert_array_equal(to_numpy(resample(images, shift)), np.roll(images, (-3, 5), axis=(1, 2)))
    rng = np.random.default_rng(1)
    transforms = (Jitter(2), Scale(0.7, 1.4), Rotate(30))
    for _ in range(3):
        matrix = sample_matrix(transforms, rng, (12, 14))
        cv = matrix[::-1, [1, 0, 2]]  # OpenCV's (x, y) order
        expected = np.stack([cv2.warpAffine(x, cv, (14, 12), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                            borderMode=cv2.BORDER_WRAP) for x in images])
        # OpenCV's interpolation weights have 5 bits: 1/32 of a neighbour difference (<= 1) at most.
        np.testing.assert_allclose(to_numpy(resample(images, matrix)), expected, atol=1 / 32)


class _Draws:
    """A stand-in for a numpy Generator that draws the given values."""

    def __init__(self, value):
        self.value = value

    def uniform(self, low, high):
        return self.value

    def integers(self, low, high, size):
        return np.full(size, self.value)


def test_transforms_act_about_the_centre():
    image = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    turned = resample(image, sample_matrix([Rotate(90)], _Draws(90.0), (5, 5)))
    np.testing.assert_allclose(to_numpy(turned)[0, ..., 0], np.rot90(image[0, ..., 0]), atol=1e-5)
    zoomed = to_numpy(resample(image, sample_matrix([Scale(2, 2)], np.random.default_rng(0), (5, 5))))
    np.testing.assert_allclose(zoomed[0, 2, 2, 0], 12.0)  # the centre stays; neighbours move in by half
    np.testing.assert_allclose(zoomed[0, 2, 4, 0], 13.0)
    shifted = resample(image, sample_matrix([Jitter(1)], _Draws(1), (5, 5)))
    np.testing.assert_array_equal(to_numpy(shifted), np.roll(image, (1, 1), axis=(1, 2)))
    assert AscentOptions.of({}).transforms == DEFAULT_TRANSFORMS == (Jitter(), Scale(0.9, 1.1), Rotate(10.0))
    spec = ["jitter", ("scale", 0.8, 1.2), ("rotate", {"degrees": 5}), Jitter(3)]
    named = AscentOptions.of({"transforms": spec})
    assert named.transforms == (Jitter(), Scale(0.8, 1.2), Rotate(5.0), Jitter(3))
    for off in (None, (), []):
        assert AscentOptions.of({"transforms": off}).transforms == ()


@pytest.mark.backends
def test_docstring_examples_run():
    for name in ("objectives", "parameterization", "transforms"):
        module = importlib.import_module(f"keras_cam.activation_maximization.{name}")
        failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert attempted > 0 and failures == 0, name


# -- objectives ----------------------------------------------------------------------------------------


@pytest.mark.backends
def test_objective_values_against_hand_computations():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 7, 6, 5)).astype(np.float32)
    index = np.array([0, 3, 3, 1], np.int32)
    rows = np.arange(4)
    channel = a[rows, 2:-2, 2:-2, index].mean(axis=(1, 2))
    np.testing.assert_allclose(to_numpy(Channel()(a, index, 2)), channel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(Channel(border=1)(a, index, 2)),
                               a[rows, 1:-1, 1:-1, index].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    neuron = a[rows, 3, 3, index]  # the centre of a 7x6 map: (7 // 2, 6 // 2)
    np.testing.assert_allclose(to_numpy(Neuron()(a, index, 2)), neuron, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_numpy(Neuron((1, 4))(a, index)), a[rows, 1, 4, index], rtol=1e-6, atol=1e-6)
    vectors = rng.normal(size=(2, 5))
    direction = np.einsum("nhwc,nc->nhw", a, vectors[index % 2])[:, 2:-2, 2:-2].mean(axis=(1, 2))
    np.testing.assert_allclose(to_numpy(Direction(vectors)(a, index % 2, 2)), direction, rtol=1e-4, atol=1e-6)
    total = 2 * Channel() - 0.5 * Neuron()
    assert isinstance(total, Sum) and total.terms == ((2.0, Channel()), (-0.5, Neuron()))
    np.testing.assert_allclose(to_numpy(total(a, index, 2)), 2 * channel - 0.5 * neuron, rtol=1e-5, atol=1e-6)
    assert sum([Channel(), Neuron()]) == Channel() + Neuron()
    # Diversity: each image's objective minus weight * |objective| * its mean Gram cosine with its group.
    grams = np.einsum("nhwc,nhwd->ncd", a, a).reshape(4, -1)
    grams /= np.linalg.norm(grams, axis=1, keepdims=True)
    cos = grams @ grams.T
    others = np.array([cos[0, 1], cos[1, 0], cos[2, 3], cos[3, 2]])  # groups of 2: images (0, 1), (2, 3)
    expected = channel - 0.3 * np.abs(channel) * others
    np.testing.assert_allclose(to_numpy(Diversity(2, 0.3)(a, index, 2)), expected, rtol=1e-4, atol=1e-6)
    # Rank 2 (a Dense layer): the unit's value, for a channel and a neuron alike.
    units = rng.normal(size=(3, 4)).astype(np.float32)
    chosen = np.array([2, 0, 3])
    np.testing.assert_allclose(to_numpy(Channel()(units, chosen, 2)), units[[0, 1, 2], chosen])
    np.testing.assert_allclose(to_numpy(Neuron()(units, chosen)), units[[0, 1, 2], chosen])


# -- what the ascent finds -----------------------------------------------------------------------------


@pytest.mark.backends
def test_planted_red_vertical_bar_detector_gives_red_vertical_bars():
    model = bar_model()
    viz = FilterVisualizer(model, "bars")
    patterns = viz.optimize(filters=[0, 1], steps=40)  # the default: fourier with transforms
    maps = feature_maps(model, "bars", patterns)
    for f, colour in ((0, 0), (1, 1)):  # filter 0: red, vertical; filter 1: green, horizontal
        # The bar colour over the mean of the other two, turned so that the planted bar is vertical.
        excess = patterns[f, ..., colour] - np.delete(patterns[f], colour, axis=-1).mean(axis=-1)
        excess = excess if f == 0 else excess.T
        response = maps[f, ..., f] if f == 0 else maps[f, ..., f].T
        y, x = np.unravel_index(np.argmax(response), response.shape)
        patch = excess[y:y + 5, x:x + 5]  # what the strongest unit sees
        assert response.max() > 25, (f, response.max())  # grey gives 0.5 ** 2
        assert patch[:, 2].mean() > 0.4 and patch[:, 2].mean() > patch[:, [0, 1, 3, 4]].mean() + 0.3, patch
        assert np.abs(np.diff(patch, axis=1)).mean() > 2 * np.abs(np.diff(patch, axis=0)).mean()  # vertical
        inside = excess[4:-4, 4:-4]  # stripes of the planted orientation across the pattern (less its frame)
        assert np.mean(np.diff(inside, axis=1) ** 2) > 2 * np.mean(np.diff(inside, axis=0) ** 2)
    # A neuron, the centre unit (14, 14) of the 28x28 map: one object in its receptive field, not a texture.
    start, centre = (viz.optimize(filters=[0], steps=s, objective=Neuron()) for s in (0, 40))
    before, after = (feature_maps(model, "bars", x)[0, 14, 14, 0] for x in (start, centre))
    assert after > 40 * before
    contrast = np.abs(centre[0] - 0.5).mean(axis=-1)
    inside = contrast[12:21, 12:21]  # its 5x5 receptive field and 2 pixels around
    assert inside.mean() > 3 * (contrast.sum() - inside.sum()) / (contrast.size - inside.size)


@pytest.mark.backends
def test_edge_kernels_give_stripes_along_the_kernel():
    # Pixel patterns are stripes of the highest frequency; Fourier ones broader stripes with some texture.
    for options, ratio in (({}, 1.5), (PIXEL, 3.0)):
        patterns = FilterVisualizer(edge_model(), "edges").visualize(filters=[0, 1], **options)
        assert patterns.shape == (2, 32, 32, 3) and patterns.dtype == np.uint8
        grey = patterns.astype(np.float32).mean(-1)
        along_x = np.mean(np.diff(grey, axis=2) ** 2, axis=(1, 2))  # changes across columns: vertical stripes
        along_y = np.mean(np.diff(grey, axis=1) ** 2, axis=(1, 2))
        assert along_x[0] > ratio * along_y[0]  # vertical-edge detector -> vertical stripes
        assert along_y[1] > ratio * along_x[1]  # horizontal-edge detector -> horizontal stripes
        # The same seen in the spectrum: the energy sits on the axis of the kernel's derivative.
        spectrum = np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2
        f = np.abs(np.fft.fftfreq(32))
        fx_dominant = (f[None, :] > f[:, None])[None]
        share_x = (spectrum * fx_dominant).sum(axis=(1, 2)) / spectrum.sum(axis=(1, 2))
        assert share_x[0] > 0.7 and share_x[1] < 0.3


@pytest.mark.backends
def test_deeper_patterns_excite_their_filter_more_than_matched_noise(backbone, conv2_viz):
    start = conv2_viz.optimize(steps=0, **PIXEL)  # all 8 filters: the grey start with noise
    # A filter that is zero on the whole start image has a zero gradient through its ReLU: gradient ascent
    # cannot move it (in the keras.io recipe as here). On a near-uniform grey start, about half of a random
    # layer is.
    initial = interior_mean(feature_maps(backbone, "conv2", start))[np.arange(8), np.arange(8)]
    own = np.flatnonzero(initial > 0)
    assert len(own) >= 4
    rng = np.random.default_rng(1)
    for options, margin in ((PIXEL, 1.1), ({}, 1.0)):
        patterns = conv2_viz.optimize(filters=own, **options)
        gained = interior_mean(feature_maps(backbone, "conv2", patterns))[np.arange(len(own)), own]
        assert np.all(gained > 1.2 * initial[own])
        # Contrast-matched noise: the pattern's own pixels, shuffled (same histogram per channel and image).
        # A random network likes white noise, and the Fourier patterns are smooth: they must at least beat it.
        for _ in range(3):
            shuffled = np.stack([p.reshape(-1, 3)[rng.permutation(32 * 32)].reshape(32, 32, 3)
                                 for p in patterns])
            noise = interior_mean(feature_maps(backbone, "conv2", shuffled))[np.arange(len(own)), own]
            assert np.all(gained > margin * noise), (options, gained, noise)


@pytest.mark.backends
def test_pixel_without_transforms_is_the_previous_ascent(backbone, conv2_viz):
    """The ascent before the Fourier default, written out: grey start with noise from (seed, filter), each
    step a roll by a shift from the seed, the gradient at the rolled image rolled back, RMS-normalized."""
    filters, steps, size = [0, 2, 6], 6, (32, 32)
    truncated = keras.Model(backbone.inputs, backbone.get_layer("conv2").output)
    x = np.stack([(128 + 20 * np.random.default_rng([0, 1, f]).random(size + (3,))) / 255 for f in filters])
    shifts = np.random.default_rng([0, 0, 0]).integers(-2, 3, (steps, 2))

    def loss_fn(model, z):
        a = model(z, training=False)[:, 2:-2, 2:-2]
        return keras.ops.stack([keras.ops.mean(a[i, ..., f]) for i, f in enumerate(filters)])

    for dy, dx in shifts:
        rolled = keras.ops.convert_to_tensor(np.roll(x, (dy, dx), axis=(1, 2)).astype(np.float32))
        grads = to_numpy(seam.get().input_grads(truncated, rolled, loss_fn)[1])
        grads = np.roll(grads, (-dy, -dx), axis=(1, 2))
        x = x + grads / 255 / (np.sqrt(np.mean(grads**2, axis=(1, 2, 3), keepdims=True)) + 1e-5)
    np.testing.assert_allclose(conv2_viz.optimize(filters=filters, steps=steps, **PIXEL), x, atol=1e-5)


@pytest.mark.backends
def test_batched_and_one_at_a_time_agree(conv2_viz):
    together = conv2_viz.optimize(filters=[0, 1, 2, 3, 6], steps=15)  # the default: fourier + transforms
    alone = conv2_viz.optimize(filters=[2], steps=15)
    chunked = conv2_viz.optimize(filters=[6, 2, 1], steps=15, batch_size=2)  # chunks of 2, last one padded
    np.testing.assert_allclose(alone[0], together[2], atol=1e-4)
    np.testing.assert_allclose(chunked, together[[4, 2, 1]], atol=1e-4)
    assert np.abs(together[2] - conv2_viz.optimize(filters=[2], steps=0)[0]).max() > 0.05  # it did move
    pictures = conv2_viz.visualize(filters=[0, 1, 2, 3, 6], steps=15)
    assert np.abs(pictures[2].astype(int) - conv2_viz.visualize(filters=[2], steps=15)[0]).max() <= 1
    # Diversity keeps a filter's patterns together: chunks of whole groups, the same result.
    diverse = conv2_viz.optimize(filters=[1, 3], steps=8, objective=Diversity(2))
    np.testing.assert_allclose(conv2_viz.optimize(filters=[3], steps=8, objective=Diversity(2)), diverse[2:],
                               atol=1e-4)
    chunked = conv2_viz.optimize(filters=[1, 3], steps=8, objective=Diversity(2), batch_size=3)
    np.testing.assert_allclose(chunked, diverse, atol=1e-4)  # chunks of 2 images, one group each


@pytest.mark.backends
def test_deterministic_and_side_effect_free(backbone, conv2_viz):
    weights = [w.copy() for w in backbone.get_weights()]
    np_state, py_state = np.random.get_state(), random.getstate()
    filters, transforms = [1, 2], ["jitter", ("rotate", 20)]
    first = conv2_viz.visualize(filters=filters, steps=5, seed=3, transforms=transforms)
    second = conv2_viz.visualize(filters=filters, steps=5, seed=3, transforms=transforms)
    other = conv2_viz.visualize(filters=filters, steps=5, seed=4, transforms=transforms)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first.astype(int) - other).mean() > 1
    assert filters == [1, 2] and transforms == ["jitter", ("rotate", 20)]
    np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    for before, after in zip(weights, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_total_variation_and_l2_lower_their_measures(conv2_viz):
    for options in ({}, PIXEL):
        plain = conv2_viz.optimize(filters=[1, 3], steps=20, **options)
        smooth = conv2_viz.optimize(filters=[1, 3], steps=20, total_variation=5.0, **options)
        assert tv(smooth) < 0.7 * tv(plain), options
        near_grey = conv2_viz.optimize(filters=[1, 3], steps=20, l2=20.0, **options)
        assert np.mean((near_grey - 0.5) ** 2) < 0.7 * np.mean((plain - 0.5) ** 2), options
    # The names before 0.2 are aliases.
    np.testing.assert_array_equal(conv2_viz.optimize(filters=[1], steps=3, tv_weight=5.0, l2_weight=2.0),
                                  conv2_viz.optimize(filters=[1], steps=3, total_variation=5.0, l2=2.0))


def test_objectives_in_the_ascent(conv2_viz):
    channel = conv2_viz.optimize(filters=[1, 3], steps=10)
    onehot = Direction(np.eye(8))  # filters= picks rows: the direction of channel 1 is row 1
    np.testing.assert_allclose(conv2_viz.optimize(filters=[1, 3], steps=10, objective=onehot), channel,
                               atol=1e-4)
    doubled = conv2_viz.optimize(filters=[1, 3], steps=10, objective=2.0 * Channel())
    np.testing.assert_allclose(doubled, channel, atol=1e-4)  # the step is normalized: a scale changes nothing
    # Diversity: without the push apart, three starts give three copies of one pattern (the same Gram
    # matrix of the layer's activations); with it, they differ, and each still excites the filter.
    edges = FilterVisualizer(edge_model(), "edges")
    alike, apart = (edges.optimize(filters=[0], steps=15, objective=Diversity(3, w)) for w in (0.0, 1.0))
    assert alike.shape == (3, 32, 32, 3)

    def mean_gram_cosine(images):
        maps = feature_maps(edges.model, "edges", images)
        grams = np.einsum("nhwc,nhwd->ncd", maps, maps).reshape(len(images), -1)
        grams /= np.linalg.norm(grams, axis=1, keepdims=True)
        return (np.sum(grams @ grams.T) - len(images)) / (len(images) * (len(images) - 1))

    assert mean_gram_cosine(alike) > 0.99 and mean_gram_cosine(apart) < 0.95
    activation = interior_mean(feature_maps(edges.model, "edges", apart))[:, 0]
    assert np.all(activation > 0.5 * interior_mean(feature_maps(edges.model, "edges", alike))[:, 0].mean())
    mosaic = conv2_viz.grid(filters=[1, 3], steps=2, objective=Diversity(3))  # one row per filter
    assert mosaic.shape == (2 * 32 + 5, 3 * 32 + 2 * 5, 3)


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
    traces = []
    score = Channel.__call__
    monkeypatch.setattr(Channel, "__call__", lambda *a: traces.append(1) or score(*a))
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
    gap = keras.Model(model.inputs[0], model.get_layer("gap").output)
    kernel, bias = model.get_layer("probs").get_weights()

    def logits(x):
        return to_numpy(gap(x)) @ kernel + bias

    classes = np.arange(3)
    for options in ({}, PIXEL):
        start = viz.optimize(filters=[0, 1, 2], steps=0, **options)
        end = viz.optimize(filters=[0, 1, 2], **options)
        assert model.get_layer("probs").activation.__name__ == "softmax"  # patched only during calls
        assert np.all(logits(end)[classes, classes] > logits(start)[classes, classes] + 1e-3)
    np.testing.assert_array_equal(viz.optimize(filters=[1], steps=5), viz.optimize(filters=[1], steps=5,
                                                                                   objective=Channel()))


def test_sizes_and_octaves():
    free = keras.Sequential([keras.Input((None, None, 1)), conv(4, "c1"), conv(4, "c2")])
    numpy_weights(free, seed=1)
    viz = FilterVisualizer(free, "c2", value_range=(0, 255))
    assert viz.visualize(filters=[0], steps=2).shape == (1, 64, 64, 3)  # free size: 64; grey -> RGB
    assert viz.visualize(filters=[0, 1], size=(20, 28), steps=2).shape == (2, 20, 28, 3)
    raw = viz.optimize(filters=[1], size=24, **PIXEL)
    assert 0 < raw.min() and raw.max() < 255  # the 0..255 scale: grey start, step 1
    fourier = viz.optimize(filters=[0], size=24)  # filter 0: the one grey does not switch off
    assert 0 <= fourier.min() and fourier.max() <= 255 and fourier.std() > 20  # inside the range, not grey
    coarse = viz.optimize(filters=[1], size=24, octaves=3, steps=10, param="pixel")
    assert coarse.shape == (1, 24, 24, 1) and np.all(np.isfinite(coarse))
    fixed = FilterVisualizer(edge_model(), "edges")
    assert fixed.optimize(filters=[0], octaves=2, steps=3, param="pixel").shape == (1, 32, 32, 3)


def test_grid_progress_bar_and_deprocess(conv2_viz, capsys):
    grid = conv2_viz.grid(size=32, steps=2)  # filters=None: all 8 (fewer than 64) -> 3 columns
    assert grid.shape == (3 * 32 + 2 * 5, 3 * 32 + 2 * 5, 3) and grid.dtype == np.uint8
    assert grid[32:37].max() == 0  # black 5 px margins
    capsys.readouterr()
    conv2_viz.visualize(filters=[0], steps=2)
    assert capsys.readouterr().out == ""
    conv2_viz.visualize(filters=[0], steps=2, verbose=1)
    assert "loss" in capsys.readouterr().out
    # Fourier patterns lie in the value range and are shown as they are; pixel patterns are standardized.
    raw = conv2_viz.optimize(filters=[0], steps=2)
    np.testing.assert_array_equal(conv2_viz.visualize(filters=[0], steps=2),
                                  np.round(raw * 255).astype(np.uint8))
    np.testing.assert_array_equal(conv2_viz.visualize(filters=[0], steps=2, **PIXEL),
                                  deprocess_image(conv2_viz.optimize(filters=[0], steps=2, **PIXEL)))

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
    with pytest.raises(ValueError, match="out of range.*2 directions"):
        conv2_viz.visualize(filters=[2], objective=Direction(np.ones((2, 8))))
    with pytest.raises(ValueError, match="sequence of filter indices"):
        conv2_viz.visualize(filters=3)
    with pytest.raises(ValueError, match="fixed input size 32x32"):
        conv2_viz.visualize(filters=[0], size=64)
    with pytest.raises(ValueError, match="steps"):
        conv2_viz.visualize(filters=[0], steps=-1)
    with pytest.raises(ValueError, match="Unknown ascent option 'stpes'; the options are steps, step_size"):
        conv2_viz.visualize(filters=[0], stpes=3)
    with pytest.raises(ValueError, match="`param` must be one of 'pixel', 'fourier'"):
        conv2_viz.visualize(filters=[0], param="fft")
    with pytest.raises(ValueError, match="Unknown transform 'shear'; the transforms are jitter, scale"):
        conv2_viz.visualize(filters=[0], transforms=["jitter", "shear"])
    with pytest.raises(ValueError, match="Scale needs low <= high"):
        conv2_viz.visualize(filters=[0], transforms=[("scale", 1.2, 0.8)])
    with pytest.raises(ValueError, match="`objective` must be None or an Objective"):
        conv2_viz.visualize(filters=[0], objective="channel")
    with pytest.raises(ValueError, match="Direction vectors have 3 values but the layer's output has 8"):
        conv2_viz.visualize(filters=[0], objective=Direction([1, 0, 0]))
    with pytest.raises(ValueError, match="octaves=2 works with param='pixel' only"):
        conv2_viz.visualize(filters=[0], octaves=2)
    with pytest.raises(ValueError, match="Pass `total_variation` or its alias `tv_weight`, not both"):
        conv2_viz.visualize(filters=[0], tv_weight=1.0, total_variation=1.0)
    with pytest.raises(ValueError, match="`copies` must be an integer >= 2"):
        Diversity(1)
    with pytest.raises(ValueError, match="value_range"):
        FilterVisualizer(backbone, "conv2", value_range=(1, 0))
    with pytest.raises(ValueError, match="not found"):
        FilterVisualizer(backbone, "conv9")
    # Other layouts: refused with the layouts that do work, not optimized as if they were images.
    first = keras.Sequential([keras.Input((3, 16, 16)),
                              keras.layers.Conv2D(4, 3, data_format="channels_first", name="c")])
    with pytest.raises(ValueError, match=r"shape \(None, 3, 16, 16\) \(channels first\); FilterVisualizer "
                                         r"optimizes channels_last images \(N, H, W, C\) only"):
        FilterVisualizer(first, "c")
    signal = keras.Sequential([keras.Input((32, 1)), keras.layers.Conv1D(4, 3, name="c")])
    with pytest.raises(ValueError, match=r"shape \(None, 32, 1\); FilterVisualizer optimizes channels_last"):
        FilterVisualizer(signal, "c")
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
    opts = AscentOptions.of({"steps": 3, "seed": 1, "tv_weight": 0.5})
    assert (opts.steps, opts.seed, opts.jitter, opts.border, opts.param) == (3, 1, 2, 2, "fourier")
    assert opts.total_variation == opts.tv_weight == 0.5 and opts.l2 == opts.l2_weight == 0.0
    with pytest.raises(Exception):
        opts.steps = 4  # frozen
    for bad, message in [({"jitter": -1}, "`jitter` must be an integer >= 0"),
                         ({"step_size": 0}, "`step_size` must be a finite number > 0"),
                         ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
                         ({"l2": -1}, "`l2` must be a finite number >= 0"),
                         ({"octave_scale": float("nan")}, "`octave_scale` must be a finite number")]:
        with pytest.raises(ValueError, match=message):
            AscentOptions.of(bad)


def test_filter_snapshot_passes_ascent_options(tmp_path):
    keras.utils.set_random_seed(0)
    model = deep_model()
    head = keras.Sequential([model, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    head.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    options = {"param": "pixel", "transforms": [("rotate", 5)], "objective": Neuron()}
    snapshot = kc.callbacks.FilterSnapshot("conv2", filters=[1, 2], output_dir=tmp_path, steps=3, **options)
    assert snapshot.options == options
    head.fit(random_images(4, 32), np.array([0, 1, 0, 1]), epochs=1, verbose=0, callbacks=[snapshot])
    expected = FilterVisualizer(head, "conv2").grid(filters=[1, 2], steps=3, seed=0, **options)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "epoch_001.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(written, expected)
    with pytest.raises(ValueError, match="Unknown ascent option 'paramm'"):
        kc.callbacks.FilterSnapshot("conv2", paramm="pixel")


def test_objectives_and_options_that_would_give_flat_or_failed_patterns_are_refused(conv2_viz):
    from keras_cam.activation_maximization.transforms import resolve_transforms

    with pytest.raises(ValueError, match="Direction vector 1 is all zeros"):
        Direction([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="terms cancel out"):
        Channel() - Channel()
    with pytest.raises(ValueError, match="terms cancel out"):
        2 * Neuron() - Neuron() * 2.0
    assert (Channel() + Channel()).terms == ((2.0, Channel()),)  # equal terms add up
    assert (Channel() - 0.5 * Neuron()).terms == ((1.0, Channel()), (-0.5, Neuron()))
    assert resolve_transforms("none") == () == resolve_transforms(None)  # as the CLI's --transforms none
    with pytest.raises(ValueError, match=r"`size` 50000x50000 is 2,500,000,000 pixels per pattern, above"):
        conv2_viz.visualize(filters=[0], size=50000, steps=1)
