"""JAX implementation of the backend seam (see `keras_cam/backend/__init__.py`).

Gradients w.r.t. an intermediate activation: the hook returns `stop_gradient(a) + probe` with `probe = 0`,
and `jax.grad` w.r.t. `probe` is the gradient w.r.t. the activation (docs/architecture.md, "The backend seam").
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import keras

from keras_cam.capture import intercept


def _forward(model, inputs, layer, probe=None):
    recorded = {}

    def transform(out):
        out = jax.lax.stop_gradient(out)
        if probe is not None:
            out = out + probe.astype(out.dtype)
        recorded["a"] = out
        return out

    with intercept(layer, transform):
        outputs = model(inputs, training=False)
    return recorded["a"], outputs


def activation_grads(model, inputs, layer, score_fn: Callable):
    # The probe needs the activation's shape: trace the forward abstractly once (costs trace time only).
    shape = jax.eval_shape(lambda x: _forward(model, x, layer)[0], inputs)

    def objective(probe):
        a, outputs = _forward(model, inputs, layer, probe)
        scores, aux = score_fn(outputs)
        return jnp.sum(scores), (a, outputs, aux)

    probe = jnp.zeros(shape.shape, jnp.float32)
    grads, (a, outputs, aux) = jax.grad(objective, has_aux=True)(probe)
    return a, grads, outputs, aux


def input_grads(model, inputs, loss_fn: Callable):
    def objective(x):
        loss = loss_fn(model, x)
        return jnp.sum(loss), loss

    grads, loss = jax.grad(objective, has_aux=True)(inputs)
    return loss, grads


def compile(fn: Callable, model) -> Callable:
    variables = list(model.variables)

    # Variable values are arguments, not constants baked into the trace: training between calls needs
    # no recompilation, and the StatelessScope makes every variable read inside `fn` see these values.
    @jax.jit
    def jitted(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    def call(*args):
        return jitted([v.value for v in variables], *args)

    return call


def release_memory() -> None:
    """Called when compiled functions are dropped: JAX's own staging caches (jaxprs of every jitted library
    function traced at every shape, up to thousands of entries each) hold about 1.7 MB per input shape an
    explainer has seen, and do not shrink when our traces go. Clearing them keeps memory flat over many image
    sizes; live jitted functions keep their compiled executables (only `jax.clear_caches` drops those)."""
    try:
        from jax._src import util  # private: if it moves, memory is merely not released early
    except ImportError:
        return
    clear = getattr(util, "clear_all_caches", None)
    if clear is not None:
        clear()
