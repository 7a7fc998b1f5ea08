"""EigenCAM (Muhammad & Yeasin 2020): the first principal component of the activations, class-agnostic."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_cam.explainers.base import BaseCAM


class EigenCAM(BaseCAM):
    """Projection of each location's activation vector on the first principal direction (no gradients).

    The sign of a principal component is arbitrary; it is fixed so that the map correlates positively with
    the channel-summed activation, which makes the result deterministic across backends and runs.
    Targets only select which score is reported; the map itself does not depend on them.
    """

    name = "eigencam"
    aliases = ("eigen-cam",)
    needs_grads = False

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        ops = keras.ops
        spatial, c = tuple(activations.shape[1:-1]), activations.shape[-1]
        x = ops.reshape(activations, (-1, int(np.prod(spatial)), c))  # (N, positions, channels)
        x = x - ops.mean(x, axis=1, keepdims=True)
        _, _, vt = ops.svd(x, full_matrices=False)
        projection = ops.einsum("npc,nc->np", x, vt[:, 0, :])
        reference = ops.sum(x, axis=-1)
        sign = ops.where(ops.sum(projection * reference, axis=1, keepdims=True) < 0, -1.0, 1.0)
        return ops.reshape(projection * sign, (-1,) + spatial)
