"""The methods by name: a `BaseCAM` subclass that sets `name` registers itself here (and its `aliases`)."""
from __future__ import annotations

from typing import Any, Dict, List

_REGISTRY: Dict[str, Any] = {}


def register(cls: Any) -> None:
    """Makes `cls` available under its `name` and `aliases` ("-", "_", "+" and case tolerant)."""
    for alias in (cls.name,) + tuple(cls.aliases):
        _REGISTRY[_key(alias)] = cls


def lookup(name: str) -> Any:
    """The method class registered under `name`, or None."""
    return _REGISTRY.get(_key(name))


def _key(name: str) -> str:
    # "Grad-CAM++", "grad_cam_plus_plus", "gradcampp" -> one spelling
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    return key.replace("plusplus", "++").replace("pp", "++") if key.startswith("gradcam") else key


def registered_methods() -> List[Any]:
    """The method classes, in the order they were defined."""
    return list(dict.fromkeys(_REGISTRY.values()))


def available_methods() -> List[str]:
    """Names accepted by `get_explainer`, one per method, in the order the methods were defined."""
    return [cls.name for cls in registered_methods()]
