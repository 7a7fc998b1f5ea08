"""Input checks shared by every public entry point.

Each check raises one `ValueError` that names the problem and the fix, and never modifies what the
user passed in: images are copied into a fresh float32 array before anything else touches them.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np


def check_int(name: str, value: Any, minimum: int, maximum: Optional[int] = None) -> int:
    """`value` as an int >= `minimum` (and <= `maximum` when given; bools refused), or one clear `ValueError`
    naming `name`. The package's one int check."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum \
            or (maximum is not None and value > maximum):
        bounds = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"`{name}` must be an integer {bounds}, got {value!r}.")
    return int(value)


def check_number(name: str, value: Any, minimum: float, strict: bool = False) -> float:
    """`value` as a finite float >= `minimum` (> with `strict`), or one clear `ValueError` naming `name`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < minimum or (strict and v == minimum):
        raise ValueError(f"`{name}` must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}.")
    return v


def to_numpy(x: Any) -> np.ndarray:
    """Converts a numpy array, a list or a backend tensor to numpy (no copy guaranteed)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "numpy") and not hasattr(x, "detach"):  # TF eager tensor
        return np.asarray(x.numpy())
    if hasattr(x, "detach"):  # torch tensor, possibly on an accelerator
        return x.detach().cpu().numpy()
    return np.asarray(x)


#: Names of the spatial axes by spatial rank, for messages.
SPATIAL_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
def check_boxes(boxes: Any, name: str, rows: str = "N") -> np.ndarray:
    """A new float64 (`rows`, 4) array of half-open boxes `(x0, y0, x1, y1)`, finite, with x0 <= x1 and
    y0 <= y1, or one clear `ValueError` naming `name` (the package's one box check)."""
    try:
        b = np.array(to_numpy(boxes), dtype=np.float64, copy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be a numeric array of shape ({rows}, 4); could not convert it: "
                         f"{e}") from None
    if b.ndim != 2 or b.shape[1] != 4:
        hint = f" For one box, add a batch axis: {name}[None]." if b.shape == (4,) else ""
        raise ValueError(f"`{name}` must have shape ({rows}, 4), rows (x0, y0, x1, y1); got shape {b.shape}."
                         + hint)
    if not np.all(np.isfinite(b)):
        raise ValueError(f"`{name}` rows {np.flatnonzero(~np.isfinite(b).all(axis=1))[:10].tolist()} contain "
                         "NaN or infinite values.")
    bad = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
    if bad.size:
        raise ValueError(f"`{name}` rows {bad[:10].tolist()} end before they start (e.g. "
                         f"{b[bad[0]].tolist()}); boxes are (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, "
                         "not (x, y, width, height).")
    return b


_SHAPES = {1: "(N, T, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}


def as_image_batch(
    images: Any,
    expected_shape: Optional[Sequence[Optional[int]]] = None,
    name: str = "images",
    channels_first: bool = False,
) -> np.ndarray:
    """Validates a batch of images (or signals, or volumes) and returns a float32 copy.

    Args:
        images: array-like of rank 3 `(N, T, C)`, 4 `(N, H, W, C)` or 5 `(N, D, H, W, C)` (channels first:
            `(N, C, ...)`).
        expected_shape: the model's input shape without the batch axis, `None` for free axes; it fixes the
            rank. Without it, ranks 3 to 5 are accepted.
        name: what to call the argument in error messages.
        channels_first: whether the model takes channels first (axis names in messages).
    """
    _refuse_datasets(images, name)
    try:
        arr = to_numpy(images)
    except Exception as e:  # ragged lists, strings, ...
        raise ValueError(f"{name} must be a numeric batch such as (N, H, W, C); could not convert it: {e}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array such as (N, H, W, C), got dtype {arr.dtype}.")
    expected = None if expected_shape is None else tuple(expected_shape)
    if expected is not None and arr.ndim != len(expected) + 1:
        want = _describe(len(expected) - 1, channels_first)
        hint = f" For a single example, add a batch axis: {name}[None]." if arr.ndim == len(expected) else ""
        raise ValueError(f"{name} must have rank {len(expected) + 1} {want}, got shape {arr.shape}.{hint}")
    if expected is None and arr.ndim not in (3, 4, 5):
        hint = " For a single image, add a batch axis: images[None]." if arr.ndim == 2 else ""
        raise ValueError(f"{name} must be a batch of signals (N, T, C), images (N, H, W, C) or volumes "
                         f"(N, D, H, W, C), got shape {arr.shape}.{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); pass at least one example.")
    if expected is not None:
        spatial = SPATIAL_AXES.get(len(expected) - 1, ())
        names = ("channels",) + spatial if channels_first else spatial + ("channels",)
        for axis, (got, want) in enumerate(zip(arr.shape[1:], expected)):
            if want is not None and got != want:
                what = names[axis] if axis < len(names) else f"axis {axis + 1}"
                raise ValueError(
                    f"{name} have {what} {got} but the model expects {want} "
                    f"(model input shape (None, {', '.join(str(d) for d in expected)}), {name} shape {arr.shape})."
                    + (" Resize them to the model's input size." if what != "channels" else "")
                )
    out = np.array(arr, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.isfinite(out).all(axis=tuple(range(1, out.ndim)))))
        raise ValueError(f"{name} contain NaN or infinite values ({bad} of {out.shape[0]} examples); "
                         "clean or re-normalize them first.")
    return out


def _describe(rank: int, channels_first: bool) -> str:
    shape = _SHAPES.get(rank, "(N, ..., C)")
    return shape.replace("(N, ", "(N, C, ").replace(", C)", ")") if channels_first else shape


def _refuse_datasets(images: Any, name: str) -> None:
    """A dataset, loader or generator where an array is expected: say so, not "got dtype object"."""
    kind = None
    if hasattr(images, "element_spec"):
        kind = "a tf.data.Dataset"
    elif hasattr(images, "dataset") and hasattr(images, "batch_size"):
        kind = "a torch DataLoader"
    elif hasattr(images, "num_batches") and hasattr(images, "__getitem__"):
        kind = "a keras.utils.PyDataset"
    elif hasattr(images, "__next__"):
        kind = "an iterator or generator"
    if kind is not None:
        raise ValueError(
            f"{name} is {kind}; explainers take arrays of images. Pass its batches one at a time: "
            "for x, *_ in data: explainer(x)."
        )


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Names from `candidates` that look like `name` (prefix matches first)."""
    candidates = list(candidates)
    prefix = [c for c in candidates if c.startswith(name) or name.startswith(c)]
    fuzzy = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    out: list[str] = []
    for c in prefix[-n:] + fuzzy:
        if c not in out:
            out.append(c)
    return out[:n]


def user_message(error: BaseException) -> str:
    """An error's own message: TensorFlow's autograph wrapper ("in user code: File ..., line N", then the
    original `Type: message`) stripped down to the original message."""
    text = str(error)
    if "in user code:" not in text:
        return text
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.strip().startswith('File "')]
    if not frames:
        return text
    rest = lines[frames[-1] + 1 :]  # the last frame's source line, a blank line, then the message
    blank = next((i for i, line in enumerate(rest) if not line.strip()), 0)
    message = "\n".join(line.strip() for line in rest[blank:]).strip() or text
    prefix = f"{type(error).__name__}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def one_line(error: BaseException) -> str:
    """An error's message as one line: TensorFlow's autograph wrapper ("in user code: File ..., line N")
    stripped down to the original message, OpenCV's source location dropped."""
    text = user_message(error)
    text = " ".join(text.split())
    if type(error).__name__ == "error" and type(error).__module__.startswith("cv2"):
        text = text.split(" error: ", 1)[-1]  # "OpenCV(5.0.0) /io/.../file.cpp:79: error: (-215...) ..."
    return text or type(error).__name__
