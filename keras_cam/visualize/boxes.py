"""Boxes drawn over an overlay: `kc.overlay(..., boxes=, labels=, scores=)`."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import cv2
import numpy as np

from keras_cam._validation import check_boxes, to_numpy

#: Box colours (RGB), one per label in turn: white first (no label), then high-contrast hues.
_COLORS = ((255, 255, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 128, 0))


def draw_boxes(image: np.ndarray, boxes: Any, labels: Optional[Sequence[Any]] = None,
               scores: Optional[Sequence[Any]] = None) -> np.ndarray:
    """A copy of uint8 RGB `image` (H, W, 3) with boxes `(K, 4)` (x0, y0, x1, y1 in its pixels) drawn,
    each captioned with its label (an int or a name) and score when given."""
    raw = to_numpy(boxes)
    if np.size(raw) == 0:
        raw = np.zeros((0, 4))
    elif np.ndim(raw) == 1:  # one box
        raw = np.reshape(raw, (1, -1))
    b = check_boxes(raw, "boxes", rows="K")
    for name, values in (("labels", labels), ("scores", scores)):
        if values is not None and len(values) != len(b):
            raise ValueError(f"`{name}` has {len(values)} entries for {len(b)} boxes; give one per box.")
    out = np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(out.shape[:2]) / 128))
    for k, (x0, y0, x1, y1) in enumerate(np.round(b).astype(int)):
        label = None if labels is None else labels[k]
        color = _COLORS[0] if label is None or not isinstance(label, (int, np.integer)) \
            else _COLORS[1 + int(label) % (len(_COLORS) - 1)]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, thickness)
        caption = " ".join(s for s in (None if label is None else str(label),
                                       None if scores is None else f"{float(scores[k]):.2f}") if s)
        if caption:
            scale = max(0.3, min(out.shape[:2]) / 400)
            cv2.putText(out, caption, (x0 + 1, max(y0 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1,
                        cv2.LINE_AA)
    return out
