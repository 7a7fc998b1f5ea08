"""Pointing games on hand-made heatmaps and masks."""
import numpy as np
import pytest

from keras_cam import metrics


def _case():
    masks = np.zeros((4, 10, 10), bool)
    masks[:, 2:5, 2:5] = True
    heatmaps = np.zeros((4, 10, 10), np.float32)
    heatmaps[0, 3, 3] = 1.0   # peak inside
    heatmaps[1, 8, 8] = 1.0   # far outside
    heatmaps[2, 5, 5] = 1.0   # one pixel off the corner
    heatmaps[3, 2, 4] = 1.0   # inside, on the edge
    return heatmaps, masks


def test_pointing_game_values_and_tolerance():
    heatmaps, masks = _case()
    h0, m0 = heatmaps.copy(), masks.copy()
    assert metrics.pointing_game_per_image(heatmaps, masks).tolist() == [True, False, False, True]
    assert metrics.pointing_game(heatmaps, masks) == 0.5
    assert metrics.pointing_game(heatmaps, masks, tolerance=1) == 0.75
    np.testing.assert_array_equal(heatmaps, h0)
    np.testing.assert_array_equal(masks, m0)


def test_pointing_game_resizes_heatmaps_to_masks():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 10:, 10:] = True
    low = np.zeros((1, 4, 4), np.float32)
    low[0, 3, 3] = 1.0
    assert metrics.pointing_game(low, masks) == 1.0


def test_energy_pointing_game():
    masks = np.zeros((2, 10, 10), bool)
    masks[:, :5] = True  # half the image
    uniform = np.ones((2, 10, 10), np.float32)
    assert metrics.energy_pointing_game(uniform, masks) == pytest.approx(0.5)
    inside = np.where(masks, 1.0, -3.0).astype(np.float32)  # negatives are clipped
    assert metrics.energy_pointing_game(inside, masks) == pytest.approx(1.0)
    assert metrics.energy_pointing_game(np.zeros((2, 10, 10)), masks) == 0.0


@pytest.mark.parametrize("heatmaps, masks, message", [
    (np.zeros((2, 5, 5)), np.ones((3, 5, 5), bool), "one mask per heatmap"),
    (np.zeros((5, 5)), np.ones((5, 5), bool), r"\(N, H, W\)"),
    (np.full((1, 5, 5), np.nan), np.ones((1, 5, 5), bool), "NaN"),
    (np.zeros((2, 5, 5)), np.stack([np.ones((5, 5), bool), np.zeros((5, 5), bool)]), r"Masks \[1\] are empty"),
])
def test_bad_input(heatmaps, masks, message):
    with pytest.raises(ValueError, match=message):
        metrics.pointing_game(heatmaps, masks)
