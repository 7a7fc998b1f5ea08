"""What the backend seams share (no backend imports here)."""
from __future__ import annotations

from typing import Any, Sequence


def check_recorded(recorded: Sequence[Any], layers: Sequence[Any]) -> None:
    """Every captured layer must have run; say which did not."""
    missing = [layer.name for layer, tensor in zip(layers, recorded) if tensor is None]
    if missing:
        raise ValueError(f"Layer '{missing[0]}' was not called when the model ran, so its output cannot be "
                         "explained. Pass a layer that the model's forward pass uses.")
