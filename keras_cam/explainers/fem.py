"""FEM, the Feature Explanation Method (Fuad et al. 2020): channels weighed by how often they peak."""
from __future__ import annotations

from typing import Any

import keras

from keras_cam._validation import check_number
from keras_cam.explainers.base import BaseCAM
from keras_cam.explainers.maps import spatial_axes


class FEM(BaseCAM):
    """FEM: a channel's weight is the share of its locations above its own `mean + k * std` (no gradients).

    Per image and channel, `mu_k` and `sigma_k` are the mean and (population) standard deviation of `A_k`
    over the map; `w_k = mean_xy [A_k(x, y) > mu_k + k sigma_k]` and `L = ReLU(sum_k w_k A_k)`: the channels
    with strong, rare peaks dominate (the k-sigma rule). A constant channel gets weight 0.
    As pytorch-grad-cam's `FEM` (K. A. A. Fuad et al., "Features understanding in 3D CNNs for actions
    recognition in video", IPTA 2020), which takes 2-D and 3-D maps; here 1-D signals too.
    Targets only select the reported score.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).
        k: how many standard deviations above the mean a location must be (2 by default).
    """

    name = "fem"
    needs_grads = False

    def __init__(self, model: keras.Model, layer: Any = None, *, k: float = 2.0, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.k = check_number("k", k, 0.0)

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        ops = keras.ops
        axes = spatial_axes(activations)
        threshold = (ops.mean(activations, axis=axes, keepdims=True)
                     + self.k * ops.std(activations, axis=axes, keepdims=True))
        return ops.mean(ops.cast(activations > threshold, "float32"), axis=axes)
