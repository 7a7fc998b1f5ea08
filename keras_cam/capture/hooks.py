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
    """`intercept` for several layers at once: the output of `layers[i]` goes through `transform_for(i)`.

    Each block wraps one forward pass, in which every layer may run once: see `check_ran_once`.
    """
    calls = [0] * len(layers)

    def counted(i: int) -> Callable[[Any], Any]:
        transform = transform_for(i)

        def run(out: Any) -> Any:
            calls[i] += 1
            return transform(out)

        return run

    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(intercept(layer, counted(i)))
        yield
    check_ran_once(layers, calls)


def check_ran_once(layers: List[keras.layers.Layer], calls: List[int]) -> None:
    """A layer that ran more than once in one forward pass (a shared layer, e.g. one backbone applied to two
    inputs) has several outputs: explaining one would silently leave the others out, so this refuses it.
    Checked after the pass (an error raised inside a layer's call reaches the user wrapped in Keras' text)."""
    for layer, count in zip(layers, calls):
        if count > 1:
            raise ValueError(
                f"Layer '{layer.name}' runs {count} times in one forward pass (a layer shared by several "
                "branches, or called repeatedly), so which of its outputs to explain is ambiguous. Explain "
                "a layer that runs once per forward pass (e.g. one after the branches join).")


@contextlib.contextmanager
def recording_all(layers: List[keras.layers.Layer], on: str = "output") -> Iterator[List[List[Any]]]:
    """`recording` for several layers of one forward pass, each of which must run once (`check_ran_once`)."""
    with contextlib.ExitStack() as stack:
        records = [stack.enter_context(recording(layer, on=on)) for layer in layers]
        yield records
    check_ran_once(layers, [len(r) for r in records])


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
