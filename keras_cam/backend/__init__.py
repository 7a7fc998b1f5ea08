"""The backend seam: the only place that imports TensorFlow, JAX or PyTorch.

Everything else in keras-cam is written in `keras.ops` and numpy. A backend module offers:

- `activation_grads(model, inputs, layers, score_fn)`: run the model once with `layers` intercepted and
  return `(activations, grads, outputs, aux)`, lists with one entry per layer, where `(scores, aux) =
  score_fn(outputs)` and `grads = d sum(scores) / d activations`; with scores of shape (N, K) (K targets per
  image) each gradient is (N, K, ...): the part of the model after the layers is differentiated K times,
  vectorized, after one forward pass. Gradients stop at the first captured layer (nothing upstream is
  differentiated), and each image's score depends only on its own image, so the gradient of the sum is the
  per-image gradient.
- `input_grads(model, inputs, loss_fn)`: `(loss, d sum(loss) / d inputs)` with `loss_fn(model, inputs)`.
- `compile(fn, model)`: a compiled version of `fn(*tensors)`; model variables are read at call time, so
  training between calls needs no recompilation.
- `release_memory()`: called when compiled functions are dropped, to release what the backend keeps for
  them beyond the functions themselves.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import keras

_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def get() -> ModuleType:
    """The seam implementation for the active Keras backend."""
    name = keras.backend.backend()
    if name not in _MODULES:
        raise ValueError(
            f"keras-cam supports the TensorFlow, JAX and PyTorch backends; the active Keras backend is "
            f"'{name}'. Set KERAS_BACKEND=tensorflow, jax or torch before importing keras."
        )
    return importlib.import_module(f"keras_cam.backend.{_MODULES[name]}")
