"""What the `keras-cam` subcommands share: argument types, input sizes, and turning errors into one line.
Model loading and pixel scaling, which the Ray adapter shares too, live in `keras_cam.loading`; one-line
messages in `keras_cam._validation`."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Iterator, Optional, Sequence, Tuple

# Kept importable from here for code (and tests) written against the older layout; the subcommands import
# keras_cam.loading and keras_cam._validation directly.
from keras_cam._validation import one_line  # noqa: F401
from keras_cam.loading import SCALES, load_model, scale  # noqa: F401

PROG = "keras-cam"
# Errors the library raises on bad input or files: reported as one line, exit status 2, no traceback.
USER_ERRORS = (ValueError, OSError)
#: Exit status of an unexpected exception (a bug: KERAS_CAM_DEBUG=1 shows its traceback).
INTERNAL_ERROR = 3


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def name_or_index(text: str) -> object:
    """An int is an index, anything else a name."""
    try:
        return int(text)
    except ValueError:
        return text


def check_pixels(height: int, width: int, max_pixels: int, what: str, fix: str) -> None:
    if height * width > max_pixels:
        raise ValueError(f"{what} {height}x{width} = {height * width:,} pixels, above the limit of "
                         f"{max_pixels:,} (--max-pixels); {fix}")


def input_size(model, size: Optional[Sequence[int]], max_pixels: int) -> Tuple[int, int]:
    if size:
        return int(size[0]), int(size[1])  # checked against --max-pixels before any work
    from keras_cam import capture

    inputs = capture.graph_tensors(model, "inputs")
    if inputs and len(inputs[0].shape) == 4 and None not in tuple(inputs[0].shape[1:3]):
        height, width = (int(v) for v in inputs[0].shape[1:3])
        check_pixels(height, width, max_pixels, "the model's input size is",
                      "raise --max-pixels if you mean it, or pass a smaller --size if the model accepts one")
        return height, width
    raise ValueError("the model accepts any image size; pass --size H W")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[tempfile.SpooledTemporaryFile]:
    """Sends what native code writes to file descriptor 2 into a temporary file for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
