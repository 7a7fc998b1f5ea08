"""CAM (Zhou et al. 2016) from the weights of a CAMHead: M_c(x, y) = sum_k w_k^c f_k(x, y)."""
from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np

from keras_cam import capture
from keras_cam.explainers.base import BaseCAM
from keras_cam.layers import find_cam_head
from keras_cam.targets import Targets


class CAM(BaseCAM):
    """Class activation maps of a model with a `CAMHead`, from the head's dense weights (no gradients).

    The feature map `f` is the CAMHead's input; the map of class `c` is `sum_k w_k^c f_k(x, y)`, then, as
    for every method here, ReLU, bilinear upsampling and min-max normalization. `layer` is ignored: the
    CAMHead is found anywhere in the model, nested models included, and its class count bounds the targets.

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

    @property
    def num_classes(self) -> Optional[int]:
        return self.layer.num_classes  # column c of the head's kernel, whatever the model's outputs are

    def _find_layer(self, layer: capture.LayerSpec, sample: Any = None) -> capture.LayerRef:
        return capture.find_layer(self.model, find_cam_head(self.model), require_spatial=False)

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        kernel = keras.ops.cast(keras.ops.convert_to_tensor(self.layer.dense.kernel), "float32")  # (C, K)
        if kernel.shape[-1] == 1:  # one unit: binary (class 0 is the negated unit) or regression (index 0)
            column = kernel[:, 0][None, :]
            if not self._binary_unit():
                return keras.ops.zeros_like(keras.ops.cast(targets, "float32"))[:, None] + column
            return keras.ops.where(keras.ops.expand_dims(targets, -1) == 0, -column, column)
        return keras.ops.transpose(keras.ops.take(kernel, targets, axis=1))  # (N, C)


def class_activation_maps(model: keras.Model, images: Any, targets: Targets = None) -> np.ndarray:
    """Class activation maps (CAM, Zhou et al. 2016) of a model with a `CAMHead`.

    For class `c` the map is `M_c(x, y) = sum_k w_k^c f_k(x, y)`, where `f_k` is channel `k` of the
    feature map the `CAMHead` receives (its input) and `w_k^c = head.kernel[k, c]` the head's class
    weights; averaging `M_c` over `(x, y)` gives the class logit minus its bias. No gradients are needed.
    Each map is then passed through ReLU (only evidence *for* the class is kept), upsampled bilinearly to
    the input's height and width, and min-max normalized to `[0, 1]` per image (a constant map becomes 0).

    This is `kc.CAM(model).explain(images, targets)`; use `kc.CAM` directly to reuse its compiled function
    over many calls, or for the options of `explain` (`upsample`, `normalize`, `batch_size`).

    Args:
        model: a Keras model containing a `CAMHead` (nested models included), e.g. from `attach_cam_head`.
        images: float array `(N, H, W, C)`, preprocessed as the model expects. Not modified.
        targets: the class explained per image: `None` (the predicted class), an int (the same class for
            every image) or a sequence of `N` ints.

    Returns:
        float32 array `(N, H, W)` with values in `[0, 1]`.

    Example:

    >>> import keras, numpy as np, keras_cam as kc
    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    ...     kc.CAMHead(3),
    ... ])
    >>> cams = kc.class_activation_maps(model, np.random.rand(2, 32, 32, 3), targets=1)
    >>> cams.shape, str(cams.dtype)
    ((2, 32, 32), 'float32')
    """
    return CAM(model).explain(images, targets=targets)
