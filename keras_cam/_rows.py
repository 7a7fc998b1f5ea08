"""The base of targets that carry per-image data (segmentation masks, detection boxes)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


class RowsTarget:
    """A target whose per-image data (masks, boxes) travels with the images into compiled functions:
    `resolve(n)` checks it for one call, `take_rows()` hands it over, `score(outputs, rows)` reads it."""

    #: Whether it scores several entries per image, (N, K) (K maps per image), instead of (N,).
    several = False

    def resolve(self, n: int) -> "RowsTarget":
        return self

    def take_rows(self) -> Optional[np.ndarray]:
        return None

    def score(self, outputs: Any, index: Any = None) -> Any:
        raise NotImplementedError
