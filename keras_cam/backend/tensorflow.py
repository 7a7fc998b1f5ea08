"""TensorFlow implementation of the backend seam (see `keras_cam/backend/__init__.py`)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, List, Sequence

import tensorflow as tf

from keras_cam._validation import user_message
from keras_cam.backend.common import check_recorded
from keras_cam.capture import intercept


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
        with contextlib.ExitStack() as stack:
            for i, layer in enumerate(layers):
                stack.enter_context(intercept(layer, transform_for(i)))
            outputs = model(inputs, training=False)
        scores, aux = score_fn(outputs)
    check_recorded(recorded, layers)
    zero = tf.UnconnectedGradients.ZERO
    if len(scores.shape) == 1:
        grads = tape.gradient(scores, recorded, unconnected_gradients=zero)
    else:  # (N, K): the head differentiated K times, vectorized; target k of image i depends on image i only
        grads = [tape.batch_jacobian(scores, a, unconnected_gradients=zero) for a in recorded]
    del tape
    return recorded, grads, outputs, aux


def input_grads(model, inputs, loss_fn: Callable):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        loss = loss_fn(model, inputs)
    return loss, tape.gradient(loss, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)


# Errors our compiled functions raise on purpose (bad targets, layers, inputs): shown with their own message.
_PLAIN_ERRORS = (ValueError, TypeError, IndexError, KeyError, NotImplementedError)


def compile(fn: Callable, model) -> Callable:
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
            if type(e) not in _PLAIN_ERRORS or "in user code:" not in str(e):
                raise
            raise type(e)(user_message(e)) from None

    return call


def to_numpy(x: Any):
    return x.numpy() if hasattr(x, "numpy") else x


def release_memory() -> None:
    """Called when compiled functions are dropped; nothing beyond them to release here."""
