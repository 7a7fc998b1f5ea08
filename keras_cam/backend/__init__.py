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
- `input_layer_grads(model, x, layers, forward)`: `(d sum(scores) / d x, activations, grads, aux)` from one
  forward pass `(scores, aux) = forward(x)` with `layers` intercepted; `grads[i]` is the gradient w.r.t. the
  output of `layers[i]` (None for a layer that did not run). Nothing is stopped: the gradient reaches the
  input and every layer in the same backward pass (FullGrad's input- and bias-gradients).
- `activation_hvp(model, inputs, layers, score_fn)`: `(activations, grads, hvps, outputs, aux)`, as
  `activation_grads`, plus per layer the Hessian-vector product `H A = d (g . A) / dA` of the summed scores
  w.r.t. the layer's activations A, with A as the vector (held constant); (N, K, ...) for (N, K) scores
  (ShapleyCAM). TensorFlow: nested tapes; JAX: jvp of the vjp along A; PyTorch: `create_graph=True`.
- `compile(fn, model, split=False)`: a compiled version of `fn(*tensors)`; model variables are read at call
  time, so training between calls needs no recompilation. With `split` (for functions whose output rows
  depend on the same input rows only) and several devices, each call whose arguments all have the same
  number of rows is padded to a multiple of the device count, split by rows over the devices, and its
  outputs come back whole, in order (docs/architecture.md, "Several devices").
- `devices(model)`: `(strategy or distribution, device count)` that `model` runs on now, `(None, 1)` on one
  device. TensorFlow: the `tf.distribute` strategy `model.distribute_strategy` names (the one the model was
  built under, else the one in scope), split with `strategy.run`; JAX: the active `keras.distribution`,
  inputs put with its data layout. Optional: a backend without it (PyTorch) runs on one device.
- `release_memory()`: called when compiled functions are dropped, to release what the backend keeps for
  them beyond the functions themselves.
- `decompose(fn, x)`: optional; `fn` (a batched LAPACK decomposition such as `keras.ops.eigh`) on the
  batch of matrices `x`. JAX maps it over the matrices one at a time while tracing a call split over
  several devices (see `keras_cam/backend/jax.py`); the others call `fn(x)`.
- `rule_gradient(forward, backward, xs)` and `vjp(fn, xs)`: optional (TensorFlow, JAX); `forward(xs)` as a
  custom gradient whose backward pass is `backward(xs, z, v)`, and `(fn(xs), v -> J^T v)`. LRP's rules use
  them where present and a stop-gradient form otherwise (`keras_cam/lrp/backward.py`).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable

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


def decompose(fn: Callable[[Any], Any], x: Any) -> Any:
    """`fn(x)` for a batched matrix decomposition (eigh, svd) inside a compiled function, run the way the
    active backend can run it safely (see `decompose` in this module's docstring)."""
    impl = getattr(get(), "decompose", None)
    return fn(x) if impl is None else impl(fn, x)
