"""CAM (Zhou et al. 2016) from the weights of a CAMHead: M_c(x, y) = sum_k w_k^c f_k(x, y)."""
from __future__ import annotations

from typing import Any

import keras

from keras_cam import capture
from keras_cam.explainers.base import BaseCAM


class CAM(BaseCAM):
    """Class activation maps of a model with a `CAMHead`, from the head's dense weights (no gradients).

    The feature map `f` is the CAMHead's input; the map of class `c` is `sum_k w_k^c f_k(x, y)` (seed 001),
    then, as for every method here, ReLU, bilinear upsampling and min-max normalization. `layer` is ignored:
    the CAMHead is found anywhere in the model, nested models included.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              kc.CAMHead(3)])
    cams = kc.CAM(model)(np.random.rand(2, 32, 32, 3))   # (2, 32, 32) float32 in [0, 1]
    ```
    """

    name = "cam"
    needs_grads = False
    capture_on = "input"
    accepts_callable_targets = False

    def _find_layer(self, layer: capture.LayerSpec, sample: Any = None) -> capture.LayerRef:
        from keras_cam.layers import find_cam_head  # layers imports explainers lazily; avoid a cycle

        head = find_cam_head(self.model)
        return capture.find_layer(self.model, head, require_spatial=False)

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        kernel = keras.ops.cast(keras.ops.convert_to_tensor(self.layer.dense.kernel), "float32")  # (C, K)
        if kernel.shape[-1] == 1:  # one sigmoid unit: class 0 is the negated unit
            column = kernel[:, 0][None, :]
            return keras.ops.where(keras.ops.expand_dims(targets, -1) == 0, -column, column)
        return keras.ops.transpose(keras.ops.take(kernel, targets, axis=1))  # (N, C)
