"""Overlays, grids (images, feature maps, kernels) and image files (OpenCV inside, RGB in and out)."""
import os

import cv2
import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import visualize
from keras_cam.visualize import feature_map_grid, kernel_grid, overlay_signal, volume_montage
from keras_cam._resample import resize_linear
from tests.models import classifier

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
    (dict(boxes=[[3, 0, 1, 2]]), r"`boxes` rows \[0\] end before they start.*not \(x, y, width, height\)"),
    (dict(boxes=[[0, 0, 1, np.inf]]), r"`boxes` rows \[0\] contain NaN or infinite"),
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


# --- Signals: overlay_signal and 1-D feature maps ---------------------------------------------------------

JET_RED, JET_BLUE = (128, 0, 0), (0, 0, 128)  # cv2's jet at 1.0 and 0.0, in RGB order
STEP = np.r_[np.zeros(50), np.ones(50)]  # a step up half-way


def _brightest_rows(picture, column):
    """The rows where the line (white, over a darker band) is at its brightest in one column."""
    level = picture[:, column].astype(int).sum(-1)
    return np.flatnonzero(level == level.max()).tolist()


def test_overlay_signal_band_follows_the_heatmap():
    flat = np.zeros(100)  # a flat signal: one line through the middle (row 49), away from the top rows
    heat = np.r_[np.ones(50), np.zeros(50)]
    picture = overlay_signal(flat, heat, height=100, width=200, alpha=1.0)
    assert picture.dtype == np.uint8 and picture.shape == (100, 200, 3)
    assert (picture[:40, :98] == JET_RED).all() and (picture[:40, 102:] == JET_BLUE).all()
    assert (picture[60:, :98] == JET_RED).all() and (picture[60:, 102:] == JET_BLUE).all()
    # alpha scales the band, on black: at 0.5, half of jet's colours; at 0, black.
    assert tuple(overlay_signal(flat, heat, height=100, width=200, alpha=0.5)[0, 0]) == (64, 0, 0)
    assert (overlay_signal(flat, heat, height=100, width=200, alpha=0.0)[:40] == 0).all()
    # A map at another length is resized linearly (pixel centres aligned, as cv2.resize) to the width.
    coarse = np.array([0.0, 0.2, 1.0, 0.6, 0.1])
    row = cv2.resize(coarse[None].astype(np.float32), (200, 1), interpolation=cv2.INTER_LINEAR)
    expected = cv2.applyColorMap(visualize.to_uint8(row), cv2.COLORMAP_JET)[0, :, ::-1]
    band = overlay_signal(flat, coarse, height=100, width=200, alpha=1.0)[0]
    assert np.abs(band.astype(int) - expected).max() <= 1
    # Values outside [0, 1] are clipped, other colormaps by name.
    np.testing.assert_array_equal(overlay_signal(flat, heat * 7 - 3, height=100, width=200, alpha=1.0),
                                  picture)
    viridis = overlay_signal(flat, heat, height=100, width=200, alpha=1.0, colormap="viridis")
    top = cv2.applyColorMap(np.uint8([[255]]), cv2.COLORMAP_VIRIDIS)[0, 0, ::-1]
    assert tuple(viridis[0, 0]) == tuple(top)


def test_overlay_signal_line_rows():
    # height 100: margins of 10 rows, so the minimum is drawn at row 89 and the maximum at row 10.
    picture = overlay_signal(STEP, np.zeros(100), height=100, width=200)
    assert _brightest_rows(picture, 50) == [89] and _brightest_rows(picture, 150) == [10]
    assert picture[89, 50].min() > 200 and picture[10, 150].min() > 200  # a light line
    assert tuple(picture[30, 50]) == tuple(np.round(0.6 * np.array(JET_BLUE)).astype(int))  # the band
    # The vertical scale is the signal's own min-max: any offset and gain draw the same picture.
    np.testing.assert_array_equal(overlay_signal(STEP * -0.001 + 5, np.zeros(100), height=100, width=200),
                                  overlay_signal(-STEP, np.zeros(100), height=100, width=200))
    flipped = overlay_signal(-STEP, np.zeros(100), height=100, width=200)
    assert _brightest_rows(flipped, 50) == [10] and _brightest_rows(flipped, 150) == [89]
    # A flat signal is a line through the middle, on a pixel row: rows 10 and 89 -> 49.
    assert _brightest_rows(overlay_signal(np.full(100, 3.0), np.zeros(100), height=100, width=200),
                           70) == [49]
    line = overlay_signal(STEP, np.zeros(100), height=100, width=200, line_color=(255, 0, 0), thickness=3)
    assert tuple(line[89, 50]) == (255, 0, 0) and tuple(line[10, 150]) == (255, 0, 0)


def test_overlay_signal_channels_are_stacked_lanes():
    # Two lanes of 50 rows with margins of 5: lane 0 spans rows 5..44, lane 1 rows 55..94.
    signal = np.stack([STEP, np.full(100, 2.0)], axis=-1)
    picture = overlay_signal(signal, np.zeros(100), height=100, width=200)
    assert _brightest_rows(picture[:50], 50) == [44] and _brightest_rows(picture[:50], 150) == [5]
    assert _brightest_rows(picture[50:], 50) == [24]  # flat: the middle of its lane, row 74
    np.testing.assert_array_equal(overlay_signal(STEP[:, None], np.zeros(100), height=100, width=200),
                                  overlay_signal(STEP, np.zeros(100), height=100, width=200))


def test_overlay_signal_width():
    heat = np.zeros(10)
    assert overlay_signal(np.zeros(100), heat).shape == (160, 256, 3)  # at least 256 wide
    assert overlay_signal(np.zeros(300), heat).shape == (160, 300, 3)  # one pixel per sample
    assert overlay_signal(np.zeros(5000), heat).shape == (160, 2048, 3)  # at most 2048
    assert overlay_signal(np.zeros(300), heat, height=40, width=50).shape == (40, 50, 3)
    # Stretched to 4x its length, a step still climbs between samples 49 and 50, now x = 198 .. 202.
    wide = overlay_signal(STEP, heat, height=100, width=400)
    assert _brightest_rows(wide, 190) == [89] and _brightest_rows(wide, 210) == [10]
    # Squeezed to 1/10, every column holds 10 samples; the line still spans the lane.
    narrow = overlay_signal(np.tile([0.0, 1.0], 500), heat, height=100, width=100)
    assert picture_rows_lit(narrow, 50) >= set(range(12, 88))


def picture_rows_lit(picture, column):
    return set(np.flatnonzero(picture[:, column].min(-1) > 150).tolist())


def test_overlay_signal_mask_strip():
    mask = np.zeros(100, bool)
    mask[20:40] = True
    picture = overlay_signal(STEP, np.ones(100), height=80, width=200, mask=mask, alpha=1.0)
    assert picture.shape == (80, 200, 3)
    strip = picture[77:]  # max(3, 80 // 40) = 3 rows along the bottom
    assert (strip[:, 40:80] == 255).all()  # samples 20..39 -> columns 40..79
    assert (strip[:, :40] == 0).all() and (strip[:, 80:] == 0).all()
    assert (picture[76, 100:] == JET_RED).all()  # the band ends just above the strip
    # The plot shrinks above the strip: 77 rows, margins of 8: the step now runs from row 68 to row 8.
    assert _brightest_rows(picture[:77], 50) == [68] and _brightest_rows(picture[:77], 150) == [8]
    # Squeezed 10 to a column, a single sample still marks its column; mask_color and a 0/1 mask work.
    one = np.zeros(1000)
    one[505] = 1
    narrow = overlay_signal(np.zeros(1000), np.zeros(1000), width=100, mask=one, mask_color=(0, 255, 0))
    assert np.flatnonzero((narrow[-1] == (0, 255, 0)).all(-1)).tolist() == [50]
    assert (narrow[-4:] == narrow[-1]).all() and not (narrow[-5] == narrow[-1]).all()  # 160 // 40 = 4 rows
    no_mask = overlay_signal(STEP, np.ones(100), height=80, width=200, alpha=1.0)
    assert (no_mask[77:, 100:] == JET_RED).all()


def test_overlay_signal_takes_make_signals_and_leaves_inputs_alone():
    signals, _, masks = kc.datasets.make_signals(2, seed=0)
    heat = np.linspace(0, 1, 32, dtype=np.float32)  # a map at 1/8 of the resolution
    signal0, heat0, mask0 = signals[0].copy(), heat.copy(), masks[0].copy()
    picture = overlay_signal(signals[0], heat, mask=masks[0])
    assert picture.shape == (160, 256, 3)
    np.testing.assert_array_equal(signals[0], signal0)
    np.testing.assert_array_equal(heat, heat0)
    np.testing.assert_array_equal(masks[0], mask0)
    np.testing.assert_array_equal(overlay_signal(list(signals[0, :, 0]), list(heat), mask=list(masks[0])),
                                  picture)


@pytest.mark.parametrize("kwargs, message", [
    (dict(signal=np.zeros((2, 100, 1))), r"one signal, \(T,\) or \(T, C\).*signals\[0\]"),
    (dict(signal=np.zeros((100, 0))), r"\(T,\) or \(T, C\)"),
    (dict(signal=np.full(100, np.nan)), "`signal` contains NaN"),
    (dict(signal=["a"] * 100), "`signal` must be a numeric"),
    (dict(heatmap=np.zeros((2, 100))), r"one 1-D map \(t,\).*heatmaps\[0\]"),
    (dict(heatmap=np.zeros(0)), "one 1-D map"),
    (dict(heatmap=np.full(10, np.inf)), "`heatmap` contains NaN or infinite"),
    (dict(signal=np.zeros((100, 30))), r"8 pixels per channel for 30 channel\(s\); pass height >= 240"),
    (dict(mask=np.zeros(100, bool), height=10), r"and the mask strip; pass height >= 11"),
    (dict(height=0), "`height` must be an integer >= 1"),
    (dict(width=1), "`width` must be an integer >= 2"),
    (dict(width=100.0), "`width`"),
    (dict(mask=np.zeros(99, bool)), r"`mask` must be \(T,\) bool.*T=100.*\(99,\)"),
    (dict(mask=np.array(["x"] * 100)), "`mask` must be"),
    (dict(alpha=1.5), r"`alpha`.*\[0, 1\]"),
    (dict(colormap="jett"), "Did you mean 'jet'"),
    (dict(line_color=(255, 255)), r"`line_color` must be an \(R, G, B\) triple"),
    (dict(mask_color=(0, 0, 256)), "`mask_color`"),
    (dict(thickness=0), "`thickness` must be an integer >= 1"),
])
def test_overlay_signal_errors(kwargs, message):
    args = dict(signal=np.zeros(100), heatmap=np.zeros(10))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        overlay_signal(**args)


def test_feature_map_grid_on_signal_maps():
    maps = np.stack([STEP * 1000.0, np.full(100, 7.0), np.linspace(-1, 0, 100)], axis=-1)  # (T=100, C=3)
    maps0 = maps.copy()
    grey = feature_map_grid(maps, colormap=None, cols=3, margin=2)
    assert grey.shape == (48, 3 * 100 + 2 * 2, 3)  # tiles of 48 x T (within 96..256)
    first, second, third = grey[:, :100], grey[:, 102:202], grey[:, 204:]
    # 48-row tiles, margins of 5: each channel spans rows 5..42 of its tile, whatever its scale.
    assert _brightest_rows(first, 25) == [42] and _brightest_rows(first, 75) == [5]
    assert _brightest_rows(second, 50) == [23]  # constant: the middle
    assert _brightest_rows(third, 1) == [42] and _brightest_rows(third, 98) == [5]
    assert (first[:3] == 48).all() and (grey[:, 100:102] == 0).all()  # dark grey tiles, black margins
    np.testing.assert_array_equal(maps, maps0)
    # With a colormap (magma by default), the band under the line is the channel's own normalized value.
    magma = feature_map_grid(maps, cols=3, margin=2)
    top = cv2.applyColorMap(np.uint8([[0, 255]]), cv2.COLORMAP_MAGMA)[0, :, ::-1]
    assert tuple(magma[30, 10]) == tuple(np.round(0.6 * top[0]).astype(int))
    assert tuple(magma[30, 90]) == tuple(np.round(0.6 * top[1]).astype(int))
    assert _brightest_rows(magma[:, :100], 75) == [5]
    # Tile widths stay within 96..256; scale draws them larger; labels go on top.
    assert feature_map_grid(np.zeros((20, 2)), cols=2, margin=0).shape == (48, 192, 3)
    assert feature_map_grid(np.zeros((1000, 1))).shape == (48, 256, 3)
    assert feature_map_grid(np.zeros((100, 1)), scale=2).shape == (96, 200, 3)
    labelled = feature_map_grid(maps, colormap=None, cols=3, margin=2, labels=["a", "b", "c"])
    assert (labelled[:4, :4] == 0).all() and not (labelled == grey).all()


def test_feature_map_grid_on_volume_maps_shows_the_middle_slice():
    maps = np.zeros((5, 4, 6, 2), np.float32)  # (D, H, W, C)
    maps[..., 0] = np.arange(5)[:, None, None]  # rises along depth: the middle slice (2 of 0..4) is 0.5
    maps[..., 1] = np.arange(6)[None, None, :] * np.arange(1, 6)[:, None, None]  # a ramp, steepest at the end
    grid = feature_map_grid(maps, colormap=None, margin=1, scale=2)
    assert grid.shape == (4 * 2, 2 * 6 * 2 + 1, 3)
    assert (grid[:, :12] == 128).all()  # normalized over the whole volume: 2 / 4
    # Channel 1's middle slice is 3 * x against a maximum of 25: 0, 0.12, ... 0.6.
    np.testing.assert_array_equal(grid[0, 13::2, 0], np.round(np.arange(6) * 3 / 25 * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(D, H, W, C\) for a volume.*maps\[0\]"):
        feature_map_grid(np.zeros((1, 4, 4, 2)))  # a batch of one image's maps, as before
    with pytest.raises(ValueError, match=r"maps\[0\]"):
        feature_map_grid(np.zeros((2, 5, 4, 4, 2)))
    with pytest.raises(ValueError, match=r"\(T, C\) for a signal"):
        feature_map_grid(np.zeros(10))


# --- Volumes: volume_montage ------------------------------------------------------------------------------

def _tiles(mosaic, shape, cols, margin):
    """The tiles of a mosaic, row by row (unused cells included)."""
    h, w = shape
    rows = (mosaic.shape[0] + margin) // (h + margin)
    return [mosaic[r * (h + margin) : r * (h + margin) + h, c * (w + margin) : c * (w + margin) + w]
            for r in range(rows) for c in range(cols)]


def _depth_coded(shape=(20, 8, 8), axis=0):
    """A volume whose slices along `axis` are grey levels 0, 1, 2, ... (uint8): a tile tells its slice."""
    index = np.arange(shape[axis]).reshape([-1 if k == axis else 1 for k in range(3)])
    return np.broadcast_to(index, shape).astype(np.uint8)


def test_volume_montage_default_slices_start_at_the_peak():
    volume = _depth_coded()
    heat = np.zeros((20, 8, 8), np.float32)
    heat[13, 2, 5] = 1.0
    mosaic = volume_montage(volume, heat, count=5, alpha=0.0, labels=False, scale=1, margin=0)
    assert mosaic.shape == (2 * 8, 3 * 8, 3)  # 5 tiles, ceil(sqrt(5)) = 3 per row
    # Evenly spaced: 2, 6, 10, 14, 18 (centres of 5 parts of 20); 14, the nearest the peak, gives way to 13.
    shown = [int(t[4, 4, 0]) for t in _tiles(mosaic, (8, 8), 3, 0)[:5]]
    assert shown == [13, 2, 6, 10, 18]
    assert (mosaic[8:, 16:] == 0).all()  # the empty sixth cell
    # A peak on an evenly spaced slice is not shown twice; count >= the slices shows them all.
    heat[13, 2, 5], heat[6, 0, 0] = 0.0, 1.0
    shown = [int(t[4, 4, 0]) for t in _tiles(volume_montage(volume, heat, count=5, alpha=0.0, labels=False,
                                                              scale=1, margin=0), (8, 8), 3, 0)[:5]]
    assert shown == [6, 2, 10, 14, 18]
    every = volume_montage(volume, heat, count=50, alpha=0.0, labels=False, scale=1, margin=0, cols=20)
    assert [int(t[0, 0, 0]) for t in _tiles(every, (8, 8), 20, 0)] == [6] + [i for i in range(20) if i != 6]
    one = volume_montage(volume, heat, count=1, alpha=0.0, labels=False, scale=1)
    assert one.shape == (8, 8, 3) and (one == 6).all()


def test_volume_montage_explicit_slices_and_other_axes():
    volume = _depth_coded()
    heat = np.zeros((20, 8, 8))
    mosaic = volume_montage(volume, heat, slices=[3, 0, 3], alpha=0.0, labels=False, scale=1, margin=1)
    assert mosaic.shape == (2 * 8 + 1, 2 * 8 + 1, 3)
    assert [int(t[0, 0, 0]) for t in _tiles(mosaic, (8, 8), 2, 1)[:3]] == [3, 0, 3]  # in the order given
    # Along axis 1 a tile is (D, W), along axis 2 (D, H); rows are the first remaining axis.
    for axis, tile_shape in ((1, (6, 10)), (2, (6, 8))):
        coded = _depth_coded((6, 8, 10), axis)
        heat = np.zeros((6, 8, 10))
        heat[1, 7, 9] = 1.0  # the peak: slice 7 along axis 1, 9 along axis 2
        mosaic = volume_montage(coded, heat, axis=axis, count=3, alpha=0.0, labels=False, scale=1, margin=0,
                                   cols=3)
        assert mosaic.shape == (tile_shape[0], 3 * tile_shape[1], 3)
        peak = (7, 9)[axis - 1]
        assert int(mosaic[0, 0, 0]) == peak
    rows = np.zeros((4, 3, 5), np.uint8)
    rows[:, 1, :] = 255  # a bright row at y=1 of every z-slice: along axis 2 it is the column y=1 of a tile
    tile = volume_montage(rows, np.zeros((4, 3, 5)), axis=2, slices=[0], alpha=0.0, labels=False, scale=1)
    assert tile.shape == (4, 3, 3) and (tile[:, 1] == 255).all() and (tile[:, [0, 2]] == 0).all()


def test_volume_montage_labels_shape_and_scale():
    volumes, _, masks = kc.datasets.make_volumes(1, seed=0)
    heat = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    mosaic = volume_montage(volumes[0], heat)
    assert mosaic.dtype == np.uint8 and mosaic.shape == (3 * 96 + 2 * 2, 3 * 96 + 2 * 2, 3)  # 32^3: x3 tiles
    # The labels are image_grid's: "z=N" per tile, "max" on the peak's slice, chosen first.
    plain = volume_montage(volumes[0], heat, labels=False)
    big = resize_linear(heat, (32, 32, 32))
    peak = int(np.unravel_index(np.argmax(big), big.shape)[0])
    chosen = [peak] + [s for s in (1, 5, 8, 12, 16, 19, 23, 26, 30) if s != min(
        (1, 5, 8, 12, 16, 19, 23, 26, 30), key=lambda s: abs(s - peak))]
    tiles = [t.copy() for t in _tiles(plain, (96, 96), 3, 2)]
    names = [f"z={s}" for s in chosen]
    names[0] += " max"
    np.testing.assert_array_equal(mosaic, kc.image_grid(tiles, cols=3, margin=2, labels=names))
    assert (mosaic[:8, :8] != plain[:8, :8]).any()
    explicit = volume_montage(volumes[0], heat, axis=1, slices=[4, 7], scale=1, margin=0, cols=2)
    no_labels = volume_montage(volumes[0], heat, axis=1, slices=[4, 7], scale=1, margin=0, cols=2,
                                  labels=False)
    np.testing.assert_array_equal(explicit, kc.image_grid([no_labels[:, :32], no_labels[:, 32:]], cols=2,
                                                          margin=0, labels=["y=4", "y=7"]))
    assert volume_montage(np.zeros((8, 20, 40)), np.zeros((8, 20, 40)), slices=[0]).shape == (60, 120, 3)
    assert volume_montage(np.zeros((8, 200, 40)), np.zeros((8, 20, 40)), slices=[0]).shape == (200, 40, 3)


def test_volume_montage_mask_outline_is_white():
    volume = np.full((8, 8, 8), 0.5, np.float32)
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    mask[3, 3:5, 3:5] = False  # a hole in slice 3: its edge is outlined too
    mosaic = volume_montage(volume, np.zeros((8, 8, 8)), slices=[3, 0], mask=mask, labels=False, scale=1,
                               margin=0)
    white = (mosaic == 255).all(-1)
    ring = np.zeros((8, 8), bool)
    ring[2:6, 2:6] = True
    ring[3:5, 3:5] = False
    np.testing.assert_array_equal(white[:, :8], ring)  # the square's border and the hole's
    assert not white[:, 8:].any()  # slice 0 misses the object
    background = np.round(0.4 * np.array(JET_BLUE) + 0.6 * 128).astype(int)
    assert tuple(mosaic[0, 0]) == tuple(background)
    # Upscaled tiles get a one-pixel outline at the new size; mask_color and an (D, H, W, 1) mask work.
    big = volume_montage(volume, np.zeros((8, 8, 8)), slices=[2], mask=mask[..., None], scale=2,
                            labels=False, mask_color=(255, 0, 255))
    outline = (big == (255, 0, 255)).all(-1)
    square = np.zeros((16, 16), bool)
    square[4:12, 4:12] = True
    square[5:11, 5:11] = False
    np.testing.assert_array_equal(outline, square)


def test_volume_montage_resizes_the_heatmap_to_the_volume():
    volume = np.zeros((8, 8, 8), np.float32)
    heat = np.zeros((2, 2, 2), np.float32)
    heat[1] = 1.0  # 0 in front, 1 at the back: trilinear along depth, half-pixel centres
    mosaic = volume_montage(volume, heat, slices=range(8), alpha=1.0, labels=False, scale=1, margin=0,
                               cols=8)
    expected = [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1]  # cv2.resize's INTER_LINEAR, per axis
    jet = cv2.applyColorMap(visualize.to_uint8(np.array([expected])), cv2.COLORMAP_JET)[0, :, ::-1]
    for z, tile in enumerate(_tiles(mosaic, (8, 8), 8, 0)):
        assert (tile == jet[z]).all()
    # In-plane, a slice of the resized map is cv2.resize's bilinear resize of the map's slice.
    rng = np.random.default_rng(0)
    coarse = np.repeat(rng.random((1, 3, 5)).astype(np.float32), 4, axis=0)  # the same slice at every depth
    tile = volume_montage(np.zeros((6, 12, 20)), coarse, slices=[2], alpha=1.0, labels=False, scale=1)
    plane = cv2.resize(coarse[0], (20, 12), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(visualize.to_uint8(plane), cv2.COLORMAP_JET)[..., ::-1]
    assert np.abs(tile.astype(int) - colored).max() <= 1
    # The peak is found in the resized map: the coarse maximum's slice, in volume coordinates.
    heat = np.zeros((4, 4, 4))
    heat[3, 1, 2] = 1.0
    first = volume_montage(_depth_coded((16, 16, 16)), heat, count=4, alpha=0.0, labels=False, scale=1)
    assert int(first[0, 0, 0]) == 14


def test_volume_montage_display_range_and_channels():
    heat = np.zeros((4, 4, 4))
    ramp = np.arange(4, dtype=np.float64)[:, None, None] * np.ones((4, 4, 4)) * 1000.0 - 1000.0  # -1000..2000
    tiles = volume_montage(ramp, heat, slices=[0, 1, 3], alpha=0.0, labels=False, scale=1, margin=0, cols=3)
    assert tiles[0, ::4, 0].tolist() == [0, 85, 255]  # min-max over the whole volume
    unit = volume_montage(ramp / 4000.0 + 0.25, heat, slices=[3], alpha=0.0, labels=False, scale=1)
    assert unit[0, 0, 0] == round(0.75 * 255)  # already in [0, 1]: as it is
    u8 = volume_montage(np.full((4, 4, 4), 40, np.uint8), heat, slices=[0], alpha=0.0, labels=False)
    assert (u8 == 40).all()  # uint8: as it is, not stretched
    assert (volume_montage(np.full((4, 4, 4), 9.0), heat, slices=[0], alpha=0.0, labels=False) == 0).all()
    rgb = np.zeros((4, 4, 4, 3), np.float32)
    rgb[..., 0] = 1.0
    red = volume_montage(rgb, heat, slices=[0], alpha=0.0, labels=False, scale=1)
    assert (red == (255, 0, 0)).all()
    grey = volume_montage(rgb[..., :1], heat, slices=[0], alpha=0.0, labels=False, scale=1)
    assert (grey == 255).all()
    flags = np.zeros((4, 4, 4), bool)
    assert volume_montage(flags, heat, slices=[0], labels=False, scale=1).shape == (4, 4, 3)


def test_volume_montage_leaves_inputs_alone():
    volumes, _, masks = kc.datasets.make_volumes(1, size=16, seed=1)
    heat = np.random.default_rng(0).random((16, 16, 16)) * 2 - 0.5  # clipped, not changed
    copies = [volumes[0].copy(), heat.copy(), masks[0].copy()]
    volume_montage(volumes[0], heat, mask=masks[0])
    for original, copy in zip((volumes[0], heat, masks[0]), copies):
        np.testing.assert_array_equal(original, copy)


@pytest.mark.parametrize("kwargs, message", [
    (dict(volume=np.zeros((2, 8, 8, 8, 1))), r"one volume.*volumes\[0\]"),
    (dict(volume=np.zeros((8, 8, 8, 2))), "C = 1 or 3"),
    (dict(volume=np.zeros((8, 8))), r"\(D, H, W\) or \(D, H, W, C\)"),
    (dict(volume=np.full((8, 8, 8), np.nan)), "`volume` contains NaN"),
    (dict(volume=np.full((8, 8, 8), "a")), "`volume` must be numeric"),
    (dict(heatmap=np.zeros((2, 8, 8, 8))), r"one 3-D map \(D, H, W\).*heatmaps\[0\]"),
    (dict(heatmap=np.zeros((8, 8))), "one 3-D map"),
    (dict(heatmap=np.full((4, 4, 4), np.inf)), "`heatmap` contains NaN or infinite"),
    (dict(mask=np.zeros((4, 4, 4), bool)), r"`mask` must have the volume's size \(8, 8, 8\)"),
    (dict(axis=3), r"`axis` must be an integer in 0\.\.2"),
    (dict(axis=-1), "`axis`"),
    (dict(slices=[8]), r"slice indices in 0\.\.7 .*8 slices along axis 0"),
    (dict(slices=[]), "non-empty list"),
    (dict(slices=3), "`slices`"),
    (dict(slices=[1.0]), "`slices`"),
    (dict(count=0), "`count` must be an integer >= 1"),
    (dict(alpha=-1), "`alpha`"),
    (dict(colormap="jett"), "Did you mean 'jet'"),
    (dict(labels="yes"), "`labels` must be True or False"),
    (dict(mask_color="white"), r"`mask_color` must be an \(R, G, B\)"),
    (dict(scale=0), "`scale` must be an integer >= 1"),
    (dict(margin=-1), "`margin`"),
    (dict(cols=0), "`cols`"),
])
def test_volume_montage_errors(kwargs, message):
    args = dict(volume=np.zeros((8, 8, 8)), heatmap=np.zeros((4, 4, 4)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        volume_montage(**args)


# --- overlay points 1-D and 3-D data at the right function ------------------------------------------------

@pytest.mark.parametrize("image, heatmap, message", [
    (np.linspace(-5, 5, 100), np.zeros(100), r"shape \(100,\).*kc\.overlay_signal\(signal, heatmap\)"),
    (np.zeros((100, 2)), np.zeros(100), "kc.overlay_signal"),
    (np.zeros((100, 1), np.float32), np.zeros(25), "kc.overlay_signal"),
    (np.zeros((8, 8, 3)), np.zeros(8), "kc.overlay_signal"),
    (np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), r"kc\.volume_montage\(volume, heatmap\)"),
    (np.zeros((8, 8, 8, 1)), np.zeros((4, 4, 4)), "kc.volume_montage"),
    (np.zeros((8, 8, 8, 3)), np.zeros((8, 8)), "volume_montage.*for a batch of images, call overlay once"),
    (np.zeros((2, 8, 8, 8, 1)), np.zeros((8, 8, 8)), "kc.volume_montage"),
])
def test_overlay_points_signals_and_volumes_elsewhere(image, heatmap, message):
    with pytest.raises(ValueError, match=message):
        kc.overlay(image, heatmap)


def test_overlay_2d_messages_unchanged():
    with pytest.raises(ValueError, match=r"^`heatmap` must be one 2-D map \(h, w\), got shape \(2, 4, 4\)\. "
                                         r"For a batch, call overlay once per image\.$"):
        kc.overlay(np.zeros((4, 4, 3)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"^`image` must be \(H, W, 3\) RGB"):
        kc.overlay(np.zeros((4, 4, 2)), np.zeros((4, 4)))
    # Rank 3 with a last axis of 1, 3 or 4 is an image, so a 3-D map with it is a batch of maps; with another
    # last axis and a 3-D map, it is a volume.
    with pytest.raises(ValueError, match="one 2-D map"):
        kc.overlay(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match="kc.volume_montage"):
        kc.overlay(np.zeros((4, 4, 2)), np.zeros((4, 4, 2)))


def test_overlay_takes_one_box_as_a_row_and_no_boxes():
    image = np.zeros((16, 16, 3), np.float32)
    plain = kc.overlay(image, np.zeros((4, 4)), alpha=0.0)
    one = kc.overlay(image, np.zeros((4, 4)), alpha=0.0, boxes=np.array([2, 3, 10, 12]))
    np.testing.assert_array_equal(one, kc.overlay(image, np.zeros((4, 4)), alpha=0.0, boxes=[[2, 3, 10, 12]]))
    assert (one != plain).any(-1)[3:12, 2].all() and not (one != plain).any(-1)[:, 11:].any()
    np.testing.assert_array_equal(kc.overlay(image, np.zeros((4, 4)), alpha=0.0, boxes=[]), plain)
