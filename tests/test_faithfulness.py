"""Deletion / insertion metrics on a model whose important pixels are known."""
import keras
import numpy as np
import pytest

from keras_cam.metrics import faithfulness


def region_model():
    """Class 0's logit is 3 x the sum of the top-left 4x4 pixels; class 1's is 8: only that region matters."""
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    w = np.zeros((64, 2), np.float32)
    region = np.zeros((8, 8), bool)
    region[:4, :4] = True
    w[region.ravel(), 0] = 3.0
    model.layers[-1].set_weights([w, np.array([0.0, 8.0], np.float32)])
    return model, region


@pytest.mark.backends
def test_true_ranking_beats_random_and_inverted():
    model, region = region_model()
    images = np.ones((3, 8, 8, 1), np.float32)
    images_copy = images.copy()
    rng = np.random.default_rng(0)
    truth = np.where(region, 1.0, 0.0)[None].repeat(3, 0) + rng.random((3, 8, 8)) * 0.01
    random = rng.random((3, 8, 8))
    inverted = 1.0 - truth
    dele = {k: faithfulness.deletion_auc(model, images, h, targets=0, steps=16)
            for k, h in [("truth", truth), ("random", random), ("inverted", inverted)]}
    ins = {k: faithfulness.insertion_auc(model, images, h, targets=0, steps=16, baseline=0.0)
           for k, h in [("truth", truth), ("random", random), ("inverted", inverted)]}
    assert dele["truth"] < dele["random"] < dele["inverted"]
    assert ins["truth"] > ins["random"] > ins["inverted"]
    np.testing.assert_array_equal(images, images_copy)
    # The curve: at 0 the intact image (softmax of 48 vs 8 ~ 1), deleting the 16 region pixels first kills it.
    auc, fractions, curves = faithfulness.deletion_auc(model, images, truth, targets=0, steps=4, return_curve=True)
    assert fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(curves[:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(curves[:, 1], 1 / (1 + np.exp(8.0)), rtol=1e-4)  # region gone: softmax(0, 8)[0]
    assert auc == pytest.approx(np.mean(np.trapezoid(curves, fractions, axis=1)), rel=1e-6)


def test_heatmaps_are_resized_and_bad_input_is_refused():
    model, region = region_model()
    images = np.ones((2, 8, 8, 1), np.float32)
    small = np.zeros((2, 4, 4), np.float32)
    small[:, :2, :2] = 1.0
    assert faithfulness.deletion_auc(model, images, small, targets=0, steps=8) < 0.5
    with pytest.raises(ValueError, match="heatmaps"):
        faithfulness.deletion_auc(model, images, np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="baseline"):
        faithfulness.insertion_auc(model, images, small, baseline="zeros")
    with pytest.raises(ValueError, match="steps"):
        faithfulness.deletion_auc(model, images, small, steps=0)


def region_model_nd(spatial, data_format="channels_last"):
    """Flatten + Dense: class 0's logit is 3 x the sum of the first quarter along every spatial axis."""
    shape = (1,) + spatial if data_format == "channels_first" else spatial + (1,)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(data_format=data_format),
                              keras.layers.Dense(2, activation="softmax")])
    region = np.zeros(spatial, bool)
    region[tuple(slice(0, max(1, s // 4)) for s in spatial)] = True
    w = np.zeros((int(np.prod(spatial)), 2), np.float32)
    w[region.ravel(), 0] = 3.0  # the flattened order is the same in both layouts with one channel
    model.layers[-1].set_weights([w, np.array([0.0, 2.0], np.float32)])
    return model, region


@pytest.mark.backends
@pytest.mark.parametrize("spatial, data_format", [((32,), "channels_last"), ((8, 8, 8), "channels_last"),
                                                  ((8, 8), "channels_first")])
def test_deletion_and_insertion_in_every_layout(spatial, data_format):
    model, region = region_model_nd(spatial, data_format)
    images = np.ones((2,) + spatial + (1,), np.float32)
    if data_format == "channels_first":
        images = np.moveaxis(images, -1, 1)
    rng = np.random.default_rng(0)
    truth = np.where(region, 1.0, 0.0)[None].repeat(2, 0) + rng.random((2,) + spatial) * 0.01
    inverted = 1.0 - truth
    dele = [faithfulness.deletion_auc(model, images, h, targets=0, steps=8) for h in (truth, inverted)]
    ins = [faithfulness.insertion_auc(model, images, h, targets=0, steps=8, baseline=0.0) for h in (truth, inverted)]
    assert dele[0] < dele[1] - 0.2 and ins[0] > ins[1] + 0.2
    # Deleting the region's share of top-ranked positions first removes all its evidence: softmax(0, 2)[0].
    share = region.mean()
    _, fractions, curves = faithfulness.deletion_auc(model, images, truth, targets=0, steps=int(1 / share),
                                                     return_curve=True)
    np.testing.assert_allclose(curves[:, 1], 1 / (1 + np.exp(2.0)), rtol=1e-4)
    small = truth[(slice(None),) + tuple(slice(None, None, 2) for _ in spatial)]  # resized back up
    assert faithfulness.deletion_auc(model, images, small, targets=0, steps=8) < dele[1]


def test_blur_baseline_is_opencvs_gaussian_blur_in_2d():
    import cv2

    images = np.random.default_rng(0).random((2, 20, 24, 3)).astype(np.float32)
    expected = np.stack([cv2.GaussianBlur(img, (0, 0), 2.4) for img in images])
    np.testing.assert_allclose(faithfulness._blur(images, 2.4), expected, atol=1e-5)


@pytest.mark.backends
def test_a_sigmoid_unit_is_binary_class_0_scores_one_minus_p():
    """As the explainers read a sigmoid unit: class 1 is p, class 0 is 1 - p (not p twice, nor an error)."""
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    w = np.zeros((64, 1), np.float32)
    w[:16, 0] = 0.5  # the first two rows raise p
    model.layers[-1].set_weights([w, np.array([-2.0], np.float32)])
    images = np.ones((2, 8, 8, 1), np.float32)
    heatmaps = np.random.default_rng(0).random((2, 8, 8))
    p = keras.ops.convert_to_numpy(model(images))[:, 0]
    for curve in (faithfulness.deletion_curve, faithfulness.insertion_curve):
        _, one = curve(model, images, heatmaps, targets=1, steps=4, baseline=0.0)
        _, zero = curve(model, images, heatmaps, targets=0, steps=4, baseline=0.0)
        np.testing.assert_allclose(one + zero, 1.0, atol=1e-6)
        _, predicted = curve(model, images, heatmaps, steps=4, baseline=0.0)  # p > 0.5: class 1 predicted
        np.testing.assert_allclose(predicted, one if p.min() > 0.5 else zero, atol=1e-6)
    np.testing.assert_allclose(faithfulness.deletion_curve(model, images, heatmaps, targets=1, steps=4)[1][:, 0], p,
                               atol=1e-6)  # nothing deleted yet: the intact score
