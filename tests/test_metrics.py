"""Pointing games and box localization on hand-made heatmaps, masks and boxes, where the right score is
known."""
import numpy as np
import pytest

from keras_cam import _resample, metrics


def _case():
    masks = np.zeros((4, 10, 10), bool)
    masks[:, 2:5, 2:5] = True
    heatmaps = np.zeros((4, 10, 10), np.float32)
    heatmaps[0, 3, 3] = 1.0   # peak inside
    heatmaps[1, 8, 8] = 1.0   # far outside
    heatmaps[2, 5, 5] = 1.0   # one pixel off the corner (Chebyshev distance 1)
    heatmaps[3, 2, 4] = 1.0   # inside, on the edge
    return heatmaps, masks


def test_pointing_game_values_and_tolerance():
    heatmaps, masks = _case()
    h0, m0 = heatmaps.copy(), masks.copy()
    assert metrics.pointing_game_per_image(heatmaps, masks).tolist() == [True, False, False, True]
    assert metrics.pointing_game_per_image(heatmaps, masks).dtype == bool
    assert metrics.pointing_game(heatmaps, masks) == 0.5
    assert metrics.pointing_game(heatmaps, masks, tolerance=1) == 0.75
    assert metrics.pointing_game(heatmaps, masks, tolerance=3) == 0.75  # (8, 8) is 4 pixels away
    assert metrics.pointing_game(heatmaps, masks, tolerance=4) == 1.0
    np.testing.assert_array_equal(heatmaps, h0)  # inputs are never modified
    np.testing.assert_array_equal(masks, m0)


def test_all_inside_all_outside_and_lists():
    masks = np.zeros((3, 6, 6), bool)
    masks[:, :3] = True
    inside = np.zeros((3, 6, 6))
    inside[:, 1, 4] = 2.0
    assert metrics.pointing_game(inside, masks) == 1.0
    assert metrics.pointing_game(inside[:, ::-1], masks) == 0.0  # mirrored rows: peak at row 4, outside
    # Plain lists and 0/1 integer masks are accepted.
    assert metrics.pointing_game(inside.tolist(), masks.astype(int).tolist()) == 1.0


def test_ties_use_the_first_maximum():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = True   # the first pixel in row-major order
    masks[1, 3, 3] = True   # the last one
    flat = np.ones((2, 4, 4))
    assert metrics.pointing_game_per_image(flat, masks).tolist() == [True, False]


def test_pointing_game_resizes_heatmaps_to_masks():
    masks = np.zeros((2, 20, 20), bool)
    masks[:, 10:, 10:] = True
    low = np.zeros((2, 4, 4), np.float32)
    low[0, 3, 3] = 1.0   # bottom-right cell: on the object once upsampled
    low[1, 0, 0] = 1.0   # top-left cell: off it
    assert metrics.pointing_game_per_image(low, masks).tolist() == [True, False]
    # Larger heatmaps are shrunk the same way.
    high = np.zeros((1, 40, 40), np.float32)
    high[0, 30:, 30:] = 1.0
    assert metrics.energy_pointing_game(high, masks[:1]) == pytest.approx(1.0, abs=0.02)


def test_energy_pointing_game():
    masks = np.zeros((2, 10, 10), bool)
    masks[:, :5] = True   # half the image
    masks[1, 5:, :2] = True   # 60 %
    uniform = np.ones((2, 10, 10), np.float32)
    assert metrics.energy_pointing_game(uniform, masks) == pytest.approx((0.5 + 0.6) / 2)  # = area fraction
    inside = np.where(masks, 1.0, -3.0).astype(np.float32)   # negatives are clipped, not subtracted
    assert metrics.energy_pointing_game(inside, masks) == pytest.approx(1.0)
    outside = (~masks).astype(np.float32)
    assert metrics.energy_pointing_game(outside, masks) == 0.0
    # An all-zero map has no mass: it scores 0, not NaN.
    zero_and_inside = np.stack([np.zeros((10, 10)), inside[1]])
    assert metrics.energy_pointing_game(zero_and_inside, masks) == pytest.approx(0.5)
    weighted = np.zeros((1, 10, 10))
    weighted[0, 0, 0], weighted[0, 9, 9] = 3.0, 1.0   # 3/4 of the mass on the object
    assert metrics.energy_pointing_game(weighted, masks[:1]) == pytest.approx(0.75)


@pytest.mark.parametrize("heatmaps, masks, message", [
    (np.zeros((2, 5, 5)), np.ones((3, 5, 5), bool), "Got 2 heatmaps and 3 masks; give one mask per heatmap"),
    # One image without its batch axis reads as five signals, most of them without an object.
    (np.zeros((5, 5)), np.pad(np.ones((2, 2), bool), ((1, 2), (1, 2))), r"\(N, H, W\).*heatmap\[None\]"),
    (np.zeros((1, 5, 5, 1)), np.ones((1, 5, 5), bool), r"\(N, H, W\)"),
    (np.zeros((0, 5, 5)), np.ones((0, 5, 5), bool), "Empty input"),
    (np.full((1, 5, 5), np.nan), np.ones((1, 5, 5), bool), r"`heatmaps` \[0\] contain NaN"),
    (np.zeros((2, 5, 5)), np.stack([np.ones((5, 5), bool), np.zeros((5, 5), bool)]), r"Masks \[1\] are empty"),
    (np.zeros((1, 5, 5)), np.full((1, 5, 5), 0.7), "bool .*masks > 0.5"),
    (np.array([["a"]]), np.ones((1, 1), bool), "numeric array"),
])
def test_bad_input(heatmaps, masks, message):
    for score in (metrics.pointing_game, metrics.energy_pointing_game):
        with pytest.raises(ValueError, match=message):
            score(heatmaps, masks)


@pytest.mark.parametrize("tolerance", [-1, 1.5, True])
def test_bad_tolerance(tolerance):
    heatmaps, masks = _case()
    with pytest.raises(ValueError, match="`tolerance` must be an integer >= 0"):
        metrics.pointing_game(heatmaps, masks, tolerance=tolerance)


# --- 1-D and 3-D maps -------------------------------------------------------------------------------------

def test_peak_above_and_left_of_the_object_in_2d():
    # The tolerance window is clipped at the image border, not wrapped around (a negative start would be).
    masks = np.zeros((2, 10, 10), bool)
    masks[:, 2:5, 2:5] = True
    masks[:, 9, 9] = True  # a far corner pixel that a wrapped window would reach
    heatmaps = np.zeros((2, 10, 10))
    heatmaps[0, 1, 1] = 1.0  # diagonal neighbour of the object's top-left pixel
    heatmaps[1, 0, 0] = 1.0  # two pixels away
    assert metrics.pointing_game_per_image(heatmaps, masks).tolist() == [False, False]
    assert metrics.pointing_game_per_image(heatmaps, masks, tolerance=1).tolist() == [True, False]
    assert metrics.pointing_game_per_image(heatmaps, masks, tolerance=2).tolist() == [True, True]


def test_one_dimensional_pointing_games():
    masks = np.zeros((4, 20), bool)
    masks[:, 5:10] = True  # samples 5..9
    heatmaps = np.zeros((4, 20))
    heatmaps[0, 7] = 1.0   # inside
    heatmaps[1, 10] = 1.0  # one sample right of the object
    heatmaps[2, 2] = 1.0   # three samples left of it
    heatmaps[3, 5] = 1.0   # on its first sample
    h0 = heatmaps.copy()
    assert metrics.pointing_game_per_image(heatmaps, masks).tolist() == [True, False, False, True]
    assert metrics.pointing_game_per_image(heatmaps, masks, tolerance=1).tolist() == [True, True, False, True]
    assert metrics.pointing_game(heatmaps, masks, tolerance=2) == 0.75
    assert metrics.pointing_game(heatmaps, masks, tolerance=3) == 1.0
    np.testing.assert_array_equal(heatmaps, h0)
    assert metrics.energy_pointing_game(np.ones((4, 20)), masks) == pytest.approx(0.25)
    ramp = np.arange(20.0)[None]  # mass 5+6+7+8+9 = 35 of 190 on the object
    assert metrics.energy_pointing_game(ramp, masks[:1]) == pytest.approx(35 / 190)


def test_rank_two_input_is_a_batch_of_signals():
    # (5, 5) maps and masks are five signals of five samples; a flat map points at each signal's first sample.
    masks = np.zeros((5, 5), bool)
    masks[:, 0] = True
    masks[3] = [False, False, True, True, False]
    hits = metrics.pointing_game_per_image(np.zeros((5, 5)), masks)
    assert hits.tolist() == [True, True, True, False, True]
    assert metrics.energy_pointing_game(np.ones((5, 5)), masks) == pytest.approx((0.2 * 4 + 0.4) / 5)


def test_three_dimensional_pointing_games():
    masks = np.zeros((4, 6, 7, 8), bool)
    masks[:, 2:4, 2:4, 3:5] = True
    heatmaps = np.zeros((4, 6, 7, 8), np.float32)
    heatmaps[0, 3, 2, 4] = 1.0  # inside
    heatmaps[1, 4, 4, 5] = 1.0  # just off the far corner: Chebyshev distance 1 along every axis
    heatmaps[2, 0, 3, 3] = 1.0  # two slices above the object
    heatmaps[3, 3, 3, 7] = 1.0  # three voxels beyond it along the last axis
    assert metrics.pointing_game_per_image(heatmaps, masks).tolist() == [True, False, False, False]
    for tolerance, hits in [(1, [True, True, False, False]), (2, [True, True, True, False])]:
        assert metrics.pointing_game_per_image(heatmaps, masks, tolerance=tolerance).tolist() == hits
    assert metrics.pointing_game(heatmaps, masks, tolerance=3) == 1.0
    assert metrics.energy_pointing_game(np.ones_like(heatmaps), masks) == pytest.approx(8 / (6 * 7 * 8))
    weighted = np.zeros((1, 6, 7, 8))
    weighted[0, 2, 2, 3], weighted[0, 0, 0, 0] = 3.0, 1.0
    assert metrics.energy_pointing_game(weighted, masks[:1]) == pytest.approx(0.75)


def _interp(a, size):
    """Independent 1-D linear resize with pixel centres aligned (align_corners=False), via np.interp."""
    src = (np.arange(size) + 0.5) * len(a) / size - 0.5
    return np.interp(src, np.arange(len(a)), a)  # np.interp holds the edge values beyond the ends


@pytest.mark.parametrize("t, size", [(8, 32), (37, 10), (5, 6)])
def test_one_dimensional_resizing_is_linear_interpolation(t, size):
    rng = np.random.default_rng(t)
    heatmaps = rng.random((6, t))
    expected = np.stack([_interp(h, size) for h in heatmaps])
    # Each mask marks the independently resized map's peak: every image is a hit only if the peaks agree.
    masks = np.eye(size, dtype=bool)[expected.argmax(axis=1)]
    assert metrics.pointing_game_per_image(heatmaps, masks).all()
    assert not metrics.pointing_game_per_image(heatmaps, np.roll(masks, 1, axis=1)).any()
    mask = rng.random(size) < 0.4
    share = expected[0][mask].sum() / expected[0].sum()
    assert metrics.energy_pointing_game(heatmaps[:1], mask[None]) == pytest.approx(share, rel=1e-5)


@pytest.mark.parametrize("shape, size", [((4, 3, 5), (16, 12, 20)), ((9, 8, 7), (4, 5, 3))])
def test_three_dimensional_resizing_is_trilinear(shape, size):
    import cv2

    rng = np.random.default_rng(1)
    heatmap = rng.random(shape).astype(np.float32)
    # Independently: cv2's bilinear resize of each slice, then np.interp across slices.
    slices = np.stack([cv2.resize(s, (size[2], size[1]), interpolation=cv2.INTER_LINEAR) for s in heatmap])
    expected = np.apply_along_axis(_interp, 0, slices, size[0])
    mask = rng.random(size) < 0.3
    share = expected[mask].sum() / expected.sum()
    assert metrics.energy_pointing_game(heatmap[None], mask[None]) == pytest.approx(share, rel=1e-5)
    peak = np.zeros((1, *size), bool)
    peak[(0, *np.unravel_index(expected.argmax(), size))] = True
    assert metrics.pointing_game(heatmap[None], peak) == 1.0
    np.testing.assert_allclose(_resample.resize_linear(heatmap, size), expected, atol=1e-6)


def test_separable_resize_matches_cv2_in_2d():
    import cv2

    maps = np.random.default_rng(2).random((2, 7, 11)).astype(np.float32)
    for h, w in [(20, 30), (3, 4), (7, 5)]:
        expected = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps])
        got = _resample.resize_axis(_resample.resize_axis(maps, 1, h), 2, w)
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("heatmaps, masks, message", [
    (np.zeros((2, 5)), np.ones((2, 4, 4, 4), bool),
     r"must both be \(N, T\), \(N, H, W\) or \(N, D, H, W\), with the same rank; got shapes \(2, 5\) and "
     r"\(2, 4, 4, 4\)\.$"),
    (np.zeros((2, 5)), np.ones((2, 5, 5), bool), r"same rank; .* For one image, add a batch axis"),
    (np.zeros(5), np.ones(5, bool), r"For one signal, add a batch axis"),
    (np.zeros((4, 4, 4)), np.ones((1, 4, 4, 4), bool), r"For one volume, add a batch axis: heatmap\[None\]"),
    (np.zeros((2, 4, 4, 4, 1)), np.ones((2, 4, 4, 4), bool), r"Drop the channel axis first: heatmaps\["),
    (np.zeros((2, 4, 4)), np.ones((2, 4, 4, 1), bool), r"Drop the channel axis first: masks\[\.\.\., 0\]"),
    (np.zeros((1, 2, 2, 2, 2)), np.ones((1, 2, 2, 2, 2), bool), r"\(N, D, H, W\), with the same rank"),
    (np.zeros((2, 8)), np.stack([np.ones(8, bool), np.zeros(8, bool)]), r"Masks \[1\] are empty"),
    (np.full((2, 3, 3, 3), np.inf), np.ones((2, 3, 3, 3), bool), r"`heatmaps` \[0, 1\] contain NaN"),
])
def test_bad_nd_input(heatmaps, masks, message):
    for score in (metrics.pointing_game, metrics.energy_pointing_game):
        with pytest.raises(ValueError, match=message):
            score(heatmaps, masks)


@pytest.mark.backends
def test_backend_tensors_in_1d_and_3d():
    import keras

    masks = np.zeros((2, 4, 5, 6), bool)
    masks[:, 1:4, 1:4, 1:4] = True
    heatmaps = np.zeros((2, 2, 3, 3), np.float32)
    heatmaps[0, 0, 0, 0] = 1.0  # maps at lower resolution: this peak resizes onto the corner voxel (0, 0, 0)
    heatmaps[1, 1, 1, 1] = 1.0  # and this one onto (3, 2, 2)
    tensor = keras.ops.convert_to_tensor(heatmaps)
    assert metrics.pointing_game_per_image(tensor, masks).tolist() == [False, True]
    signals = keras.ops.convert_to_tensor(np.eye(6)[[1, 4]])  # peaks at samples 1 and 4
    assert metrics.pointing_game(signals, np.eye(6, dtype=bool)[[1, 3]]) == 0.5


# --- Boxes and localization -------------------------------------------------------------------------------

def test_boxes_from_heatmaps_largest_region_and_threshold():
    heatmaps = np.zeros((3, 12, 16), np.float32)
    heatmaps[0, 2:5, 3:7] = 0.5     # 12 pixels, dimmer
    heatmaps[0, 8:10, 12:14] = 1.0  # 4 pixels, the maximum
    heatmaps[1, 6, 2] = heatmaps[1, 7, 3] = heatmaps[1, 8, 4] = 1.0  # diagonal steps: one 8-connected region
    heatmaps[1, 0, 15] = 1.0
    heatmaps[2, 4:6, 1:3] = 1.0     # two regions of 4 pixels: the one starting first in row-major order wins
    heatmaps[2, 1:3, 10:12] = 1.0
    h0 = heatmaps.copy()
    boxes = metrics.boxes_from_heatmaps(heatmaps)
    assert boxes.dtype == np.int64 and boxes.shape == (3, 4)
    assert boxes.tolist() == [[3, 2, 7, 5], [2, 6, 5, 9], [10, 1, 12, 3]]
    # Above half the maximum only the small bright blob is left.
    assert metrics.boxes_from_heatmaps(heatmaps[:1], threshold=0.6).tolist() == [[12, 8, 14, 10]]
    assert metrics.boxes_from_heatmaps(heatmaps[:1], threshold=0.5).tolist() == [[3, 2, 7, 5]]  # >= keeps 0.5
    np.testing.assert_array_equal(heatmaps, h0)


def test_boxes_from_heatmaps_keeps_only_pixels_near_the_maximum():
    ramp = np.tile(np.arange(10, dtype=np.float32), (6, 1))[None]  # columns 0..9, maximum 9
    assert metrics.boxes_from_heatmaps(ramp, threshold=0.5).tolist() == [[5, 0, 10, 6]]  # 4.5 <= value
    assert metrics.boxes_from_heatmaps(ramp, threshold=1.0).tolist() == [[9, 0, 10, 6]]
    assert metrics.boxes_from_heatmaps(ramp, threshold=0.0).tolist() == [[0, 0, 10, 6]]


def test_boxes_from_flat_or_negative_maps_are_the_whole_image():
    maps = np.stack([np.zeros((5, 7)), -np.ones((5, 7)), np.full((5, 7), 0.3)])
    assert metrics.boxes_from_heatmaps(maps).tolist() == [[0, 0, 7, 5]] * 3


def test_box_iou_hand_computed():
    a = [[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 10, 10], [1, 1, 5, 3], [3, 3, 3, 3]]
    b = [[2, 1, 6, 3], [0, 0, 4, 4], [2, 0, 4, 2], [2, 2, 4, 4], [2, 0, 4, 6], [3, 3, 3, 3]]
    # 2x2 overlap of 16 and 8 px; identical; edges touch (half-open: no shared pixel); 4 of 100;
    # 2x2 of 8 and 12 px; two empty boxes.
    expected = [4 / 20, 1.0, 0.0, 0.04, 4 / 16, 0.0]
    np.testing.assert_allclose(metrics.box_iou(a, b), expected)
    np.testing.assert_allclose(metrics.box_iou(b, a), expected)  # symmetric
    assert metrics.box_iou(np.array(a, np.int64), b).dtype == np.float64


def test_localization_accuracy():
    true = [[0, 0, 4, 2], [0, 0, 4, 4], [0, 0, 4, 4], [10, 10, 20, 20]]
    pred = [[0, 0, 2, 2], [0, 0, 4, 5], [2, 2, 6, 6], [0, 0, 5, 5]]  # IoU 0.5, 0.8, 1/7, 0
    assert metrics.localization_accuracy(pred, true) == 0.5  # IoU exactly 0.5 counts
    assert metrics.localization_accuracy(pred, true, iou=0.51) == 0.25
    assert metrics.localization_accuracy(pred, true, iou=0.1) == 0.75
    assert metrics.localization_accuracy(true, true, iou=1.0) == 1.0


def test_boxes_of_shape_masks_are_the_true_boxes():
    from keras_cam.datasets import make_shapes

    _, _, masks, boxes = make_shapes(12, size=32, seed=4, return_boxes=True)
    found = metrics.boxes_from_heatmaps(masks.astype(np.float32))
    np.testing.assert_array_equal(found, boxes)
    assert metrics.localization_accuracy(found, boxes, iou=1.0) == 1.0
    shifted = boxes + np.array([1, 0, 1, 0])  # one pixel to the right: IoU < 1 but still large
    assert metrics.localization_accuracy(shifted, boxes, iou=1.0) == 0.0
    assert metrics.localization_accuracy(shifted, boxes, iou=0.5) == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.boxes_from_heatmaps(np.zeros((1, 4, 4)), threshold=1.5), r"`threshold` .*in \[0, 1\]"),
    (lambda: metrics.boxes_from_heatmaps(np.zeros((1, 4, 4)), threshold=True), "`threshold`"),
    (lambda: metrics.boxes_from_heatmaps(np.zeros((4, 4))), r"\(N, H, W\).*heatmap\[None\]"),
    (lambda: metrics.boxes_from_heatmaps(np.zeros((1, 4, 4, 4))), r"\(N, H, W\) array of 2-D maps"),
    (lambda: metrics.boxes_from_heatmaps(np.full((2, 3, 3), np.nan)), r"`heatmaps` \[0, 1\] contain NaN"),
    (lambda: metrics.box_iou([0, 0, 2, 2], [[0, 0, 2, 2]]), r"`boxes_a` must have shape \(N, 4\).*\[None\]"),
    (lambda: metrics.box_iou([[0, 0, 2, 2]], [[0, 0, 2, 2, 1]]), r"`boxes_b` must have shape \(N, 4\)"),
    (lambda: metrics.box_iou([[0, 0, 2, 2]] * 2, [[0, 0, 2, 2]]), "Got 2 boxes in `boxes_a` and 1 in"),
    (lambda: metrics.box_iou([[4, 0, 2, 2]], [[0, 0, 2, 2]]), r"rows \[0\] end before they start.*width,"),
    (lambda: metrics.box_iou([[0, 0, 2, np.nan]], [[0, 0, 2, 2]]), r"rows \[0\] contain NaN"),
    (lambda: metrics.box_iou([["a", 0, 2, 2]], [[0, 0, 2, 2]]), "numeric array of shape"),
    (lambda: metrics.localization_accuracy([[0, 0, 2, 2]], [[0, 0, 2, 2]], iou=0), r"`iou` .*in \(0, 1\]"),
    (lambda: metrics.localization_accuracy([[0, 0, 2, 2]], [[0, 0, 2, 2]], iou=1.5), "`iou`"),
])
def test_bad_box_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_metrics_module_does_not_import_keras():
    import subprocess
    import sys

    code = ("import sys, keras_cam.metrics as m; assert callable(m.boxes_from_heatmaps); "
            "print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_old_module_paths_give_the_same_scores():
    """`keras_cam.faithfulness`, `keras_cam.road` and `keras_cam.sanity` are kept for code written before the
    scores moved into the `keras_cam.metrics` package: the same objects, under the old names."""
    import importlib

    import keras_cam as kc

    faithfulness = importlib.import_module("keras_cam.faithfulness")
    road = importlib.import_module("keras_cam.road")
    sanity = importlib.import_module("keras_cam.sanity")
    assert faithfulness is importlib.import_module("keras_cam.metrics.faithfulness")
    assert sanity is importlib.import_module("keras_cam.metrics.sanity")
    assert faithfulness.deletion_auc is kc.metrics.deletion_auc
    assert faithfulness.insertion_auc is kc.metrics.insertion_auc
    assert sanity.sanity_check is kc.metrics.sanity_check and sanity.spearman is kc.metrics.spearman
    imputation = importlib.import_module("keras_cam.metrics.imputation")
    confidence = importlib.import_module("keras_cam.metrics.confidence")
    for name in road.__all__:
        assert getattr(road, name) in (getattr(imputation, name, None), getattr(confidence, name, None)), name
    assert road.road is kc.metrics.road and road.average_drop is kc.metrics.average_drop
    assert road.increase_in_confidence is kc.metrics.increase_in_confidence
