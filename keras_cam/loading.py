"""Loading a saved model and scaling pixels the way it expects: what the command line (`keras-cam`) and the
Ray adapter (`keras_cam.integrations.ray`) share. Keras is imported on first use, not with this module."""
from __future__ import annotations

import os
from typing import Any

__all__ = ["SCALES", "load_model", "scale"]

#: Pixel scalings by name (`--scale`, Ray's `scale=`): RGB floats in [0, 1] as read -> what the model expects.
SCALES = ("1/255", "none", "caffe", "tf", "torch")


def load_model(path: str, unsafe: bool, option: str = "--unsafe", compile: bool = True) -> Any:
    """A saved Keras model (`keras.saving.load_model`), with one-line `ValueError`s for a missing, damaged or
    unloadable file; `unsafe` allows Python code in it (Lambda layers), and `option` is how the hint names
    that switch to the caller (`--unsafe` on the command line, `unsafe=True` in Python)."""
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


def scale(x: Any, mode: str) -> Any:
    """Images read as RGB floats in [0, 1] -> what the model expects (keras.applications conventions)."""
    if mode == "1/255":
        return x
    if mode == "none":
        return x * 255.0
    from keras.applications import imagenet_utils

    return imagenet_utils.preprocess_input(x * 255.0, mode=mode)
