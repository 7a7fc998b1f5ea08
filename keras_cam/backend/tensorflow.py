"""TensorFlow implementation of the backend seam (see `keras_cam/backend/__init__.py`)."""
from __future__ import annotations

import functools
from typing import Any, Callable, List, Sequence, Tuple

import tensorflow as tf

from keras_cam import _devices
from keras_cam._validation import user_message
from keras_cam.backend.common import channels_first_layers, check_recorded
from keras_cam.capture import intercept_all
from keras_cam.capture.hooks import adopt, current_scope


def activation_grads(model, inputs, layers: Sequence, score_fn: Callable):
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            if not any(r is not None for r in recorded):
                # The first captured layer in call order: nothing upstream of it is differentiated.
                out = tf.stop_gradient(out)
            tape.watch(out)
            recorded[i] = out
            return out

        return transform

    # Persistent: one batch_jacobian per layer when scores are (N, K) (K targets, one forward pass).
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
        with intercept_all(layers, transform_for):
            outputs = model(inputs, training=False)
        scores, aux = score_fn(outputs)
    check_recorded(recorded, layers)
    zero = tf.UnconnectedGradients.ZERO
    if len(scores.shape) == 1:
        grads = tape.gradient(scores, recorded, unconnected_gradients=zero)
    elif _grouped_convolutions(model) and not channels_first_supported():
        # (N, K) through a grouped convolution on a CPU without oneDNN: TensorFlow has no vectorized (pfor)
        # gradient of it there, so one backward pass per target, stacked (the same values).
        picks = [tf.one_hot(tf.fill(tf.shape(scores)[:1], k), scores.shape[1], dtype=scores.dtype)
                 for k in range(int(scores.shape[1]))]
        per_target = [tape.gradient(scores, recorded, output_gradients=p, unconnected_gradients=zero)
                      for p in picks]
        grads = [tf.stack([g[i] for g in per_target], axis=1) for i in range(len(recorded))]
    else:  # (N, K): the head differentiated K times, vectorized; target k of image i depends on image i only
        grads = [tape.batch_jacobian(scores, a, unconnected_gradients=zero) for a in recorded]
    del tape
    return recorded, grads, outputs, aux


def _grouped_convolutions(model) -> bool:
    """Whether `model` holds a convolution with `groups` > 1 (D-FINE's HGNetV2 and hybrid encoder do)."""
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else []
    return any(int(getattr(layer, "groups", 1) or 1) > 1 for layer in layers)


def input_grads(model, inputs, loss_fn: Callable):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        loss = loss_fn(model, inputs)
    return loss, tape.gradient(loss, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)


CHANNELS_FIRST_MESSAGE = (
    "TensorFlow on this CPU runs channels_first convolutions only with oneDNN on: set TF_ENABLE_ONEDNN_OPTS=1 "
    "before importing TensorFlow, or use the JAX or PyTorch backend")


@functools.lru_cache(maxsize=None)
def channels_first_supported() -> bool:
    """Whether this TensorFlow runs a channels_first (NCHW) convolution: always on a GPU; on a CPU only with
    its oneDNN optimizations on, which TensorFlow turns off by default on CPUs without certain instruction sets
    (and `TF_ENABLE_ONEDNN_OPTS=0` turns off anywhere). Probed once with a one-op call."""
    try:
        with tf.init_scope():  # run eagerly also when first asked while tracing (a graph op never fails there)
            tf.nn.conv2d(tf.zeros((1, 1, 2, 2)), tf.zeros((1, 1, 1, 1)), 1, "VALID", data_format="NCHW")
        return True
    except tf.errors.OpError:
        return False


def check_model(model: Any) -> None:
    """Refuses, in one line, a model this TensorFlow cannot run (channels_first convolutions on a CPU
    without oneDNN), before TensorFlow fails deep inside the model with its own words."""
    layers = channels_first_layers(model)
    if layers and not channels_first_supported():
        raise ValueError(f"Model '{model.name}' has channels_first layers ('{layers[0].name}', ...). "
                         f"{CHANNELS_FIRST_MESSAGE}.")


# Errors our compiled functions raise on purpose (bad targets, layers, inputs): shown with their own message.
_PLAIN_ERRORS = (ValueError, TypeError, IndexError, KeyError, NotImplementedError)


def compile(fn: Callable, model, split: bool = False) -> Callable:
    strategy, count = devices(model) if split else (None, 1)
    if strategy is not None:
        fn = _over_replicas(fn, strategy, count)
    # Variables are captured by reference, so weight updates are seen without retracing.
    traced = tf.function(fn, reduce_retracing=False)
    # TensorFlow counts traces per Python code object, so every signature's function (each traced once)
    # adds up to a false "triggered tf.function retracing" warning; ours are built once per signature.
    traced._omit_frequent_tracing_warning = True

    def call(*args):
        try:
            return traced(*args)
        except _PLAIN_ERRORS as e:
            # Autograph re-raises errors from traced code as "in user code: File ..., line N ... Type: msg";
            # the user should read our message, as on the other backends.
            if not isinstance(e, _PLAIN_ERRORS) or "in user code:" not in str(e):
                raise
            raise type(e)(user_message(e)) from None

    return call


def devices(model) -> Tuple[Any, int]:
    """The `tf.distribute` strategy `model` runs under and its replica count, or `(None, 1)` for one device.

    As `model.predict` decides: the strategy whose scope the model was built in, else the one in scope at
    call time (`with strategy.scope():`).
    """
    strategy = getattr(model, "distribute_strategy", None)  # Keras models; a bare layer has none
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    count = int(strategy.num_replicas_in_sync)
    return (strategy, count) if count > 1 else (None, 1)


def _over_replicas(fn: Callable, strategy: Any, count: int) -> Callable:
    """`fn` with its rows split over the replicas (`strategy.run`, traced into one graph), outputs in order."""

    def run(*args):
        rows = _devices.common_rows(args)
        if rows is None:  # not a chunk of rows: one device, as without a strategy
            return fn(*args)
        padded = _devices.pad(args, count)
        parts = strategy.experimental_distribute_values_from_function(
            lambda ctx: tuple(_devices.split(padded, count, ctx.replica_id_in_sync_group)))
        scope = current_scope()

        def replica(*part):  # replica threads see the hooks of the thread that runs the call
            with adopt(scope):
                return fn(*part)

        outputs = strategy.run(replica, args=parts)
        return _devices.gather(strategy.experimental_local_results(outputs), rows)

    return run


def to_numpy(x: Any):
    return x.numpy() if hasattr(x, "numpy") else x


def rule_gradient(forward: Callable, backward: Callable, xs: List[Any]) -> Any:
    """`forward(xs)` whose backward pass is `backward(xs, forward(xs), v)` (an LRP rule): the rule's terms run
    in the backward pass only, where TensorFlow's graph prunes the forward convolutions their gradients do not
    read (see `docs/architecture.md`, "Relevance propagation")."""

    @tf.custom_gradient
    def call(*xs):
        z = forward(list(xs))

        def grad(v, variables=None):
            relevance = backward(list(xs), z, v)
            # The layer's weights may be read in `forward`: they get no gradient (relevance is for inputs).
            return (relevance, [None] * len(variables)) if variables else relevance

        return z, grad

    return call(*xs)


def vjp(fn: Callable, xs: List[Any]) -> Tuple[Any, Callable]:
    """`(fn(xs), v -> J^T v)` for a list of tensors `xs`."""
    with tf.GradientTape() as tape:
        tape.watch(xs)
        out = fn(xs)
    return out, lambda v: tape.gradient(out, xs, output_gradients=v)


def release_memory() -> None:
    """Called when compiled functions are dropped; nothing beyond them to release here."""


def input_layer_grads(model, x, layers: Sequence, forward: Callable):
    """`(d sum(scores) / d x, activations, grads, aux)` from one forward pass `(scores, aux) = forward(x)`,
    with `layers` intercepted: `grads[i]` is the gradient w.r.t. layer i's output, nothing stopped
    (None for a layer that did not run). See `keras_cam/backend/__init__.py`."""
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            tape.watch(out)
            recorded[i] = out
            return out

        return transform

    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        with intercept_all(layers, transform_for):
            scores, aux = forward(x)
    found = [i for i, r in enumerate(recorded) if r is not None]
    grads = tape.gradient(scores, [x] + [recorded[i] for i in found],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    layer_grads: List[Any] = [None] * len(layers)
    for j, i in enumerate(found):
        layer_grads[i] = grads[1 + j]
    return grads[0], recorded, layer_grads, aux


def activation_hvp(model, inputs, layers: Sequence, score_fn: Callable):
    """`activation_grads` plus `hvps`: per layer, `H A = d (g . A) / dA` (A held constant), the Hessian of the
    summed scores w.r.t. the layer's activations times the activations; (N, K, ...) for (N, K) scores.
    Nested tapes: the inner one gives the gradients, the outer one differentiates them."""
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            if not any(r is not None for r in recorded):
                out = tf.stop_gradient(out)  # the first captured layer: nothing upstream is differentiated
            outer.watch(out)
            inner.watch(out)
            recorded[i] = out
            return out

        return transform

    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as outer:
        with tf.GradientTape(watch_accessed_variables=False, persistent=True) as inner:
            with intercept_all(layers, transform_for):
                outputs = model(inputs, training=False)
            scores, aux = score_fn(outputs)
            columns = [scores] if len(scores.shape) == 1 else tf.unstack(scores, axis=1)
        check_recorded(recorded, layers)
        per_column = [inner.gradient(c, recorded, unconnected_gradients=zero) for c in columns]
        dots = [[tf.reduce_sum(g * tf.stop_gradient(a)) for g, a in zip(gs, recorded)] for gs in per_column]
    hvps = [[outer.gradient(d, a, unconnected_gradients=zero) for d, a in zip(ds, recorded)] for ds in dots]
    del inner, outer
    if len(scores.shape) == 1:
        return recorded, per_column[0], hvps[0], outputs, aux
    stack_k = lambda parts: [tf.stack(p, axis=1) for p in zip(*parts)]  # noqa: E731  (N, K, ...)
    return recorded, stack_k(per_column), stack_k(hvps), outputs, aux
