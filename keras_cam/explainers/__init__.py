"""Explainers: one calling convention, `explainer(images, targets=None) -> (N, H, W)` heatmaps in [0, 1].

A method is a subclass of `BaseCAM` that sets `name`: defining it registers it for `get_explainer` and
exports it from this package. The method families below are imported in the order `available_methods()`
lists them; any other module of this package is imported after them, so a new family needs no edit here.
Making a method public is one line in the export table of `keras_cam/__init__.py`.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import keras

from keras_cam.explainers.base import BaseCAM, Explanation  # noqa: F401  (public)
from keras_cam.explainers.registry import available_methods, lookup, registered_methods

_FAMILIES = ("gradient", "score", "eigen", "cam")

for _name in _FAMILIES + tuple(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _FAMILIES):
    importlib.import_module(f"{__name__}.{_name}")

globals().update({cls.__name__: cls for cls in registered_methods()})


def get_explainer(name: Any, model: keras.Model, **kwargs: Any) -> BaseCAM:
    """An explainer by name (`"gradcam"`, `"gradcam++"`, `"scorecam"`, ...; "-", "_", "+" tolerant).

    An explainer instance or class is accepted too (an instance is returned as is).

    Example:

    ```python
    explainer = kc.get_explainer("Grad-CAM++", model, layer="conv2")
    ```
    """
    if isinstance(name, BaseCAM):
        return name
    if isinstance(name, type) and issubclass(name, BaseCAM):
        return name(model, **kwargs)
    if not isinstance(name, str):
        raise ValueError(f"`method` must be a name or an explainer, got {type(name).__name__}.")
    cls = lookup(name)
    if cls is None:
        raise ValueError(f"Unknown method '{name}'. Available methods: {', '.join(available_methods())}.")
    return cls(model, **kwargs)


from keras_cam.explainers.cam import class_activation_maps  # noqa: E402  (after the registration above)

__all__ = sorted({cls.__name__ for cls in registered_methods()}
                 | {"BaseCAM", "Explanation", "available_methods", "class_activation_maps", "get_explainer",
                    "registered_methods"})
