"""Mosaics: images side by side, one image's feature maps (one tile per channel), a conv layer's kernels."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Union

import cv2
import keras
import numpy as np

from keras_cam._validation import to_numpy
from keras_cam.visualize.images import as_rgb
from keras_cam.visualize.overlays import colormap_code

__all__ = ["feature_map_grid", "image_grid", "kernel_grid"]


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


def _check_scale(scale: Any) -> int:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"`scale` must be an integer >= 1, got {scale!r}.")
    return int(scale)


def feature_map_grid(
    maps: Any,
    cols: Optional[int] = None,
    margin: int = 5,
    colormap: Optional[Union[str, int]] = "magma",
    scale: int = 1,
    labels: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """One image's feature maps as a mosaic, one tile per channel (the classic feature-map picture).

    Each channel is min-max normalized on its own, as `plt.imshow` does, so its pattern shows
    whatever its scale; a constant channel is black.

    Args:
        maps: (H, W, C) activations of one image, e.g. `feature_maps(...)[0]`.
        cols: tiles per row (default: ceil(sqrt(C))).
        margin: pixels between tiles.
        colormap: an OpenCV colormap name ("magma" by default) or `None` for grey.
        scale: integer nearest-neighbour upscaling of each tile (small maps are hard to see).
        labels: optional text per channel, drawn at its tile's top-left corner.

    Returns:
        uint8 (rows * H * scale + (rows - 1) * margin, cols * W * scale + (cols - 1) * margin, 3).

    Example:

    ```python
    picture = kc.feature_map_grid(kc.feature_maps(model, "conv1", images)[0], scale=2)
    ```
    """
    maps = np.asarray(to_numpy(maps), np.float32)
    if maps.ndim != 3:
        hint = " Pass one image's maps, e.g. maps[0]." if maps.ndim == 4 else ""
        raise ValueError(f"`maps` must be (H, W, C), got shape {maps.shape}.{hint}")
    if not np.all(np.isfinite(maps)):
        raise ValueError("`maps` contain NaN or infinite values.")
    scale = _check_scale(scale)
    channels = np.moveaxis(maps, -1, 0)
    low = channels.min(axis=(1, 2), keepdims=True)
    span = channels.max(axis=(1, 2), keepdims=True) - low
    normalized = np.where(span > 0, (channels - low) / np.where(span > 0, span, 1.0), 0.0)
    tiles = [_upscale(t, scale) for t in _grey_tiles(normalized, colormap)]
    return image_grid(tiles, cols=cols, margin=margin, labels=labels)


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
    scale = max(1, math.ceil(24 / max(kh, kw))) if scale is None else _check_scale(scale)

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
