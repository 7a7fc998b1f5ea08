"""Input checks shared by every public entry point.

Each check raises one `ValueError` that names the problem and the fix, and never modifies what the
user passed in: images are copied into a fresh float32 array before anything else touches them.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np


def check_int(name: str, value: Any, minimum: int) -> int:
    """`value` as an int >= `minimum` (bools refused), or one clear `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
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


def as_image_batch(
    images: Any,
    expected_shape: Optional[Sequence[Optional[int]]] = None,
    name: str = "images",
) -> np.ndarray:
    """Validates a batch of images and returns a float32 copy of shape (N, H, W, C).

    Args:
        images: array-like of rank 4, channels last.
        expected_shape: the model's input shape without the batch axis, `None` for free axes.
        name: what to call the argument in error messages.
    """
    _refuse_datasets(images, name)
    try:
        arr = to_numpy(images)
    except Exception as e:  # ragged lists, strings, ...
        raise ValueError(f"{name} must be an array of shape (N, H, W, C); could not convert it: {e}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array of shape (N, H, W, C), got dtype {arr.dtype}.")
    if arr.ndim != 4:
        hint = " For a single image, add a batch axis: images[None]." if arr.ndim == 3 else ""
        raise ValueError(f"{name} must have rank 4 (N, H, W, C), got shape {arr.shape}.{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); pass at least one image.")
    if expected_shape is not None:
        expected = tuple(expected_shape)
        if len(expected) == 3:
            for axis, (got, want) in enumerate(zip(arr.shape[1:], expected)):
                if want is not None and got != want:
                    what = ("height", "width", "channels")[axis]
                    raise ValueError(
                        f"{name} have {what} {got} but the model expects {want} "
                        f"(model input shape (None, {', '.join(str(d) for d in expected)}), "
                        f"images shape {arr.shape})."
                        + (" Resize the images to the model's input size." if axis < 2 else "")
                    )
    out = np.array(arr, dtype=np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.isfinite(out).all(axis=(1, 2, 3))))
        raise ValueError(f"{name} contain NaN or infinite values ({bad} of {out.shape[0]} images); "
                         "clean or re-normalize them first.")
    return out


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
