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

    #: This call's per-image data, set by `resolve` (None when the target carries none).
    _rows: Optional[np.ndarray] = None

    def take_rows(self) -> Optional[np.ndarray]:
        """The per-image data of this call (once), or None."""
        rows, self._rows = self._rows, None
        return rows

    def peek_rows(self) -> Optional[np.ndarray]:
        """The per-image data of this call, left in place for `take_rows` (for explainers whose own
        perturbed passes score each image's copies: Score-CAM, AblationCAM)."""
        return self._rows

    def __call__(self, outputs: Any) -> Any:
        return self.score(outputs)

    def score(self, outputs: Any, index: Any = None) -> Any:
        raise NotImplementedError
