"""What the backend seams share (no backend imports here)."""
from __future__ import annotations

from typing import Any, Sequence


def check_recorded(recorded: Sequence[Any], layers: Sequence[Any]) -> None:
    """Every captured layer must have run; say which did not."""
    missing = [layer.name for layer, tensor in zip(layers, recorded) if tensor is None]
    if missing:
        raise ValueError(f"Layer '{missing[0]}' was not called when the model ran, so its output cannot be "
                         "explained. Pass a layer that the model's forward pass uses.")


def channels_first_layers(model: Any) -> list:
    """The model's convolutions and (local) poolings that run channels_first: the ops a CPU TensorFlow
    without oneDNN cannot run."""
    from keras_cam.capture import walk_layers

    def kind(layer: Any) -> bool:
        name = type(layer).__name__
        return "Conv" in name or ("Pooling" in name and not name.startswith("Global"))

    return [l for l in [model] + walk_layers(model)
            if getattr(l, "data_format", None) == "channels_first" and kind(l)]


_LIBC: Any = None


def return_freed_memory() -> None:
    """Collects garbage and hands the C heap's free pages back to the system (glibc's `malloc_trim`).

    Called after compiled functions are dropped: their graphs and executables are freed, but glibc keeps the
    pages in its arenas, so without this the process's resident memory would still grow with every input
    shape ever compiled. Elsewhere (not glibc) only the garbage is collected.
    """
    import gc

    global _LIBC
    gc.collect()  # compiled functions hold reference cycles: free them before trimming
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
