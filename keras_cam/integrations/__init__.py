"""Adapters for other frameworks, each imported on first use (`kc.integrations.ray.Explainer`), so that
importing keras-cam never imports them, and a missing framework is reported only when its adapter is used."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ray"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
