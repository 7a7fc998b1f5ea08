"""ShapleyCAM (Cai et al. 2024, "CAMs as Shapley Value-based Explainers"): Grad-CAM's weights with a
second-order correction, from the gradient and a Hessian-vector product at the layer's activations."""
from __future__ import annotations

from typing import Any, Callable

import keras

from keras_cam.explainers.gradient import GradCAM
from keras_cam.explainers.maps import channels_last


class ShapleyCAM(GradCAM):
    """ShapleyCAM: `w_k = mean_xy (g - H A / 2)_k`, the map `ReLU(sum_k w_k A_k)`.

    `g = dS/dA` is the gradient of the class score at the layer's activations `A` and `H A` the Hessian of
    the score with respect to `A` times `A` itself (one Hessian-vector product, `d (g . A) / dA` with `A`
    held constant): the second-order Taylor estimate of each activation's Shapley value, averaged over each
    channel's positions. Where the part of the model after the layer is linear, or piecewise linear as a
    ReLU network (`H = 0` almost everywhere), ShapleyCAM is Grad-CAM exactly; the correction acts through
    curved parts of the head, such as the softmax of `use_logits=False` (the paper scores probabilities, or
    its ReST target) or a sigmoid or attention block after the layer.

    One compiled call per chunk computes the activations, gradients and Hessian-vector products (the seam's
    `activation_hvp`: TensorFlow nested tapes, JAX forward-over-reverse, PyTorch `create_graph=True`); with
    K targets per image every target gets its own gradient and product.

    As pytorch-grad-cam's `ShapleyCAM` (`hvp = d grads / d activations` with the activations as
    `grad_outputs`, weights `mean(grads - 0.5 * hvp)`), except that scores are the logits by default, as
    for every explainer here (pytorch-grad-cam's `ClassifierOutputTarget` also reads the raw output, which
    is a probability only when the model ends in a softmax); pass `use_logits=False` to score the model's
    own softmax output. With several layers each layer's product is its own block `H_ll A_l`.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    heatmaps = kc.ShapleyCAM(model, use_logits=False)(np.random.rand(2, 32, 32, 3))   # (2, 32, 32)
    ```
    """

    name = "shapleycam"
    aliases = ("shapley-cam",)

    def _activations(self, model_inputs: Any, score_fn: Callable):
        # As `BaseCAM._activations`, with the gradient replaced by `g - H A / 2`: Grad-CAM's weights are then
        # ShapleyCAM's (and every other use of the gradient, e.g. eigen_smooth, sees the corrected one).
        layers = [ref.layer for ref in self.layer_refs]
        with self._logits_scope():
            acts, grads, hvps, outputs, aux = self._seam.activation_hvp(self.model, model_inputs, layers,
                                                                        score_fn)
        corrected = [keras.ops.cast(g, "float32") - 0.5 * keras.ops.cast(h, "float32")
                     for g, h in zip(grads, hvps)]
        pairs = [channels_last(self.model, ref, a, g, self._input_layout.rank, self._call_size, self.reshape)
                 for ref, a, g in zip(self.layer_refs, acts, corrected)]
        return [a for a, _ in pairs], [g for _, g in pairs], outputs, aux
