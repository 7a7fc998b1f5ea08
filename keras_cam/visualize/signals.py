"""Signal pictures: a 1-D signal drawn as a line plot over a colour band of its heatmap."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from keras_cam._validation import check_int, to_numpy
from keras_cam.visualize.drawing import band, check_alpha, check_color, check_signed, draw_lines
from keras_cam.visualize.overlays import colormap_code

__all__ = ["overlay_signal"]

_MIN_WIDTH, _MAX_WIDTH = 256, 2048  # width=None: one pixel per sample, within these bounds
_MIN_LANE = 8  # pixels per channel below which a line plot is unreadable


def _numeric(name: str, value: Any, shape_hint: str) -> np.ndarray:
    """A float64 copy of `value`, or one clear ValueError naming `name`."""
    try:
        arr = np.array(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be a numeric {shape_hint} array; could not convert it: {e}") \
            from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or infinite values; clean it first (e.g. np.nan_to_num).")
    return arr


def _as_signal(signal: Any, name: str = "signal") -> np.ndarray:
    """A float64 (T, C) copy of a (T,) or (T, C) signal, or one clear ValueError."""
    arr = _numeric(name, signal, "(T,) or (T, C)")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or 0 in arr.shape:
        hint = f" For a batch, pass one signal, e.g. {name}s[0]." if arr.ndim == 3 else ""
        raise ValueError(f"`{name}` must be one signal, (T,) or (T, C) with channels last, got shape "
                         f"{arr.shape}.{hint}")
    return arr


def _mask_columns(mask: np.ndarray, width: int) -> np.ndarray:
    """(width,) bool: column x is marked when any sample it covers is, so a short motif never vanishes
    when the plot is narrower than the signal."""
    length = mask.shape[0]
    edges = np.arange(width + 1) * (length / width)
    lo = np.minimum(np.floor(edges[:-1]).astype(int), length - 1)
    hi = np.maximum(lo + 1, np.ceil(edges[1:] - 1e-9).astype(int))
    counts = np.concatenate(([0], np.cumsum(mask)))
    return counts[hi] - counts[lo] > 0


def _check_heatmap(heatmap: Any) -> np.ndarray:
    hm = _numeric("heatmap", heatmap, "(t,)")
    if hm.ndim == 2 and hm.shape[-1] == 1:
        hm = hm[:, 0]
    if hm.ndim != 1 or hm.size == 0:
        raise ValueError(f"`heatmap` must be one 1-D map (t,), one value per time step, got shape {hm.shape}."
                         + (" For a batch, pass one map, e.g. heatmaps[0]." if hm.ndim == 2 else ""))
    return hm


def _check_mask(mask: Any, length: int) -> Optional[np.ndarray]:
    if mask is None:
        return None
    marks = np.array(to_numpy(mask))
    if marks.ndim == 2 and marks.shape[-1] == 1:
        marks = marks[:, 0]
    if marks.shape != (length,) or not (marks.dtype == bool or np.issubdtype(marks.dtype, np.number)):
        raise ValueError(f"`mask` must be (T,) bool, one value per sample of the signal (T={length}), "
                         f"got shape {marks.shape} and dtype {marks.dtype}.")
    return marks.astype(bool)


def _check_height(height: Any, channels: int, with_mask: bool) -> Tuple[int, int]:
    """The picture's height and the mask strip's (0 without a mask), or one clear ValueError."""
    height = check_int("height", height, 1)
    strip = max(3, height // 40) if with_mask else 0
    if (height - strip) // channels < _MIN_LANE:
        need = _MIN_LANE * channels + strip
        raise ValueError(f"`height` {height} leaves less than {_MIN_LANE} pixels per channel for {channels} "
                         f"channel(s){' and the mask strip' if strip else ''}; pass height >= {need} "
                         "(or fewer channels).")
    return height, strip


def overlay_signal(
    signal: Any,
    heatmap: Any,
    height: int = 160,
    width: Optional[int] = None,
    colormap: Union[str, int] = "jet",
    alpha: float = 0.6,
    line_color: Optional[Sequence[int]] = None,
    thickness: int = 1,
    mask: Any = None,
    mask_color: Sequence[int] = (255, 255, 255),
    signed: bool = False,
) -> np.ndarray:
    """Draws a signal as a line plot over a colour band of its heatmap (high values: the hot colours).

    Column x of the picture is coloured with the heatmap at that time, through an OpenCV colormap, as a
    band behind the line (`alpha` times the colour, on black). The heatmap is clipped to [0, 1] and resized
    linearly to the picture's width when the lengths differ (pixel centres aligned, as `cv2.resize` does).
    The line is anti-aliased; sample t sits at x = (t + 0.5) * width / T - 0.5. Several channels are
    stacked as lanes, top to bottom, over the same band, each scaled to its own min-max with a margin of
    10 % of the lane (a flat channel is a line through the middle of its lane).

    A signed heatmap (`signed=True`, e.g. LRP relevance, with `colormap="bwr"`) is divided by its largest
    |value| as `kc.overlay` does: 0 is the colormap's middle (white), positive values red and negative
    blue. The band has no image under it, so zero is drawn white rather than transparent.

    Args:
        signal: (T,) or (T, C) channels last, any range, e.g. `make_signals(...)[0][i]`; not modified.
        heatmap: (t,) (or (t, 1)) map with values in [0, 1] (any sign with `signed`), e.g. one map of a
            Conv1D explainer's output; any length t, resized to the picture's width.
        height: pixels, >= 8 per channel (plus the mask strip).
        width: pixels; `None` uses one pixel per sample, T, kept within 256..2048.
        colormap: an OpenCV colormap name ("jet", "viridis", "turbo", ..., or "bwr" for signed maps; see
            `colormap_names()`) or a `cv2.COLORMAP_*` value.
        alpha: the band's strength in [0, 1]: 1 shows the colormap's own colours, 0 a black background.
        line_color: (R, G, B) of the line; `None`: white, black with `signed` (on the white of zero).
        thickness: of the line, in pixels.
        mask: optional (T,) bool ground truth, e.g. `make_signals(...)[2][i]`: a strip along the bottom
            (height // 40 pixels, at least 3, below the plot) is `mask_color` where it is True and black
            elsewhere; a column is marked when any sample it covers is.
        mask_color: (R, G, B) of the marks.
        signed: the heatmap is signed: scaled by its largest |value|, 0 in the colormap's middle.

    Returns:
        uint8 (height, width, 3) RGB.

    Example:

    >>> import numpy as np
    >>> from keras_cam.visualize import overlay_signal
    >>> signal = np.sin(np.linspace(0, 6 * np.pi, 300))
    >>> heatmap = np.r_[np.ones(5), np.zeros(5)]   # high at the start: resized to the width
    >>> picture = overlay_signal(signal, heatmap, alpha=1.0)
    >>> picture.shape, picture[0, 0].tolist(), picture[0, -1].tolist()   # jet's red and blue ends
    ((160, 300, 3), [128, 0, 0], [0, 0, 128])
    >>> relevance = np.r_[np.full(5, 2.0), np.full(5, -1.0)]
    >>> picture = overlay_signal(signal, relevance, alpha=1.0, colormap="bwr", signed=True)
    >>> picture[0, 0].tolist(), picture[0, -1].tolist()   # 2 / 2: red; -1 / 2: half-way to blue
    ([255, 0, 0], [128, 128, 255])
    """
    values = _as_signal(signal)
    length, channels = values.shape
    hm = _check_heatmap(heatmap)
    marks = _check_mask(mask, length)
    height, strip = _check_height(height, channels, marks is not None)
    width = min(max(length, _MIN_WIDTH), _MAX_WIDTH) if width is None else check_int("width", width, 2)
    alpha = check_alpha(alpha)
    code = colormap_code(colormap)
    signed = check_signed(signed)
    default_line = (0, 0, 0) if signed else (255, 255, 255)
    color = check_color("line_color", default_line if line_color is None else line_color)
    thickness = check_int("thickness", thickness, 1)
    mark_color = check_color("mask_color", mask_color)

    canvas = band(hm, width, height, code, alpha, signed)
    draw_lines(canvas, values, height - strip, color, thickness)
    if marks is not None:  # after the line: a thick line cannot spill into the strip
        canvas[height - strip :] = 0
        canvas[height - strip :, _mask_columns(marks, width)] = mark_color
    return canvas
