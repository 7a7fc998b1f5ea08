"""Overlays, grids and image files (OpenCV, RGB in and out)."""
import os

import cv2
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import visualize


def test_overlay_blend_endpoints_and_colormap():
    rng = np.random.default_rng(0)
    image = rng.random((8, 10, 3)).astype(np.float32)
    heat = np.zeros((8, 10), np.float32)
    heat[2, 3] = 1.0
    copy = image.copy()
    np.testing.assert_array_equal(kc.overlay(image, heat, alpha=0.0), visualize.to_uint8(image))
    full = kc.overlay(image, heat, alpha=1.0)
    assert tuple(full[2, 3]) == (128, 0, 0)  # jet at 1.0 is dark red, in RGB order
    assert full[0, 0, 2] > 100 and full[0, 0, 0] == 0  # jet at 0.0 is blue
    np.testing.assert_array_equal(kc.overlay(visualize.to_uint8(image), heat), kc.overlay(image, heat))
    np.testing.assert_array_equal(image, copy)
    # A low-resolution heatmap is resized to the image.
    assert kc.overlay(image, np.ones((2, 2))).shape == (8, 10, 3)
    assert kc.overlay(image[..., 0], heat).shape == (8, 10, 3)  # grayscale image


def test_overlay_errors():
    image = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="Unknown colormap 'jett'.*jet"):
        kc.overlay(image, np.zeros((4, 4)), colormap="jett")
    with pytest.raises(ValueError, match="alpha"):
        kc.overlay(image, np.zeros((4, 4)), alpha=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kc.overlay(image * 255 + 2, np.zeros((4, 4)))


def test_image_grid_layout():
    tiles = [np.full((4, 6, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)]
    grid = kc.image_grid(tiles, cols=3, margin=2)
    assert grid.shape == (2 * 4 + 2, 3 * 6 + 2 * 2, 3)  # seed 004's formula: no outer margin
    assert grid[0, 0, 0] == 10 and grid[0, 8, 0] == 20 and grid[6, 0, 0] == 40 and grid[6, 8, 0] == 50
    assert grid[4, 0, 0] == 0 and grid[6, 16, 0] == 0  # margin and the empty sixth tile
    assert kc.image_grid(tiles[:4]).shape == (13, 17, 3)  # default: ceil(sqrt(4)) = 2 columns, margin 5
    labelled = kc.image_grid([np.full((40, 60, 3), 200, np.uint8)] * 2, labels=["a", "b"])
    assert labelled[:8, :8].min() < 200  # the label box is drawn
    with pytest.raises(ValueError, match="same size"):
        kc.image_grid([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))])


def test_save_image_round_trip_is_rgb_and_atomic(tmp_path):
    red = np.zeros((5, 7, 3), np.float32)
    red[..., 0] = 1.0
    path = kc.save_image(tmp_path / "sub" / "red.png", red)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert back[0, 0].tolist() == [255, 0, 0]
    np.testing.assert_allclose(visualize.read_image(path), red)
    assert os.listdir(tmp_path / "sub") == ["red.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match=r"\.png"):
        kc.save_image(tmp_path / "x.bmp", red)
    with pytest.raises(ValueError, match="does not exist"):
        visualize.read_image(tmp_path / "missing.png")
