"""Mosaics: images side by side, one input's feature maps (one tile per channel), a conv layer's kernels."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Union

import cv2
import keras
import numpy as np

from keras_cam._validation import check_int, to_numpy
from keras_cam.visualize.images import as_rgb
from keras_cam.visualize.overlays import colormap_code
from keras_cam.visualize.drawing import band, draw_lines

__all__ = ["feature_map_grid", "image_grid", "kernel_grid"]

_SIGNAL_TILE_HEIGHT = 48  # pixels of a 1-D channel's line plot (times `scale`)
_SIGNAL_TILE_ALPHA = 0.6  # the band's strength under it, as overlay_signal's default


def image_grid(
    images: Any,
    cols: Optional[int] = None,
    margin: int = 5,
    background: int = 0,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Tiles same-sized images into one mosaic, row by row.

    Tiles are separated by `margin` pixels, with no margin around the outside, so the mosaic is
    `rows * H + (rows - 1) * margin` by `cols * W + (cols - 1) * margin`. Unused cells of the last row are
    left at `background`.

    Args:
        images: a sequence of images, or an (N, H, W, 3) / (N, H, W) array; each (H, W, 3) RGB or (H, W) /
            (H, W, 1) grayscale, float in [0, 1] or uint8, all of the same height and width.
        cols: tiles per row (default: `ceil(sqrt(N))`).
        margin: pixels between tiles (>= 0).
        background: grey level (0-255) of the margins and unused cells.
        labels: optional text per tile (`None` or "" for none), drawn in white on a dark box at the tile's
            top-left corner.

    Returns:
        uint8 (rows * H + (rows - 1) * margin, cols * W + (cols - 1) * margin, 3) RGB.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import image_grid
    >>> image_grid(np.zeros((5, 8, 8, 3), np.float32), cols=3, margin=2).shape
    (18, 28, 3)
    """
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise ValueError(f"`images` must be a sequence of images or an (N, H, W[, C]) array, got an array of shape "
                         f"{images.shape}." + (" For a single image, pass [image]." if images.ndim == 2 else ""))
    tiles = [as_rgb(img, name=f"images[{i}]") for i, img in enumerate(images)]
    if not tiles:
        raise ValueError("`images` is empty; pass at least one image.")
    sizes = sorted({t.shape[:2] for t in tiles})
    if len(sizes) != 1:
        raise ValueError(f"All images must have the same size (height, width), got {sizes}; resize them first.")
    n = len(tiles)
    if labels is not None and (isinstance(labels, str) or len(labels) != n):
        raise ValueError(f"`labels` must be a list of {n} strings (one per image), got {labels!r}.")
    for arg, value, low, high in (("margin", margin, 0, None), ("background", background, 0, 255),
                                  ("cols", 1 if cols is None else cols, 1, None)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
                or (high is not None and value > high):
            bounds = f"in {low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"`{arg}` must be an integer {bounds}, got {value!r}.")
    cols = int(cols) if cols is not None else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles[0].shape[:2]
    out = np.full((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3), int(background), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + margin), c * (w + margin)
        out[y : y + h, x : x + w] = tile
        if labels is not None and labels[i]:
            _label(out, str(labels[i]), x, y, w, h)
    return out


def _label(canvas: np.ndarray, text: str, x: int, y: int, width: int, height: int) -> None:
    """Draws `text` at a tile's top-left corner, on a black box, clipped to the tile."""
    scale = max(0.3, min(0.5, width / 200.0))  # legible on 32 px tiles, not huge on 512 px ones
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    tile = canvas[y : y + height, x : x + width]  # a view: drawing on it cannot spill into the next tile
    cv2.rectangle(tile, (0, 0), (tw + 3, th + base + 2), (0, 0, 0), thickness=-1)
    cv2.putText(tile, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _grey_tiles(tiles: np.ndarray, colormap: Optional[Union[str, int]]) -> List[np.ndarray]:
    """(K, H, W) values in [0, 1] -> K uint8 RGB tiles, grey or through an OpenCV colormap."""
    tiles_u8 = np.round(np.clip(tiles, 0.0, 1.0) * 255.0).astype(np.uint8)
    if colormap is None:
        return [np.repeat(t[..., None], 3, axis=-1) for t in tiles_u8]
    code = colormap_code(colormap)
    return [cv2.cvtColor(cv2.applyColorMap(t, code), cv2.COLOR_BGR2RGB) for t in tiles_u8]


def _upscale(tile: np.ndarray, scale: int) -> np.ndarray:
    return tile if scale == 1 else np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


def feature_map_grid(
    maps: Any,
    cols: Optional[int] = None,
    margin: int = 5,
    colormap: Optional[Union[str, int]] = "magma",
    scale: int = 1,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """One input's feature maps as a mosaic, one tile per channel (the classic feature-map picture).

    Each channel is min-max normalized on its own, as `plt.imshow` does, so its pattern shows
    whatever its scale; a constant channel is black.

    The maps' rank says what they are (channels last):

    - (H, W, C), an image's: each tile is the channel as a picture, H x W pixels times `scale`.
    - (T, C), a signal's (Conv1D): each tile is a line plot of the channel, white, over a band of its own
      normalized values through `colormap` (dark grey with `colormap=None`), as `overlay_signal` draws
      them; 48 pixels high and T wide, kept within 96..256 (longer channels are drawn with several samples
      per pixel), both times `scale`.
    - (D, H, W, C), a volume's (Conv3D): each tile is the middle slice along depth, `maps[D // 2]`, with
      each channel normalized over its whole volume (a dark slice means the channel fires elsewhere). A
      rank-4 array is read as one volume's maps, not as a batch of images' maps: pass one image's, maps[i].
      (A depth of 1 is refused as the likelier mistake, a batch of one image: pass maps[0].)

    Args:
        maps: (H, W, C), (T, C) or (D, H, W, C) activations of one input, e.g. `feature_maps(...)[0]`.
        cols: tiles per row (default: ceil(sqrt(C))).
        margin: pixels between tiles.
        colormap: an OpenCV colormap name ("magma" by default) or `None` for grey.
        scale: integer upscaling of each tile (small maps are hard to see): nearest-neighbour for images
            and volume slices; line plots are drawn at the larger size.
        labels: optional text per channel, drawn at its tile's top-left corner.

    Returns:
        uint8 (rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3), (h, w) being a tile's
        size: (H * scale, W * scale) for images and volume slices.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import feature_map_grid
    >>> feature_map_grid(np.random.default_rng(0).random((6, 8, 4))).shape   # 2 x 2 tiles of 6 x 8
    (17, 21, 3)
    >>> feature_map_grid(np.random.default_rng(0).random((100, 4))).shape   # line plots, 48 x 100
    (101, 205, 3)
    """
    maps = np.asarray(to_numpy(maps), np.float32)
    if maps.ndim not in (2, 3, 4) or (maps.ndim == 4 and maps.shape[0] == 1) or 0 in maps.shape[:-1]:
        hint = " Pass one image's maps, e.g. maps[0]." if maps.ndim in (4, 5) else ""
        raise ValueError(f"`maps` must be (H, W, C), or (T, C) for a signal, or (D, H, W, C) for a volume, "
                         f"got shape {maps.shape}.{hint}")
    if not np.all(np.isfinite(maps)):
        raise ValueError("`maps` contain NaN or infinite values.")
    scale = check_int("scale", scale, 1)
    channels = np.moveaxis(maps, -1, 0)
    spatial = tuple(range(1, channels.ndim))
    low = channels.min(axis=spatial, keepdims=True)
    span = channels.max(axis=spatial, keepdims=True) - low
    normalized = np.where(span > 0, (channels - low) / np.where(span > 0, span, 1.0), 0.0)
    if maps.ndim == 2:
        tiles = [_signal_tile(channel, colormap, scale) for channel in normalized]
    else:
        if maps.ndim == 4:
            normalized = normalized[:, maps.shape[0] // 2]  # the middle slice along depth
        tiles = [_upscale(t, scale) for t in _grey_tiles(normalized, colormap)]
    return image_grid(tiles, cols=cols, margin=margin, labels=labels)


def _signal_tile(channel: np.ndarray, colormap: Optional[Union[str, int]], scale: int) -> np.ndarray:
    """One (T,) channel, normalized to [0, 1], as a small line plot over a band of its own values."""
    height, width = _SIGNAL_TILE_HEIGHT * scale, min(max(channel.shape[0], 96), 256) * scale
    if colormap is None:
        tile = np.full((height, width, 3), 48, np.uint8)
    else:
        tile = band(channel, width, height, colormap_code(colormap), _SIGNAL_TILE_ALPHA)
    draw_lines(tile, channel[:, None].astype(np.float64), height, (255, 255, 255), 1)
    return tile


def kernel_grid(
    layer: keras.layers.Layer,
    cols: Optional[int] = None,
    margin: int = 2,
    scale: Optional[int] = None,
    per_input: bool = False,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """A conv layer's kernels as a mosaic .

    Each tile is normalized symmetrically, `0.5 + k / (2 max|k|)`, so 0 is mid-grey, positive weights are
    bright and negative ones dark, and the tile's own largest weight reaches black or white.

    - 3 input channels (a first layer on RGB images): one RGB tile per filter.
    - otherwise: one grey tile per filter, the mean over input channels (1 input channel: the kernel
      itself); with `per_input=True`, one tile per (filter, input channel) pair, a row per filter.

    Args:
        layer: a built `keras.layers.Conv2D` (or subclass).
        cols: tiles per row (default: ceil(sqrt(filters)); with `per_input`, the input channels).
        margin: pixels between tiles.
        scale: nearest-neighbour upscaling of each kernel pixel; `None` makes tiles at least 24 px (x8 for
            3x3 kernels).
        per_input: one tile per (filter, input channel) instead of the mean over input channels.
        labels: optional text per tile, drawn at its top-left corner.

    Returns:
        uint8 mosaic (H, W, 3).

    Example:

    ```python
    picture = kc.kernel_grid(model.get_layer("conv1"))
    ```
    """
    if not isinstance(layer, keras.layers.Conv2D):
        if isinstance(layer, str):
            raise ValueError(f"kernel_grid needs a Conv2D layer object; got the string '{layer}'. Pass the "
                             "layer itself, e.g. model.get_layer(name).")
        raise ValueError(f"kernel_grid needs a Conv2D layer; got '{getattr(layer, 'name', layer)}' "
                         f"({type(layer).__name__}).")
    if not layer.built or getattr(layer, "kernel", None) is None:
        raise ValueError(f"Layer '{layer.name}' is not built, so it has no kernels yet; call the model once.")
    kernel = to_numpy(keras.ops.convert_to_numpy(layer.kernel)).astype(np.float32)  # (kh, kw, in, out)
    kh, kw, n_in, n_out = kernel.shape
    scale = max(1, math.ceil(24 / max(kh, kw))) if scale is None else check_int("scale", scale, 1)

    def normalized(k: np.ndarray) -> np.ndarray:
        peak = float(np.max(np.abs(k)))
        return 0.5 + k / (2.0 * peak) if peak > 0 else np.full_like(k, 0.5)

    if n_in == 3 and not per_input:
        tiles = [np.round(normalized(kernel[..., o]) * 255.0).astype(np.uint8) for o in range(n_out)]
    elif per_input:
        pairs = [normalized(kernel[:, :, i, o]) for o in range(n_out) for i in range(n_in)]
        tiles = _grey_tiles(np.stack(pairs), None)
        cols = n_in if cols is None else cols
    else:
        tiles = _grey_tiles(np.stack([normalized(kernel[:, :, :, o].mean(-1)) for o in range(n_out)]), None)
    return image_grid([_upscale(t, scale) for t in tiles], cols=cols, margin=margin, labels=labels)
