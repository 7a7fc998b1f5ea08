"""Gradient-weighted methods: each one only says how it weighs the captured channels."""
from __future__ import annotations

from typing import Any

import keras

from keras_cam.explainers.base import BaseCAM
from keras_cam.explainers.maps import spatial_axes

_EPS = 1e-7


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al. 2017): channel weight = mean gradient over the map.

    `L = ReLU(sum_k a_k A_k)` with `a_k = mean_xy dS/dA_k(x, y)` (the mean over every spatial axis).
    """

    name = "gradcam"
    aliases = ("grad-cam",)

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.mean(grads, axis=spatial_axes(grads))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhyay et al. 2018): higher-order weights that favour several instances.

    `a_k = sum_xy relu(g) * g^2 / (2 g^2 + sum_ab A_k(a, b) g^3)` with `g = dS/dA_k(x, y)`.
    """

    name = "gradcam++"
    aliases = ("gradcamplusplus", "gradcampp", "grad-cam++")

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        ops = keras.ops
        g2 = grads * grads
        g3 = g2 * grads
        axes = spatial_axes(grads)
        sum_a = ops.sum(activations, axis=axes, keepdims=True)
        denom = 2.0 * g2 + sum_a * g3
        alpha = ops.where(grads != 0, g2 / ops.where(ops.abs(denom) > _EPS, denom, _EPS), 0.0)
        return ops.sum(alpha * ops.relu(grads), axis=axes)


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin 2020): element-wise gradient x activation, summed over channels.

    Faithful to the model for any architecture ending in GAP + Dense (there it equals Grad-CAM).
    """

    name = "hirescam"
    aliases = ("hires-cam",)

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.sum(activations * grads, axis=-1)


class XGradCAM(BaseCAM):
    """XGrad-CAM (Fu et al. 2020): gradients weighted by normalized activations.

    `a_k = sum_xy A_k(x, y) dS/dA_k(x, y) / sum_xy A_k(x, y)`.
    """

    name = "xgradcam"
    aliases = ("xgrad-cam",)

    def get_cam_weights(self, activations: Any, grads: Any, targets: Any) -> Any:
        ops = keras.ops
        axes = spatial_axes(grads)
        return ops.sum(activations * grads, axis=axes) / (ops.sum(activations, axis=axes) + _EPS)


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al. 2021): positive gradients weigh each location; works on shallow layers too."""

    name = "layercam"
    aliases = ("layer-cam",)

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.sum(keras.ops.relu(grads) * activations, axis=-1)
