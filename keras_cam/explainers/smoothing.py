"""`aug_smooth`: test-time augmentation of any explainer's maps (pytorch-grad-cam's `aug_smooth`).

The image and its horizontal flip, each at intensities x0.9, x1 and x1.1 (pytorch-grad-cam's ttach
`HorizontalFlip` and `Multiply(factors=[0.9, 1, 1.1])`), are explained; the maps of flipped copies are flipped
back and the six are averaged. The class each copy explains is the one explained on the image itself (with
`targets=None`, the image's predicted class, not each copy's). The five copies of every image go through
the explainer in one call.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import keras
import numpy as np

from keras_cam._inputs import ModelInputs
from keras_cam.explainers.maps import minmax
from keras_cam.targets import SegmentationTarget

#: Intensity factors of the copies besides the image itself (x1).
FACTORS = (0.9, 1.1)


def augmented(explainer: Any, images: Any, targets: Any, upsample: bool, normalize: bool,
              batch_size: Optional[int], eigen_smooth: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmaps, targets, scores) of `explainer.compute(images, targets, ...)` with `aug_smooth=True` (see
    the module docstring)."""
    inputs = explainer._prepare_inputs(images)
    n = inputs.n
    if hasattr(targets, "bind_model"):  # a detection target: boxes are not flipped with the images
        raise ValueError("aug_smooth flips the images, so the boxes of kc.targets.detection would no longer "
                         "match them; explain boxes without aug_smooth.")
    if isinstance(targets, SegmentationTarget) and targets.kind == "per_image":
        raise ValueError("aug_smooth flips the images, so per-image target masks would no longer match them; "
                         "pass one mask for every image, or explain without aug_smooth.")
    first = explainer._compute(inputs.user_structure(), targets, upsample, normalize, batch_size, eigen_smooth)
    if callable(targets) or np.any(first.targets < 0):
        same = targets  # scores of callables (or outputs without classes): the same callable on every copy
    else:
        same = np.concatenate([first.targets] * (2 * len(FACTORS) + 1))
    width = explainer._input_layout.spatial_axes[-1]
    image = inputs.image
    flipped = np.flip(image, axis=width)
    copies = [image * f for f in FACTORS] + [flipped] + [flipped * f for f in FACTORS]
    arrays: List[np.ndarray] = [np.concatenate(copies) if i == inputs.structure.image_index
                                else np.concatenate([a] * len(copies)) for i, a in enumerate(inputs.arrays)]
    rest = explainer._compute(ModelInputs(arrays, inputs.structure).user_structure(), same, upsample,
                              normalize, batch_size, eigen_smooth).heatmaps
    rest = rest.reshape((len(copies), n) + rest.shape[1:])
    flips = len(FACTORS)  # copies from here on are flipped: flip their maps back along the width axis
    maps = np.concatenate([first.heatmaps[None], rest[:flips], np.flip(rest[flips:], axis=-1)])
    mean = maps.mean(axis=0)
    if normalize:
        flat = mean.reshape((-1,) + mean.shape[-explainer._input_layout.rank:])  # (N or N * K, *spatial)
        mean = keras.ops.convert_to_numpy(minmax(keras.ops.convert_to_tensor(flat))).reshape(mean.shape)
    return mean.astype(np.float32), first.targets, first.scores
