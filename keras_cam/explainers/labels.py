"""Multi-label models: one heatmap per label present in each image, from one pass over all their labels."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from keras_cam._batching import chunk_size, run_batched, signature, to_tensors


class LabelsMixin:
    """`explain_labels` for `BaseCAM` (which provides `_prepare_inputs`, `_compiled`, `_forward_graph` and
    `explain`)."""

    def explain_labels(
        self,
        images: Any,
        threshold: float = 0.5,
        labels: Optional[Any] = None,
        **kwargs: Any,
    ) -> List[Dict[int, np.ndarray]]:
        """Multi-label models: one heatmap per label present in each image.

        Args:
            images: as for `explain`.
            threshold: a label is present when the model's output (its sigmoid probability) exceeds it.
            labels: optional multi-hot (N, K) array giving the labels to explain instead (e.g. ground truth).
            **kwargs: passed to `explain` (`upsample`, `normalize`, `batch_size`).

        Returns:
            A list with one `{label: heatmap (H, W)}` dict per image (empty when no label is present).
        """
        inputs = self._prepare_inputs(images)
        if labels is None:
            size = chunk_size(inputs.n, kwargs.get("batch_size"), bucket=True)
            forward = self._compiled(("forward", inputs.structure, signature(inputs.arrays, size)),
                                     lambda owner: self._forward_graph(owner, inputs.structure))
            (probs,) = run_batched(lambda *arrays: forward(*to_tensors(arrays)), inputs.arrays, size)
            if probs.ndim != 2:
                raise ValueError(
                    f"explain_labels needs a multi-label classifier with outputs (N, K); model "
                    f"'{self.model.name}' outputs shape {probs.shape[1:]} per image. For per-pixel outputs, "
                    "explain a class with `explain(images, targets=...)` and a callable target that scores it "
                    "over the pixels, e.g. lambda out: keras.ops.sum(out[..., k], axis=(1, 2))."
                )
            present = probs > threshold
        else:
            present = np.asarray(labels).astype(bool)
            if present.ndim != 2 or present.shape[0] != inputs.n:
                raise ValueError(f"`labels` must be multi-hot (N, K) with N = {inputs.n}, got {present.shape}.")
        result: List[Dict[int, np.ndarray]] = [{} for _ in range(inputs.n)]
        rows = np.flatnonzero(present.any(axis=1))
        if rows.size:
            # Every image's labels in one pass: K = the most labels of an image, fewer padded with a repeat.
            labels = [np.flatnonzero(present[r]) for r in rows]
            k = max(len(l) for l in labels)
            targets = np.stack([np.resize(l, k) for l in labels]).astype(np.int32)
            maps = self.explain(inputs.rows(rows).user_structure(), targets=targets, **kwargs)
            for r, l, m in zip(rows, labels, maps):
                result[r].update({int(c): m[j] for j, c in enumerate(l)})
        return result
