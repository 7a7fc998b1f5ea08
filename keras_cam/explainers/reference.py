"""RandomCAM: random channel weights, the reference a method's map must beat."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_cam._validation import check_int
from keras_cam.explainers.base import BaseCAM


class RandomCAM(BaseCAM):
    """RandomCAM: `L = ReLU(sum_k w_k A_k)` with weights `w_k` uniform in [-1, 1] (no gradients).

    A sanity reference: a map with the layer's spatial structure but no information about the class. The
    weights are drawn by numpy from `seed` (one vector of C weights per layer, shared by every image and
    target), so a seed gives the same maps on every backend, batch size and call, and another seed other
    maps. pytorch-grad-cam's `RandomCAM` draws fresh weights per image at every call (not reproducible).
    Where every weight of the channels that fire is negative the map is all zero.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).
        seed: the seed of the weights (an integer >= 0).
    """

    name = "randomcam"
    aliases = ("random-cam",)
    needs_grads = False

    def __init__(self, model: keras.Model, layer: Any = None, *, seed: int = 0, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.seed = check_int("seed", seed, 0)

    def channel_weights(self, channels: int) -> np.ndarray:
        """The float32 (C,) weights this explainer uses on a layer with `channels` channels."""
        return np.random.default_rng(self.seed).uniform(-1.0, 1.0, channels).astype(np.float32)

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        ops = keras.ops
        weights = ops.convert_to_tensor(self.channel_weights(int(activations.shape[-1])))
        return ops.ones_like(activations[(slice(None),) + (0,) * (len(activations.shape) - 2)]) * weights
