"""ROAD's noisy linear imputation, ROAD curves, average drop and increase in confidence, against numpy."""
import itertools

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam._resample import resize_linear
from keras_cam.metrics.imputation import noisy_linear_imputation
from tests.models import bright_square_model, squares


def _outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _dense_imputation(image, removed):
    """The paper's system built pixel by pixel: each removed pixel = weighted mean of its in-image
    neighbours (1/6 direct, 1/12 diagonal), solved densely."""
    h, w, c = image.shape
    unknown = [tuple(p) for p in np.argwhere(removed)]
    index = {p: k for k, p in enumerate(unknown)}
    a, b = np.zeros((len(unknown), len(unknown))), np.zeros((len(unknown), c))
    for k, (i, j) in enumerate(unknown):
        for di, dj in itertools.product((-1, 0, 1), repeat=2):
            if (di, dj) == (0, 0) or not (0 <= i + di < h and 0 <= j + dj < w):
                continue
            weight = 1 / 6 if 0 in (di, dj) else 1 / 12
            a[k, k] += weight
            if removed[i + di, j + dj]:
                a[k, index[(i + di, j + dj)]] -= weight
            else:
                b[k] += weight * image[i + di, j + dj]
    out = image.astype(np.float64).copy()
    out[removed] = np.linalg.solve(a, b)
    return out


@pytest.mark.parametrize("use_scipy", [True, False])
def test_imputation_keeps_constants_and_ramps_and_matches_the_dense_system(use_scipy):
    rng = np.random.default_rng(0)
    removed = np.zeros((7, 8), bool)
    removed[2:5, 3:6] = True
    removed[0, 0] = removed[6, 7] = True  # corners: fewer neighbours
    constant = np.full((7, 8, 2), 0.3, np.float32)
    np.testing.assert_allclose(noisy_linear_imputation(constant, removed, 0.0, use_scipy=use_scipy), 0.3,
                               atol=1e-6)
    # A linear ramp is the weighted mean of its symmetric neighbourhood: interior holes stay on it.
    yy, xx = np.mgrid[:7, :8]
    ramp = np.stack([0.1 * xx + 0.05 * yy, 1 - 0.02 * xx], -1).astype(np.float32)
    interior = np.zeros_like(removed)
    interior[2:5, 3:6] = True
    np.testing.assert_allclose(noisy_linear_imputation(ramp, interior, 0.0, use_scipy=use_scipy), ramp,
                               atol=1e-5)
    image = rng.random((7, 8, 3)).astype(np.float32)
    got = noisy_linear_imputation(image, removed, 0.0, use_scipy=use_scipy)
    np.testing.assert_allclose(got, _dense_imputation(image, removed), atol=1e-5)
    # Noise: only on removed pixels, seeded, of the asked size.
    big = np.zeros((40, 40), bool)
    big[5:35, 5:35] = True
    noisy = noisy_linear_imputation(np.zeros((40, 40, 1)), big, noise=0.1, seed=3, use_scipy=use_scipy)
    np.testing.assert_array_equal(noisy[~big], 0.0)
    assert noisy[big].std() == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(noisy, noisy_linear_imputation(np.zeros((40, 40, 1)), big, 0.1, seed=3))


def test_imputation_in_1d_and_3d():
    signal = np.linspace(0, 1, 12, dtype=np.float32)[:, None]
    removed = np.zeros(12, bool)
    removed[3:8] = True
    np.testing.assert_allclose(noisy_linear_imputation(signal, removed, 0.0), signal, atol=1e-6)
    z, y, x = np.mgrid[:6, :6, :6]
    volume = (0.1 * x + 0.2 * y - 0.05 * z)[..., None].astype(np.float32)
    hole = np.zeros((6, 6, 6), bool)
    hole[2:4, 1:5, 2:4] = True
    np.testing.assert_allclose(noisy_linear_imputation(volume, hole, 0.0), volume, atol=1e-5)


@pytest.mark.backends
def test_road_morf_falls_faster_than_lerf_and_scores_are_the_models():
    model = bright_square_model()
    images, masks = squares(4)
    before = images.copy()
    evidence = masks + 0.01 * np.random.default_rng(1).random(masks.shape)  # the square ranked first
    result = kc.metrics.road(model, images, evidence, targets=1, percentiles=(10, 50, 90))
    assert result.morf.max() < 0.05 and result.lerf.min() > 0.95  # square imputed away vs kept
    assert result.combined == pytest.approx((result.lerf - result.morf).mean() / 2)
    assert result.morf_curves.shape == (4, 3) and result.targets.tolist() == [1] * 4
    np.testing.assert_allclose(result.original, _outputs(model, images)[:, 1], rtol=1e-5)
    # Oracle: without noise, each point is the model's score on the imputed image, rebuilt here.
    exact = kc.metrics.road(model, images, evidence, targets=None, percentiles=(10, 30, 90), noise=0.0)
    assert exact.targets.tolist() == [1] * 4  # None: the class predicted on the intact images
    order = np.argsort(-evidence[0].ravel(), kind="stable")[::-1]  # least relevant first
    removed = np.zeros(256, bool)
    removed[order[:77]] = True  # round(0.3 * 256)
    imputed = noisy_linear_imputation(images[0], removed.reshape(16, 16), 0.0)
    scores = _outputs(model, np.concatenate([imputed[None], images[1:]]))  # the shape already run once
    np.testing.assert_allclose(exact.lerf_curves[0, 1], scores[0, 1], rtol=1e-4)
    lerf = kc.metrics.road(model, images, evidence, targets=1, percentiles=(10, 50, 90), mode="lerf")
    assert lerf.morf is None and lerf.combined is None
    np.testing.assert_allclose(lerf.lerf, result.lerf, atol=0.02)  # other noise, the same picture
    np.testing.assert_array_equal(images, before)


def _linear_classifier(activation):
    # GAP then Dense: class scores are affine in the images' channel means, computable by hand.
    units = 1 if activation == "sigmoid" else 3
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(units, activation=activation)])
    kernel = np.array([[2.0, -1.0, 0.5], [-1.5, 3.0, 0.0]], np.float32)[:, :units]
    bias = np.array([0.1, -0.2, 0.3], np.float32)[:units]
    model.layers[-1].set_weights([kernel, bias])
    return model, kernel, bias


@pytest.mark.backends
@pytest.mark.parametrize("activation", ["softmax", None, "sigmoid"])
def test_average_drop_and_increase_in_confidence_against_numpy(activation):
    model, kernel, bias = _linear_classifier(activation)
    rng = np.random.default_rng(0)
    images = rng.random((5, 6, 6, 2)).astype(np.float32)
    heatmaps = rng.random((5, 3, 3)).astype(np.float32)  # resized to 6x6 bilinearly
    targets = [0, 1, 0, 1, 0] if activation == "sigmoid" else [0, 1, 2, 1, 0]
    before = (images.copy(), heatmaps.copy())

    def probs(x):
        z = x.mean(axis=(1, 2)) @ kernel + bias
        if activation == "sigmoid":
            p = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], 1)  # binary: class 0 is the unit's complement
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)  # softmax, also of a logits output

    big = resize_linear(heatmaps, (5, 6, 6))
    y = probs(images)[np.arange(5), targets]
    o = probs(images * big[..., None])[np.arange(5), targets]
    expected_drop = np.mean(np.maximum(0, y - o) / y) * 100
    assert kc.metrics.average_drop(model, images, heatmaps, targets) == pytest.approx(expected_drop, rel=1e-4)
    assert kc.metrics.increase_in_confidence(model, images, heatmaps, targets) == pytest.approx(
        np.mean(o > y) * 100)
    # A map of ones changes nothing: no drop, no increase.
    assert kc.metrics.average_drop(model, images, np.ones((5, 6, 6)), targets) == pytest.approx(0, abs=1e-3)
    assert kc.metrics.increase_in_confidence(model, images, np.ones((5, 6, 6)), targets) == 0.0
    np.testing.assert_array_equal(images, before[0])
    np.testing.assert_array_equal(heatmaps, before[1])


def test_bad_input_gets_one_clear_error():
    model = bright_square_model()
    images, masks = squares(2)
    with pytest.raises(ValueError, match="`heatmaps` must have shape"):
        kc.metrics.road(model, images, masks[0])
    with pytest.raises(ValueError, match="`heatmaps` must have shape"):
        kc.metrics.average_drop(model, images, masks[:1])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        kc.metrics.average_drop(model, images, 2.0 * masks)
    with pytest.raises(ValueError, match="strictly between 0 and 100"):
        kc.metrics.road(model, images, masks, percentiles=(50, 100))
    with pytest.raises(ValueError, match="`mode` must be"):
        kc.metrics.road(model, images, masks, mode="most")
    with pytest.raises(ValueError, match="a callable target"):
        kc.metrics.road(model, images, masks, targets=lambda out: out[:, 0])
    with pytest.raises(ValueError, match="out of range"):
        kc.metrics.increase_in_confidence(model, images, masks, targets=5)
    with pytest.raises(ValueError, match="spatial shape"):
        noisy_linear_imputation(images[0], masks[0][:4])
    with pytest.raises(ValueError, match="Every position is removed"):
        noisy_linear_imputation(images[0], np.ones((16, 16), bool))
