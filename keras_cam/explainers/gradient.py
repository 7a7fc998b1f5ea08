"""Gradient-weighted methods: each one only says how it weighs the captured channels."""
from __future__ import annotations

from typing import Any, Callable

import keras

from keras_cam._validation import check_int, check_number
from keras_cam.explainers.base import BaseCAM
from keras_cam.explainers.maps import spatial_axes
from keras_cam.targets import class_scores

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

    def weighted_activations(self, activations: Any, grads: Any, targets: Any) -> Any:
        return activations * grads

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.sum(self.weighted_activations(activations, grads, targets), axis=-1)


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

    def weighted_activations(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.relu(grads) * activations

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.sum(self.weighted_activations(activations, grads, targets), axis=-1)


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise: `L = ReLU(sum_k ReLU(A_k * dS/dA_k))`, the positive part of each product.

    Like HiResCAM, but a location only ever adds to the map: negative products are dropped before the sum over
    channels (HiResCAM lets them cancel positive ones). Where every product is positive the two are equal.
    As pytorch-grad-cam's `GradCAMElementWise`.
    """

    name = "gradcam-elementwise"
    aliases = ("grad-cam-elementwise",)

    def weighted_activations(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.relu(activations * grads)

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return keras.ops.sum(self.weighted_activations(activations, grads, targets), axis=-1)


def finer_scores(outputs: Any, index: Any, alpha: float, comparisons: int) -> Any:
    """Finer-CAM's score of class `index` against its `comparisons` most similar classes.

    The most similar classes of target `t` are those whose output is closest to `z_t` (`|z_j - z_t|`, `t`
    itself excluded); with softmax weights `p_j` of the outputs, the score is
    `sum_j p_j (z_t - alpha z_j) / (sum_j p_j + 1e-9)`. `outputs` (N, K), `index` (N,) or (N, T) resolved
    class indices; returns scores of the shape of `index`.
    """
    ops = keras.ops
    several = len(index.shape) == 2
    idx = index if several else ops.expand_dims(index, -1)  # (N, T)
    k = outputs.shape[-1]
    onehot = ops.one_hot(idx, k)  # (N, T, K)
    z = ops.expand_dims(outputs, 1) + ops.zeros_like(onehot)  # (N, T, K)
    zt = ops.take_along_axis(outputs, idx, axis=-1)  # (N, T)
    distance = ops.where(onehot > 0, -1.0, ops.abs(z - ops.expand_dims(zt, -1)))  # the target sorts first
    similar = ops.argsort(ops.stop_gradient(distance), axis=-1)[..., 1:1 + min(comparisons, k - 1)]
    p = ops.expand_dims(ops.softmax(outputs, axis=-1), 1) + ops.zeros_like(onehot)
    pj = ops.take_along_axis(p, similar, axis=-1)  # (N, T, m)
    zj = ops.take_along_axis(z, similar, axis=-1)
    scores = ops.sum(pj * (ops.expand_dims(zt, -1) - alpha * zj), axis=-1) / (ops.sum(pj, axis=-1) + 1e-9)
    return scores if several else scores[:, 0]


class FinerCAM(GradCAM):
    """Finer-CAM (Zhang et al. 2025): Grad-CAM of the target's score against its most similar classes.

    What is differentiated is not the target's logit `z_t` but `sum_j p_j (z_t - alpha z_j) / sum_j p_j` over
    the `comparisons` classes `j` whose outputs are closest to `z_t`, weighted by their softmax probability
    `p_j` (pytorch-grad-cam's `FinerWeightedTarget`, gradients through `p_j` included): the map shows what
    tells the class apart from its look-alikes rather than what makes it likely. `alpha = 0` is Grad-CAM.
    The scores returned by `compute` are these comparison scores.

    Differs from pytorch-grad-cam's `FinerCAM` in that the comparison classes are the `comparisons` most
    similar ones (its default `comparison_categories=[1, 2, 3]`), capped at K - 1 for models with fewer
    classes (where pytorch-grad-cam fails), and they are chosen for any class target, not only for
    `targets=None`; only Grad-CAM is the base method. Needs one (N, K >= 2) class output; callable targets
    are refused.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).
        alpha: how strongly the similar classes' outputs are subtracted (1 by default, as pytorch-grad-cam).
        comparisons: how many of the most similar classes the target is compared with (3 by default).
    """

    name = "finercam"
    aliases = ("finer-cam",)
    accepts_callable_targets = False

    def __init__(self, model: keras.Model, layer: Any = None, *, alpha: float = 1.0, comparisons: int = 3,
                 **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.alpha = check_number("alpha", alpha, 0.0)
        self.comparisons = check_int("comparisons", comparisons, 1)

    def _score_fn(self, targets: Any, index: Any) -> Callable:
        if callable(targets):
            return super()._score_fn(targets, index)  # refuses callables with the usual message
        alpha, comparisons = self.alpha, self.comparisons
        probabilities = not self.use_logits and bool(self._logit_layers)
        binary = self._binary_unit()

        def score_fn(outputs):
            single = not isinstance(outputs, (list, tuple, dict)) and len(outputs.shape) == 2
            if single and outputs.shape[-1] < 2:
                raise ValueError("FinerCAM compares the target class with its most similar classes and needs "
                                 "a classifier with one (N, K >= 2) output; this model has a single unit.")
            _, idx = class_scores(outputs, index, probabilities=probabilities, binary=binary)
            scores = finer_scores(keras.ops.cast(outputs, "float32"), idx, alpha, comparisons)
            return scores, (scores, idx)

        return score_fn
