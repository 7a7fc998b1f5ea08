"""JAX implementation of the backend seam (see `keras_cam/backend/__init__.py`).

Gradients w.r.t. an intermediate activation: the hook returns `a + probe` with `probe = 0` (and
`stop_gradient` at the first captured layer), and the gradient w.r.t. `probe` is the gradient w.r.t. the
activation (docs/architecture.md, "The backend seam").
"""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import keras

from keras_cam import _devices
from keras_cam.backend.common import check_recorded
from keras_cam.capture import intercept_all


def _forward(model, inputs, layers: Sequence, probes=None, scales=None):
    """The model's outputs with `layers` intercepted: each output `a` becomes `a + probe` (differentiating
    w.r.t. the probe is differentiating w.r.t. `a`) and, with `scales`, `+ scale * stop_gradient(a)`, so the
    derivative along `scale` is the direction `a` itself (Hessian-vector products with the activations)."""
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            if not any(r is not None for r in recorded):
                out = jax.lax.stop_gradient(out)  # the first captured layer: nothing upstream is differentiated
            if probes is not None:
                out = out + probes[i].astype(out.dtype)
            if scales is not None:
                out = out + scales[i].astype(out.dtype) * jax.lax.stop_gradient(out)
            recorded[i] = out
            return out

        return transform

    with intercept_all(layers, transform_for):
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


def compile(fn: Callable, model, split: bool = False) -> Callable:
    distribution, count = devices(model) if split else (None, 1)
    variables = list(model.variables)

    # Variable values are arguments, not constants baked into the trace: training between calls needs
    # no recompilation, and the StatelessScope makes every variable read inside `fn` see these values.
    def body(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(body)
    per_device: dict = {}  # one sharded function per pattern of split and shared arguments

    def call(*args):
        values = [v.value for v in variables]
        rows = _devices.common_rows(args) if distribution is not None else None
        if rows is None:  # one device, or not a chunk of rows
            return jitted(values, *args)
        # Rows split over the devices, each device running `fn` on its own rows (shard_map): the rows are
        # independent, so no collective is needed. Left to jit's partitioner instead, ops it cannot split
        # (eigh, svd) were gathered across devices, and on a CPU with fewer threads than simulated devices
        # that rendezvous never completed. Arguments shared by every part (one row) go whole to each device.
        args = _devices.pad(args, count)
        mask = tuple(_devices.split_mask(args))
        sharded = per_device.get(mask)
        if sharded is None:
            sharded = per_device[mask] = jax.jit(_shard_map(body, distribution, mask))
        # Cut on the host: slicing rows of an array sharded over the devices is itself a cross-device
        # program (a gather), which hung the same way; fetching each device's rows needs none.
        return _devices.cut(jax.device_get(sharded(values, *args)), rows)

    return call


# Set while a function split over several devices is traced (this thread only: tracing is synchronous).
_tracing_split = threading.local()


def decompose(fn: Callable[[Any], Any], x: Any) -> Any:
    """A batched decomposition (eigh, svd) of the matrices `x`, one matrix per LAPACK call when the function
    is split over several devices. jaxlib's CPU LAPACK kernels spread a batch over XLA's intra-op thread
    pool and wait for it; with every device's part running at once on that same pool, all its threads could
    wait for work queued behind themselves, and the call never returned. A batch of one runs inline."""
    if not getattr(_tracing_split, "active", False):
        return fn(x)
    return jax.lax.map(lambda m: keras.tree.map_structure(lambda o: o[0], fn(m[None])), x)


def _shard_map(body: Callable, distribution: Any, mask: Sequence[bool]) -> Callable:
    """`body(values, *args)` run per device on its rows of the split arguments (`mask`), outputs by rows."""
    inner = body

    def body(values, *args):
        before = getattr(_tracing_split, "active", False)
        _tracing_split.active = True
        try:
            return inner(values, *args)
        finally:
            _tracing_split.active = before

    spec = jax.sharding.PartitionSpec
    axis = distribution.batch_dim_name
    in_specs = (spec(),) + tuple(spec(axis) if split else spec() for split in mask)
    mesh = distribution.device_mesh.backend_mesh
    if hasattr(jax, "shard_map"):
        return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=spec(axis), check_vma=False)
    from jax.experimental.shard_map import shard_map  # JAX < 0.7

    return shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=spec(axis), check_rep=False)


def devices(model) -> Tuple[Any, int]:
    """The active `keras.distribution` (e.g. `DataParallel`) and the devices a batch is split over, or
    `(None, 1)` for one device. Like Keras' own training loop, it is read at call time."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None, 1
    mesh = distribution.device_mesh
    count = int(mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)])
    return (distribution, count) if count > 1 else (None, 1)


def rule_gradient(forward: Callable, backward: Callable, xs: List[Any]) -> Any:
    """`forward(xs)` whose backward pass is `backward(xs, forward(xs), v)` (an LRP rule)."""

    @jax.custom_gradient
    def call(*xs):
        z = forward(list(xs))
        return z, lambda v: tuple(backward(list(xs), z, v))

    return call(*xs)


def vjp(fn: Callable, xs: List[Any]) -> Tuple[Any, Callable]:
    """`(fn(xs), v -> J^T v)` for a list of arrays `xs`."""
    out, pullback = jax.vjp(lambda *ps: fn(list(ps)), *xs)
    return out, lambda v: list(pullback(v))


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


def input_layer_grads(model, x, layers: Sequence, forward: Callable):
    """`(d sum(scores) / d x, activations, grads, aux)` from one forward pass `(scores, aux) = forward(x)`,
    with `layers` intercepted: `grads[i]` is the gradient w.r.t. layer i's output (a zero probe added to it),
    nothing stopped (None for a layer that did not run). See `keras_cam/backend/__init__.py`."""

    def run(x, probes):
        recorded: List[Any] = [None] * len(layers)

        def transform_for(i: int) -> Callable:
            def transform(out):
                if probes is not None and probes[i] is not None:
                    out = out + probes[i].astype(out.dtype)
                recorded[i] = out
                return out

            return transform

        with intercept_all(layers, transform_for):
            scores, aux = forward(x)
        return scores, (recorded, aux)

    shapes = jax.eval_shape(lambda x: run(x, None)[1][0], x)
    probes = [None if s is None else jnp.zeros(s.shape, jnp.float32) for s in shapes]
    scores, vjp, (recorded, aux) = jax.vjp(run, x, probes, has_aux=True)
    x_grad, layer_grads = vjp(jnp.ones_like(scores))
    return x_grad, recorded, list(layer_grads), aux


def activation_hvp(model, inputs, layers: Sequence, score_fn: Callable):
    """`activation_grads` plus `hvps`: per layer, `H A` (the Hessian of the summed scores w.r.t. the layer's
    activations times the activations), as the forward-mode derivative (jvp) of the gradient along A;
    (N, K, ...) for (N, K) scores, the K backward passes vectorized with vmap."""
    shapes = jax.eval_shape(lambda x: _forward(model, x, layers)[0], inputs)
    probes = [jnp.zeros(shape.shape, jnp.float32) for shape in shapes]
    n = len(layers)
    score_shape = jax.eval_shape(lambda x: score_fn(_forward(model, x, layers)[1])[0], inputs).shape

    def grads_at(scales, cotangent):
        def objective(probes):
            recorded, outputs = _forward(model, inputs, layers, probes, scales)
            scores, aux = score_fn(outputs)
            return scores, (recorded, outputs, aux)

        _, vjp, extra = jax.vjp(objective, probes, has_aux=True)
        (grads,) = vjp(cotangent)
        return list(grads), extra

    def per_target(cotangent):
        zeros = jnp.zeros((n,), jnp.float32)
        hvps, grads, extra = [], None, None
        for i in range(n):  # one direction per layer: H_ii A_i
            grads, tangents, extra = jax.jvp(lambda s: grads_at(s, cotangent), (zeros,),
                                             (jnp.eye(n, dtype=jnp.float32)[i],), has_aux=True)
            hvps.append(tangents[i])
        return grads, hvps, extra

    if len(score_shape) == 1:
        grads, hvps, (recorded, outputs, aux) = per_target(jnp.ones(score_shape, jnp.float32))
        return recorded, grads, hvps, outputs, aux
    k = score_shape[1]
    cotangents = jnp.broadcast_to(jnp.eye(k, dtype=jnp.float32)[:, None, :], (k,) + tuple(score_shape))
    grads, hvps, (recorded, outputs, aux) = jax.vmap(per_target, out_axes=(0, 0, None))(cotangents)
    move = lambda parts: [jnp.moveaxis(p, 0, 1) for p in parts]  # noqa: E731  (K, N, ...) -> (N, K, ...)
    return recorded, move(grads), move(hvps), outputs, aux


def check_model(model: Any) -> None:
    """Every model this backend builds, it runs (channels_first convolutions included)."""
