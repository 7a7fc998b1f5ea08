"""Call interception: a layer's `call` wrapped for the duration of a block, and what is built on it (recording a
layer's output, the truncated forward); `patched` also serves the logits patch. Every hook is an instance attribute shadowing the
class method, installed and removed in `try/finally`: afterwards the model is exactly what the user gave.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Optional

import keras

_ACTIVATIONS_WITH_LOGITS = ("softmax", "sigmoid")


@contextlib.contextmanager
def patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    """Sets an instance attribute without Keras/torch tracking and restores the exact previous state."""
    had = attr in obj.__dict__
    old = obj.__dict__.get(attr)
    object.__setattr__(obj, attr, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, attr, old)
        else:
            object.__delattr__(obj, attr)


@contextlib.contextmanager
def intercept(
    layer: keras.layers.Layer,
    transform: Callable[[Any], Any],
    on: str = "output",
) -> Iterator[None]:
    """Routes `layer`'s output (or its first input, `on="input"`) through `transform` during the block.

    `transform(tensor) -> tensor` may record the tensor and return a replacement (e.g. a differentiation
    point). The original `call` is restored on exit, whatever happens inside.
    """
    original = layer.call  # the bound method (or an outer wrapper when nested; both compose)

    if on == "output":

        def wrapped(*args, **kwargs):
            return transform(original(*args, **kwargs))

    elif on == "input":

        def wrapped(inputs, *args, **kwargs):
            return original(transform(inputs), *args, **kwargs)

    else:
        raise ValueError(f"`on` must be 'output' or 'input', got {on!r}")

    with patched(layer, "call", wrapped):
        yield


@contextlib.contextmanager
def intercept_all(layers: List[keras.layers.Layer], transform_for: Callable[[int], Callable[[Any], Any]]
                  ) -> Iterator[None]:
    """`intercept` for several layers at once: the output of `layers[i]` goes through `transform_for(i)`."""
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(intercept(layer, transform_for(i)))
        yield


@contextlib.contextmanager
def recording(layer: keras.layers.Layer, on: str = "output") -> Iterator[List[Any]]:
    """Within the block, every output (or first input) of `layer` is appended to the yielded list."""
    recorded: List[Any] = []

    def record(tensor: Any) -> Any:
        recorded.append(tensor)
        return tensor

    with intercept(layer, record, on=on):
        yield recorded


class CaptureError(ValueError):
    """The layer's output could not be captured (it was not called, or it has several outputs)."""


class _StopForward(Exception):
    """Raised by the capture hook once the layer has produced its output, so nothing behind it runs.

    Keras may re-raise it as a new instance of this class with a longer message, so it carries no data.
    """


def forward_to(model: keras.layers.Layer, layer: keras.layers.Layer, inputs: Any) -> Any:
    """`layer`'s output when `model` runs on `inputs`; the layers after it are not computed.

    Raising from the hook is what makes a filter-pattern step cost the truncated model's forward and backward
    (VGG16's block3_conv1 is a third of its work), on any model, without building a sub-model.
    """
    recorded: List[Any] = []

    def stop(output: Any) -> Any:
        recorded.append(output)
        raise _StopForward("layer output captured")

    try:
        with intercept(layer, stop):
            model(inputs, training=False)
    except _StopForward:
        pass
    if not recorded:
        raise CaptureError(
            f"Layer '{layer.name}' was not called when model '{model.name}' ran, so its output cannot be "
            "captured. Pass a layer that the model's forward pass uses."
        )
    output = recorded[0]
    if isinstance(output, (list, tuple, dict)):
        raise CaptureError(f"Layer '{layer.name}' returns several tensors; pass a layer with one output.")
    return output


def activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", "") if callable(fn) else ""


def removable_activation(layer: keras.layers.Layer) -> Optional[str]:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = activation_name(getattr(layer, "activation", None))
    return name if name in _ACTIVATIONS_WITH_LOGITS else None
