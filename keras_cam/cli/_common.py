"""What the `keras-cam` subcommands share: argument types, model loading, input sizes and scaling, and
turning errors into one line."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Iterator, Optional, Sequence, Tuple

from keras_cam._validation import one_line, user_message  # noqa: F401 (one_line: for the subcommands)

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


SCALES = ("1/255", "none", "caffe", "tf", "torch")


def load_model(path: str, unsafe: bool, option: str = "--unsafe", compile: bool = True):
    """A saved Keras model, with one-line errors; `option` is what the hint for Python code names."""
    import zipfile

    import keras

    if not os.path.exists(path):
        raise ValueError(f"model file '{path}' does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"cannot load '{path}' as a Keras model: it is a folder, not a .keras file")
    # Keras says "File not found" for a .keras file that exists but is not a zip archive: say what it is.
    if not path.lower().endswith((".h5", ".hdf5")):
        try:
            with open(path, "rb") as f:
                archive = zipfile.is_zipfile(f)
        except OSError as e:
            raise ValueError(f"cannot read the model file '{path}': {e.strerror or e}") from None
        if not archive:
            raise ValueError(f"cannot load '{path}' as a Keras model: it is not a valid .keras archive "
                             "(empty, truncated or corrupt); save the model again with "
                             "model.save('model.keras')")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=not unsafe)
    except Exception as e:  # unknown layers, Lambda refused in safe mode, a damaged member, ...
        detail = " ".join(str(e).split())[:300]
        code = "safe_mode" in detail
        hint = f" (it contains Python code: re-run with {option} if you trust the file)" if code else ""
        raise ValueError(f"cannot load '{path}' as a Keras model{hint}: {detail}") from None


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


def scale(x, mode: str):
    """Images read as RGB floats in [0, 1] -> what the model expects (keras.applications conventions)."""
    if mode == "1/255":
        return x
    if mode == "none":
        return x * 255.0
    from keras.applications import imagenet_utils

    return imagenet_utils.preprocess_input(x * 255.0, mode=mode)


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
