"""Pointing games on hand-made heatmaps and masks, where the right score is known."""
import numpy as np
import pytest

from keras_cam import metrics


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
    (np.zeros((5, 5)), np.ones((5, 5), bool), r"\(N, H, W\).*heatmap\[None\]"),
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
