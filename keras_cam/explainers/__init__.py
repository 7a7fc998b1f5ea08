"""Explainers: one calling convention, `explainer(images, targets=None) -> (N, H, W)` heatmaps in [0, 1]."""
from __future__ import annotations

from typing import Any, Dict, List, Type

import keras

from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.explainers.cam import CAM
from keras_cam.explainers.eigen import EigenCAM
from keras_cam.explainers.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from keras_cam.explainers.score import ScoreCAM

_METHODS: List[Type[BaseCAM]] = [GradCAM, GradCAMPlusPlus, HiResCAM, XGradCAM, LayerCAM, ScoreCAM, EigenCAM, CAM]


def _key(name: str) -> str:
    # "Grad-CAM++", "grad_cam_plus_plus", "gradcampp" -> one spelling
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    return key.replace("plusplus", "++").replace("pp", "++") if key.startswith("gradcam") else key


_REGISTRY: Dict[str, Type[BaseCAM]] = {}
for _cls in _METHODS:
    for _name in (_cls.name,) + _cls.aliases:
        _REGISTRY[_key(_name)] = _cls


def available_methods() -> List[str]:
    """Names accepted by `get_explainer`."""
    return [cls.name for cls in _METHODS]


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
    cls = _REGISTRY.get(_key(name))
    if cls is None:
        raise ValueError(f"Unknown method '{name}'. Available methods: {', '.join(available_methods())}.")
    return cls(model, **kwargs)


__all__ = ["BaseCAM", "CAM", "EigenCAM", "Explanation", "GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM",
           "ScoreCAM", "XGradCAM", "available_methods", "get_explainer"]
