"""Drawing helpers the picture modules share: colour and alpha checks, a heatmap as a colour band, a signal
as anti-aliased line plots (`overlay_signal`'s picture and `feature_map_grid`'s 1-D tiles)."""
from __future__ import annotations

from typing import Any, Tuple

import cv2
import numpy as np

from keras_cam._resample import resize_linear

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel coordinates (1/16 px) keep anti-aliased lines smooth


def check_color(name: str, color: Any) -> Tuple[int, int, int]:
    """An (R, G, B) triple of ints in 0..255."""
    ok = isinstance(color, (tuple, list, np.ndarray)) and len(color) == 3 and all(
        not isinstance(c, bool) and isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in color)
    if not ok:
        raise ValueError(f"`{name}` must be an (R, G, B) triple of integers in 0..255, got {color!r}.")
    return (int(color[0]), int(color[1]), int(color[2]))


def check_alpha(alpha: Any) -> float:
    """The heatmap's weight in a blend, a number in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) \
            or not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` (the heatmap's weight) must be a number in [0, 1], got {alpha!r}.")
    return float(alpha)


def check_signed(signed: Any) -> bool:
    """The `signed` flag of a picture (signed relevance shown around 0), True or False."""
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"`signed` must be True or False, got {signed!r}.")
    return bool(signed)


def band(values: np.ndarray, width: int, height: int, code: Any, alpha: float, signed: bool = False) \
        -> np.ndarray:
    """(height, width, 3) uint8 RGB: column x coloured by `values` (resized linearly to `width`) through the
    colormap `code`, times `alpha` (on black, so a line in a light colour stays readable). `values` are
    clipped to [0, 1]; `signed` ones are divided by their largest |value| first and shown with 0 in the
    colormap's middle (white with "bwr"), -1 at its start and 1 at its end."""
    if signed:  # linear resizing keeps the largest |value|: scaled before or after is the same
        scale = float(np.abs(values).max())
        values = ((values / scale if scale > 0 else values) + 1.0) / 2.0
    row = resize_linear(np.clip(values, 0.0, 1.0), (width,))
    colored = cv2.applyColorMap(np.round(row * 255.0).astype(np.uint8)[None, :], code)  # (1, W, 3) BGR
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32) * alpha
    return np.repeat(np.round(colored).astype(np.uint8), height, axis=0)


def draw_lines(canvas: np.ndarray, signal: np.ndarray, rows: int, color: Tuple[int, int, int],
              thickness: int) -> None:
    """Draws a (T, C) signal on the top `rows` rows of `canvas` (in place): one lane per channel, stacked top
    to bottom, each scaled to its own min-max with a margin (a flat channel is a line through the middle).

    Sample t sits at x = (t + 0.5) * W / T - 0.5, the pixel-centre convention that `band` resizes
    heatmaps with, so the line and the colour under it belong to the same sample; the first and last
    values are held out to the edges, as the resized band holds its edge values.
    """
    length, channels = signal.shape
    width = canvas.shape[1]
    x = (np.arange(length) + 0.5) * (width / length) - 0.5
    lane_edges = np.round(np.linspace(0, rows, channels + 1)).astype(int)
    for c in range(channels):
        top, bottom = lane_edges[c], lane_edges[c + 1] - 1  # the lane's first and last pixel rows
        margin = max(2, round(0.1 * (bottom - top + 1)))  # the line never touches the lane's edges
        y_top, y_bottom = top + margin, bottom - margin
        low, high = float(signal[:, c].min()), float(signal[:, c].max())
        if high > low:
            y = y_bottom - (signal[:, c] - low) / (high - low) * (y_bottom - y_top)
        else:
            y = np.full(length, float((y_top + y_bottom) // 2))  # on a pixel row: crisp, not smeared over two
        xs = np.concatenate(([min(0.0, x[0])], x, [max(width - 1.0, x[-1])]))
        ys = np.concatenate(([y[0]], y, [y[-1]]))
        points = np.round(np.stack([xs, ys], axis=-1) * (1 << _SHIFT)).astype(np.int32)
        cv2.polylines(canvas, [points], False, color, thickness, cv2.LINE_AA, shift=_SHIFT)
