"""Call interception: a layer's `call` wrapped for the duration of a block, and what is built on it (recording a
layer's output, the truncated forward); `patched` also serves the logits patch. Every hook is an instance
attribute shadowing the class method, installed and removed in `try/finally`: afterwards the model is exactly
what the user gave. Hooks are scoped to the thread that installs them, so concurrent calls (and another
thread's plain `model(x)`) see the model as it is.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import keras

_ACTIVATIONS_WITH_LOGITS = ("softmax", "sigmoid")


# -- thread-scoped patches ---------------------------------------------------------------------------------------
#
# A hook must change what the layer does for the call that installed it and for nobody else: another thread's
# plain `model(x)`, or another explainer running in another thread, must see the model as the user gave it.
# So a patched attribute is one dispatcher per (object, attribute), installed while any patch of it is active
# (counted under a lock) and removed with the last one; each thread has its own stack of patches, applied
# when that thread calls the attribute. (docs/architecture.md, "Call interception")

_LOCK = threading.RLock()
_DISPATCHERS: Dict[Tuple[int, str], "_Dispatcher"] = {}
_LOCAL = threading.local()


def current_scope() -> Any:
    """Whose patches the calling thread sees: its own, or those of the thread it works for (`adopt`)."""
    return getattr(_LOCAL, "scope", None) or threading.get_ident()


@contextlib.contextmanager
def _thread_setting(name: str, value: Any) -> Iterator[None]:
    """The calling thread's `name` setting is `value` within the block, restored after."""
    before = getattr(_LOCAL, name, None)
    setattr(_LOCAL, name, value)
    try:
        yield
    finally:
        setattr(_LOCAL, name, before)


def adopt(scope: Any) -> contextlib.AbstractContextManager:
    """Within the block, the calling thread sees (and adds to) the patches of `scope` (`current_scope()` of
    another thread): for helper threads that run one call's work, such as `tf.distribute` replica threads."""
    return _thread_setting("scope", scope)


class _Dispatcher:
    """Stands in for `obj.<attr>` while patches of it are active; calls the calling scope's patches."""

    def __init__(self, obj: Any, attr: str) -> None:
        self.had = attr in obj.__dict__
        self.old = obj.__dict__.get(attr)
        self.base = getattr(obj, attr)  # the bound method, or the instance's own value
        self.stacks: Dict[Any, List[Callable[[Any], Any]]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn = self.base
        for make in self.stacks.get(current_scope(), ()):  # the last patch is the outermost
            fn = make(fn)
        return fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # e.g. `layer.activation.__name__` while patched
        return getattr(self.base, name)


@contextlib.contextmanager
def wrapping(obj: Any, attr: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, the calling thread's `obj.<attr>` is `make(previous)`, `previous` being what it was
    before (the original, or the thread's earlier patch); other threads see theirs. Restored on exit,
    whatever happens inside; the object is exactly as before once no thread patches it."""
    key, scope = (id(obj), attr), current_scope()
    with _LOCK:
        dispatcher = _DISPATCHERS.get(key)
        if dispatcher is None:
            dispatcher = _DISPATCHERS[key] = _Dispatcher(obj, attr)
            object.__setattr__(obj, attr, dispatcher)  # untracked by Keras/torch
        stack = dispatcher.stacks.setdefault(scope, [])
        stack.append(make)
    try:
        yield
    finally:
        with _LOCK:
            stack.remove(make)
            if not stack:
                del dispatcher.stacks[scope]
            if not dispatcher.stacks:
                del _DISPATCHERS[key]
                if dispatcher.had:
                    object.__setattr__(obj, attr, dispatcher.old)
                else:
                    object.__delattr__(obj, attr)


def current(obj: Any, attr: str) -> Any:
    """What `obj.<attr>` is for the calling thread now (its patches applied), never a dispatcher."""
    with _LOCK:
        dispatcher = _DISPATCHERS.get((id(obj), attr))
        if dispatcher is None:
            return getattr(obj, attr)
        fn = dispatcher.base
        for make in list(dispatcher.stacks.get(current_scope(), ())):
            fn = make(fn)
        return fn


def patched(obj: Any, attr: str, value: Callable[..., Any]) -> contextlib.AbstractContextManager:
    """Within the block, the calling thread's `obj.<attr>` (a method or a function) is `value`."""
    return wrapping(obj, attr, lambda previous: value)


@contextlib.contextmanager
def intercept(
    layer: keras.layers.Layer,
    transform: Callable[[Any], Any],
    on: str = "output",
) -> Iterator[None]:
    """Routes `layer`'s output (or its first input, `on="input"`) through `transform` during the block, in the
    calling thread.

    `transform(tensor) -> tensor` may record the tensor and return a replacement (e.g. a differentiation
    point). The original `call` is restored on exit, whatever happens inside.
    """
    if on == "output":

        def make(original):
            def wrapped(*args, **kwargs):
                return transform(original(*args, **kwargs))

            return wrapped

    elif on == "input":

        def make(original):
            def wrapped(inputs, *args, **kwargs):
                return original(transform(inputs), *args, **kwargs)

            return wrapped

    else:
        raise ValueError(f"`on` must be 'output' or 'input', got {on!r}")

    with wrapping(layer, "call", make):
        yield


@contextlib.contextmanager
def intercept_all(layers: List[keras.layers.Layer], transform_for: Callable[[int], Callable[[Any], Any]]
                  ) -> Iterator[None]:
    """`intercept` for several layers at once: the output of `layers[i]` goes through `transform_for(i)`.

    Each block wraps one forward pass, in which every layer may run once: see `check_ran_once`.
    """
    calls = [0] * len(layers)
    structures: List[Any] = [None] * len(layers)

    def counted(i: int) -> Callable[[Any], Any]:
        transform = transform_for(i)

        def run(out: Any) -> Any:
            calls[i] += 1
            if isinstance(out, (list, tuple, dict)):  # refused after the pass (see `check_one_tensor`)
                structures[i] = out
                return out
            return transform(out)

        return run

    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(intercept(layer, counted(i)))
        yield
    check_one_tensor(layers, structures)
    check_ran_once(layers, calls)


def check_one_tensor(layers: List[keras.layers.Layer], outputs: List[Any]) -> None:
    """A layer that returns several tensors (a transformer block's `(output, attention scores)`) has no one
    feature map to explain: refused with the layer's name instead of failing deep inside a method."""
    for layer, out in zip(layers, outputs):
        if isinstance(out, (list, tuple, dict)):
            raise ValueError(
                f"Layer '{layer.name}' returns {len(out)} tensors (a {type(out).__name__}), not one feature map "
                "or one tensor of tokens. Explain a layer with one output: one inside it (e.g. a block's "
                "layer normalization) or the layer after it.")


_EXPLAIN_ONCE = "Explain a layer that runs once per forward pass (e.g. one after the branches join)."


def repeated_layer_advice(advice: str) -> contextlib.AbstractContextManager:
    """Within the block (in the calling thread), `check_ran_once` ends its message with `advice` instead of
    asking for another layer: for methods that take no layer of the user's (FullGrad's bias layers)."""
    return _thread_setting("advice", advice)


def check_ran_once(layers: List[keras.layers.Layer], calls: List[int]) -> None:
    """A layer that ran more than once in one forward pass (a shared layer, e.g. one backbone applied to two
    inputs) has several outputs: explaining one would silently leave the others out, so this refuses it.
    Checked after the pass (an error raised inside a layer's call reaches the user wrapped in Keras' text)."""
    for layer, count in zip(layers, calls):
        if count > 1:
            raise ValueError(
                f"Layer '{layer.name}' runs {count} times in one forward pass (a layer shared by several "
                "branches, or called repeatedly), so which of its outputs to use is ambiguous. "
                + (getattr(_LOCAL, "advice", None) or _EXPLAIN_ONCE))


@contextlib.contextmanager
def recording_all(layers: List[keras.layers.Layer], on: str = "output") -> Iterator[List[List[Any]]]:
    """`recording` for several layers of one forward pass, each of which must run once (`check_ran_once`)."""
    with contextlib.ExitStack() as stack:
        records = [stack.enter_context(recording(layer, on=on)) for layer in layers]
        yield records
    check_one_tensor(layers, [r[-1] if r else None for r in records])
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
