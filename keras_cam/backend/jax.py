"""JAX implementation of the backend seam (see `keras_cam/backend/__init__.py`).

Gradients w.r.t. an intermediate activation: the hook returns `a + probe` with `probe = 0` (and
`stop_gradient` at the first captured layer), and the gradient w.r.t. `probe` is the gradient w.r.t. the
activation (docs/architecture.md, "The backend seam").
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, List, Sequence

import jax
import jax.numpy as jnp
import keras

from keras_cam.backend.common import check_recorded
from keras_cam.capture import intercept


def _forward(model, inputs, layers: Sequence, probes=None):
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            if not any(r is not None for r in recorded):
                out = jax.lax.stop_gradient(out)  # the first captured layer: nothing upstream is differentiated
            if probes is not None:
                out = out + probes[i].astype(out.dtype)
            recorded[i] = out
            return out

        return transform

    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(intercept(layer, transform_for(i)))
        outputs = model(inputs, training=False)
    check_recorded(recorded, layers)
    return recorded, outputs


def activation_grads(model, inputs, layers: Sequence, score_fn: Callable):
    # The probes need the activations' shapes: trace the forward abstractly once (costs trace time only).
    shapes = jax.eval_shape(lambda x: _forward(model, x, layers)[0], inputs)
    probes = [jnp.zeros(shape.shape, jnp.float32) for shape in shapes]

    def objective(probes):
        recorded, outputs = _forward(model, inputs, layers, probes)
        scores, aux = score_fn(outputs)
        return scores, (recorded, outputs, aux)

    # One forward pass; the backward of each score is a vector-Jacobian product with a one-hot cotangent.
    scores, vjp, (recorded, outputs, aux) = jax.vjp(objective, probes, has_aux=True)
    if scores.ndim == 1:
        (grads,) = vjp(jnp.ones_like(scores))
    else:  # (N, K): K backward passes through the part after the layers, vectorized with vmap
        k = scores.shape[1]
        cotangents = jnp.broadcast_to(jnp.eye(k, dtype=scores.dtype)[:, None, :], (k,) + scores.shape)
        (grads,) = jax.vmap(vjp)(cotangents)
        grads = [jnp.moveaxis(g, 0, 1) for g in grads]
    return recorded, list(grads), outputs, aux


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
