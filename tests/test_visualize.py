"""Overlays, grids (images, feature maps, kernels) and image files (OpenCV inside, RGB in and out)."""
import os

import cv2
import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import visualize
from keras_cam.visualize import feature_map_grid, kernel_grid
from tests.conftest import classifier

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # responds to vertical edges


def test_to_uint8():
    assert visualize.to_uint8(np.array([0.0, 0.2, 0.5, 1.0])).tolist() == [0, 51, 128, 255]
    u8 = np.array([[1, 2]], np.uint8)
    out = visualize.to_uint8(u8)
    out[0, 0] = 9
    assert u8[0, 0] == 1  # a copy, not a view
    assert visualize.to_uint8(np.array([True, False])).tolist() == [255, 0]
    assert visualize.to_uint8(np.array([0, 255], np.int64)).tolist() == [0, 255]
    with pytest.raises(ValueError, match=r"\[0, 1\].*image / 255"):
        visualize.to_uint8(np.array([0.0, 200.0]))
    with pytest.raises(ValueError, match="0..255"):
        visualize.to_uint8(np.array([-1, 3]))
    with pytest.raises(ValueError, match="NaN"):
        visualize.to_uint8(np.array([np.nan]))


def test_overlay_blend_endpoints_and_colormap():
    rng = np.random.default_rng(0)
    image = rng.random((8, 10, 3)).astype(np.float32)
    heat = np.zeros((8, 10), np.float32)
    heat[2, 3] = 1.0
    image0, heat0 = image.copy(), heat.copy()
    np.testing.assert_array_equal(kc.overlay(image, heat, alpha=0.0), visualize.to_uint8(image))
    full = kc.overlay(image, heat, alpha=1.0)
    assert full.dtype == np.uint8 and full.shape == (8, 10, 3)
    assert tuple(full[2, 3]) == (128, 0, 0)  # jet at 1.0 is dark red, in RGB order
    assert tuple(full[0, 0]) == (0, 0, 128)  # jet at 0.0 is dark blue
    # alpha=1 is the colormap itself, whatever the image.
    np.testing.assert_array_equal(full, kc.overlay(np.ones_like(image), heat, alpha=1.0))
    # The blend is convex: a 50/50 mix of the two endpoints.
    half = kc.overlay(image, heat, alpha=0.5).astype(int)
    expected = (full.astype(int) + visualize.to_uint8(image).astype(int)) / 2
    assert np.abs(half - expected).max() <= 1
    # uint8 and float images give the same picture; inputs are untouched.
    np.testing.assert_array_equal(kc.overlay(visualize.to_uint8(image), heat), kc.overlay(image, heat))
    np.testing.assert_array_equal(image, image0)
    np.testing.assert_array_equal(heat, heat0)


def test_overlay_resizes_clips_and_takes_grayscale():
    image = np.full((8, 10, 3), 0.5, np.float32)
    big = kc.overlay(image, np.ones((2, 2)), alpha=1.0)   # a low-resolution map is resized to the image
    assert big.shape == (8, 10, 3) and (big == (128, 0, 0)).all()
    np.testing.assert_array_equal(kc.overlay(image, np.full((8, 10), 7.0), alpha=1.0), big)  # clipped to 1
    gray = kc.overlay(image[..., 0], np.zeros((8, 10)), alpha=0.0)
    assert gray.shape == (8, 10, 3) and (gray == 128).all()
    np.testing.assert_array_equal(kc.overlay(image[..., :1], np.zeros((8, 10)), alpha=0.0), gray)


def test_overlay_colormaps_by_name_or_value():
    image = np.zeros((4, 4, 3), np.uint8)
    heat = np.linspace(0, 1, 16).reshape(4, 4)
    jet = kc.overlay(image, heat, alpha=1.0)
    np.testing.assert_array_equal(kc.overlay(image, heat, alpha=1.0, colormap="JET"), jet)
    np.testing.assert_array_equal(kc.overlay(image, heat, alpha=1.0, colormap=cv2.COLORMAP_JET), jet)
    viridis = kc.overlay(image, heat, alpha=1.0, colormap="viridis")
    assert not np.array_equal(viridis, jet)
    bgr = cv2.applyColorMap(visualize.to_uint8(heat), cv2.COLORMAP_VIRIDIS)
    np.testing.assert_array_equal(viridis, bgr[..., ::-1])
    assert {"jet", "viridis", "inferno", "turbo", "hot"} <= set(visualize.colormap_names())


@pytest.mark.parametrize("kwargs, message", [
    (dict(colormap="jett"), "Unknown colormap 'jett'. Did you mean 'jet'.*viridis"),
    (dict(colormap=999), "Unknown OpenCV colormap value 999"),
    (dict(alpha=2), "`alpha`.*in \\[0, 1\\]"),
    (dict(alpha=-0.1), "`alpha`"),
    (dict(alpha=float("nan")), "`alpha`"),
    (dict(image=np.full((4, 4, 3), 2.0)), r"\[0, 1\]"),
    (dict(image=np.zeros((4, 4, 2))), r"\(H, W, 3\)"),
    (dict(heatmap=np.zeros((2, 4, 4))), "one 2-D map"),
    (dict(heatmap=np.full((4, 4), np.nan)), "NaN"),
])
def test_overlay_errors(kwargs, message):
    args = dict(image=np.zeros((4, 4, 3), np.float32), heatmap=np.zeros((4, 4)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kc.overlay(**args)


def test_image_grid_layout():
    tiles = [np.full((4, 6, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)]
    grid = kc.image_grid(tiles, cols=3, margin=2)
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * 4 + 1 * 2, 3 * 6 + 2 * 2, 3)  # no outer margin
    for i, value in enumerate((10, 20, 30, 40, 50)):
        r, c = divmod(i, 3)
        y, x = r * (4 + 2), c * (6 + 2)
        assert (grid[y : y + 4, x : x + 6] == value).all()
    assert (grid[4:6] == 0).all() and (grid[:, 6:8] == 0).all()  # margins
    assert (grid[6:, 16:] == 0).all()  # the empty sixth cell
    assert kc.image_grid(tiles[:4]).shape == (13, 17, 3)  # default: ceil(sqrt(4)) = 2 columns, margin 5
    assert kc.image_grid(tiles[:3]).shape == (13, 17, 3)
    # An (N, H, W) float array of grayscale images; background colours the margins.
    gray = kc.image_grid(np.stack([np.zeros((3, 3)), np.ones((3, 3))]), cols=2, margin=1, background=77)
    assert gray.shape == (3, 7, 3) and gray[0, 0, 0] == 0 and gray[0, 3, 0] == 77 and gray[0, 4, 0] == 255


def test_image_grid_labels_stay_in_their_tile():
    tiles = [np.full((40, 60, 3), 200, np.uint8)] * 2
    labelled = kc.image_grid(tiles, cols=2, margin=4, background=100, labels=["circle 0.98", ""])
    assert labelled[:8, :8].min() < 200  # the dark box is drawn at the top-left corner
    assert (labelled[:, 60:64] == 100).all()  # no text spills into the margin
    assert (labelled[:, 64:] == 200).all()  # an empty label draws nothing
    assert (kc.image_grid(tiles, cols=2, margin=4, background=100) != labelled).any()
    np.testing.assert_array_equal(tiles[0], np.full((40, 60, 3), 200, np.uint8))  # inputs untouched


@pytest.mark.parametrize("args, message", [
    (([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))],), "same size"),
    (([],), "empty"),
    ((np.zeros((4, 4)),), r"single image, pass \[image\]"),
    (([np.zeros((4, 4, 3))] * 2, 0), "`cols` must be an integer >= 1"),
    (([np.zeros((4, 4, 3))] * 2, 2, -1), "`margin`"),
    (([np.zeros((4, 4, 3))] * 2, 2, 1, 300), r"`background` must be an integer in 0\.\.255"),
    (([np.zeros((4, 4, 3))] * 2, 2, 1, 0, ["a"]), "`labels` must be a list of 2 strings"),
])
def test_image_grid_errors(args, message):
    with pytest.raises(ValueError, match=message):
        kc.image_grid(*args)


def test_save_image_round_trip_is_rgb_and_atomic(tmp_path):
    red = np.zeros((5, 7, 3), np.float32)
    red[..., 0] = 1.0
    red0 = red.copy()
    path = kc.save_image(tmp_path / "sub" / "red.png", red)  # the parent directory is created
    assert path == tmp_path / "sub" / "red.png"
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert back.shape == (5, 7, 3) and (back == (255, 0, 0)).all()
    np.testing.assert_array_equal(red, red0)
    np.testing.assert_allclose(visualize.read_image(path), red)
    assert os.listdir(tmp_path / "sub") == ["red.png"]  # no temporary file left behind
    # Overwriting replaces the file; the permissions follow the umask, not mkstemp's 0o600.
    kc.save_image(str(path), visualize.to_uint8(red)[..., ::-1])
    assert (visualize.read_image(path)[..., 2] == 1.0).all()
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_save_image_grayscale_and_jpeg(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))
    back = visualize.read_image(kc.save_image(tmp_path / "ramp.png", ramp))
    assert back.shape == (8, 16, 3)
    np.testing.assert_allclose(back[..., 1], np.round(ramp * 255) / 255)
    jpeg = visualize.read_image(kc.save_image(tmp_path / "ramp.JPG", ramp[..., None]))
    assert np.abs(jpeg[..., 0] - ramp).max() < 0.05  # lossy, but close
    assert sorted(os.listdir(tmp_path)) == ["ramp.JPG", "ramp.png"]


def test_save_image_errors_leave_nothing_behind(tmp_path):
    red = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\.png, \.jpg or \.jpeg, got '\.bmp'"):
        kc.save_image(tmp_path / "x.bmp", red)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kc.save_image(tmp_path / "x.png", red * 255.0 + 3.0)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="file/sub/x.png"):
        kc.save_image(blocker / "sub" / "x.png", red)
    (tmp_path / "dir.png").mkdir()  # the target is a directory: os.replace fails after the temp file exists
    with pytest.raises(OSError, match="dir.png"):
        kc.save_image(tmp_path / "dir.png", red)
    assert sorted(os.listdir(tmp_path)) == ["dir.png", "file"]


def test_read_image(tmp_path):
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, :4] = (255, 0, 0)
    image[:, 4:] = (0, 0, 255)
    path = kc.save_image(tmp_path / "two.png", image)
    back = visualize.read_image(path)
    assert back.dtype == np.float32 and back.shape == (6, 8, 3)
    assert back[0, 0].tolist() == [1.0, 0.0, 0.0] and back[0, 7].tolist() == [0.0, 0.0, 1.0]
    small = visualize.read_image(str(path), size=(3, 4))
    assert small.shape == (3, 4, 3) and small[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert visualize.read_image(path, size=12).shape == (12, 12, 3)
    with pytest.raises(ValueError, match="missing.png' does not exist"):
        visualize.read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot decode .*junk.png"):
        visualize.read_image(tmp_path / "junk.png")
    with pytest.raises(ValueError, match="`size`"):
        visualize.read_image(path, size=(0, 4))


def test_feature_map_grid_normalizes_each_channel():
    maps = np.zeros((6, 8, 3), np.float32)
    maps[..., 0] = np.arange(8)[None, :] * 1000.0  # a ramp at a large scale
    maps[..., 1] = np.arange(6)[:, None] * -0.001  # a ramp at a tiny, negative scale
    maps[..., 2] = 7.0  # constant
    grid = feature_map_grid(maps, colormap=None, margin=2)
    assert grid.shape == (2 * 6 + 2, 2 * 8 + 2, 3) and grid.dtype == np.uint8
    first, second, third = grid[:6, :8, 0], grid[:6, 10:18, 0], grid[8:14, :8, 0]
    assert first[:, 0].max() == 0 and first[:, -1].min() == 255
    assert second[0].min() == 255 and second[-1].max() == 0  # -0.001 * row: top is the largest
    assert third.max() == 0
    assert feature_map_grid(maps, scale=3).shape == (2 * 18 + 5, 2 * 24 + 5, 3)  # magma by default


def test_kernel_grid_pictures_kernels():
    rgb = keras.layers.Conv2D(4, 3, use_bias=False, kernel_initializer="zeros")
    rgb.build((None, 8, 8, 3))
    kernel = np.zeros((3, 3, 3, 4), np.float32)
    kernel[1, 1, 0, 0] = 2.0  # filter 0: a red dot on mid-grey
    kernel[0, 0, 2, 0] = -2.0  # ... and a dark blue corner
    kernel[:, :, :, 1] = 0.3
    rgb.set_weights([kernel])
    grid = kernel_grid(rgb)  # 3x3 kernels x8: 24 px tiles, 2 columns, 2 px margins
    assert grid.shape == (2 * 24 + 2, 2 * 24 + 2, 3)
    center = grid[8:16, 8:16]
    assert np.all(center[..., 0] == 255) and np.all(center[..., 1:] == 128)
    assert np.all(grid[:8, :8, 2] == 0)
    assert np.all(grid[:24, 26:50] == 255)  # a uniform positive kernel is white

    grey = keras.layers.Conv2D(3, 3, kernel_initializer="zeros")
    grey.build((None, 8, 8, 1))
    weights = np.zeros((3, 3, 1, 3), np.float32)
    weights[:, :, 0, 0] = SOBEL_X
    grey.set_weights([weights, np.zeros(3, np.float32)])
    tiles = kernel_grid(grey, cols=3, scale=1, margin=0)
    assert tiles.shape == (3, 9, 3)
    np.testing.assert_array_equal(tiles[:, :3, 0], [[64, 128, 191], [0, 128, 255], [64, 128, 191]])
    deep = keras.layers.Conv2D(2, 3, kernel_initializer="zeros")
    deep.build((None, 8, 8, 5))
    assert kernel_grid(deep, per_input=True, scale=2, margin=1).shape == (2 * 6 + 1, 5 * 6 + 4, 3)


def test_grid_errors():
    with pytest.raises(ValueError, match="Conv2D.*'probs' \\(Dense\\)"):
        kernel_grid(classifier().get_layer("probs"))
    with pytest.raises(ValueError, match="layer object"):
        kernel_grid("conv1")
    with pytest.raises(ValueError, match="maps\\[0\\]"):
        feature_map_grid(np.zeros((1, 4, 4, 2)))
