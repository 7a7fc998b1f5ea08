"""Principal components of a layer's feature vectors: EigenCAM (Muhammad & Yeasin 2020), EigenGradCAM and
KPCA-CAM. Each location's C-vector is a sample; the map is its projection on the first (kernel) principal
direction, computed per image, with the sign fixed as described in `EigenCAM`."""
from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam._validation import check_number
from keras_cam.explainers.base import BaseCAM
from keras_cam.explainers.maps import first_component, positions, signed_projection

_KERNELS = ("sigmoid", "rbf", "linear")


class PrincipalComponentCAM(BaseCAM):
    """Base of the methods whose map already is a principal component: `eigen_smooth` changes nothing."""

    def eigen_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return self.compute_cam(activations, grads, targets)


class EigenCAM(PrincipalComponentCAM):
    """Projection of each location's activation vector on the first principal direction (no gradients).

    The sign of a principal component is arbitrary; it is fixed so that the map correlates positively with
    the channel-summed activation, which makes the result deterministic across backends and runs.
    Targets only select which score is reported; the map itself does not depend on them.
    """

    name = "eigencam"
    aliases = ("eigen-cam",)
    needs_grads = False

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return first_component(activations)


class EigenGradCAM(PrincipalComponentCAM):
    """EigenGradCAM: EigenCAM of `A * dS/dA`, the first principal component of activations times gradients.

    Class-discriminative, unlike EigenCAM. The sign is fixed as EigenCAM's, against the channel sum of the
    (centred) products; pytorch-grad-cam's `EigenGradCAM` leaves the SVD's arbitrary sign.
    """

    name = "eigengradcam"
    aliases = ("eigen-grad-cam",)

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        return first_component(activations * grads)


class KPCACAM(PrincipalComponentCAM):
    """KPCA-CAM (Karmani et al. 2024): EigenCAM with kernel PCA, the first component of a non-linear kernel.

    Per image, the centred location vectors `x_i` (N, positions, C) give the kernel matrix
    `K_ij = k(x_i, x_j)`, double-centred; with its largest eigenvalue `l` and unit eigenvector `v`, the map
    is `sqrt(l) v` (the training-set projection of kernel PCA, as scikit-learn's
    `KernelPCA(n_components=1).fit_transform`).
    No gradients; targets only select the reported score.

    Kernels (`gamma=None` is `1 / C`, scikit-learn's default): `"sigmoid"` (default, as pytorch-grad-cam's
    `KPCA_CAM`): `tanh(gamma x.y + coef0)`; `"rbf"`: `exp(-gamma |x - y|^2)`; `"linear"`: `x.y` (= EigenCAM).
    The sign is fixed as EigenCAM's (scikit-learn flips each eigenvector so that its largest entry is
    positive), so maps are deterministic across backends. Cost: one positions x positions eigendecomposition
    per image (fine for a 14 x 14 or 8 x 8 x 8 layer; a 56 x 56 one is a 3136 x 3136 matrix).

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).
        kernel: "sigmoid", "rbf" or "linear".
        gamma: the kernel's scale (None: 1 / channels).
        coef0: the sigmoid kernel's offset (1, scikit-learn's default).
    """

    name = "kpcacam"
    aliases = ("kpca-cam",)
    needs_grads = False

    def __init__(self, model: keras.Model, layer: Any = None, *, kernel: str = "sigmoid",
                 gamma: Optional[float] = None, coef0: float = 1.0, **options: Any) -> None:
        super().__init__(model, layer, **options)
        if kernel not in _KERNELS:
            raise ValueError(f"`kernel` must be one of {', '.join(map(repr, _KERNELS))}, got {kernel!r}.")
        self.kernel = kernel
        self.gamma = None if gamma is None else check_number("gamma", gamma, 0.0, strict=True)
        self.coef0 = check_number("coef0", coef0, -np.inf)

    def compute_cam(self, activations: Any, grads: Any, targets: Any) -> Any:
        ops = keras.ops
        x = positions(activations)
        gamma = 1.0 / x.shape[-1] if self.gamma is None else self.gamma
        dots = ops.einsum("npc,nqc->npq", x, x)
        if self.kernel == "sigmoid":
            k = ops.tanh(gamma * dots + self.coef0)
        elif self.kernel == "rbf":
            sq = ops.sum(x * x, axis=-1)
            k = ops.exp(-gamma * ops.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * dots, 0.0))
        else:
            k = dots
        rows = ops.mean(k, axis=2, keepdims=True)
        k = k - rows - ops.transpose(rows, (0, 2, 1)) + ops.mean(rows, axis=1, keepdims=True)
        k = 0.5 * (k + ops.transpose(k, (0, 2, 1)))  # exactly symmetric for eigh
        values, vectors = seam.decompose(ops.eigh, k)  # ascending
        projection = vectors[:, :, -1] * ops.sqrt(ops.maximum(values[:, -1:], 0.0))
        return signed_projection(projection, x, activations.shape[1:-1])
