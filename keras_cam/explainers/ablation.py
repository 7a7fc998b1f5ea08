"""Ablation-CAM (Desai & Ramaswamy 2020): each channel weighed by the drop of the class score without it,
on the shared perturbation machinery (`perturbation.py`)."""
from __future__ import annotations

from typing import Any, Callable, List

import keras
import numpy as np

from keras_cam import capture
from keras_cam._batching import chunk_size, run_batched, signature, to_tensors
from keras_cam.explainers.perturbation import ChannelPerturbationCAM, top_channels
from keras_cam.targets import callable_index

_EPS = 1e-7


class AblationCAM(ChannelPerturbationCAM):
    """Ablation-CAM: channel `k` weighs `(y_c - y_c^k) / |y_c|`, the relative drop of the class score `y_c`
    when channel `k` of the layer's output is set to zero; the map is `ReLU(sum_k w_k A_k)`.

    Gradient-free, like Score-CAM. The ablations run compiled, `batch_size` ablated rows (image, channel) per
    forward pass, over the images of the call together: each row feeds the layer's activations, captured once
    by a first pass, times a channel mask to the rest of the model (the layer's output is replaced through
    `capture.intercept`). The layers before the explained one are part of each traced pass but their results
    are unused, so TensorFlow's and XLA's compilers prune them: only the rest of the model runs per row.
    PyTorch runs eagerly and recomputes them for every row (its cost is the full forward per row).
    With class targets, "the predicted class" is the class predicted on the image itself, fixed by the first
    pass; callable targets score every ablated row with the callable.

    Differs from pytorch-grad-cam's `AblationCAM` in two ways: the drop is divided by `|y_c|`, not `y_c`
    (the same map when the score is positive, which is the case the paper has in mind; with a negative score,
    e.g. a logit of a class that is not predicted, dividing by `y_c` would flip every weight and show what
    *raises* the score); and `max_channels` keeps the channels with the largest mean absolute activation
    (pytorch-grad-cam's `ratio_channels_to_ablate` thresholds an eigen projection), as a zeroed channel can
    change the score only through what it held. Channels left out weigh 0, as there.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).
        max_channels: ablate only the `max_channels` channels of each image with the largest mean |activation|
            (the others weigh 0); None ablates every channel.
        batch_size: ablated rows per forward pass (default 32); `explain(batch_size=...)` overrides it.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    heatmaps = kc.AblationCAM(model, batch_size=8)(np.random.rand(2, 32, 32, 3))   # (2, 32, 32)
    ```
    """

    name = "ablationcam"
    aliases = ("ablation-cam",)

    def layer_weights(self, position, inputs, targets, native, acts, idx, scores, rows, target_rows=None):
        n, c = acts.shape[0], acts.shape[-1]
        chosen = [top_channels(np.abs(a).reshape(-1, c).mean(axis=0), self.max_channels) for a in acts]
        image_ids = np.concatenate([np.full(len(ch), i, np.int32) for i, ch in enumerate(chosen)])
        channels = np.concatenate(chosen).astype(np.int32)
        # One row per (image, channel); rows of every image share the chunks, so few compiled calls.
        rows = chunk_size(len(channels), rows, bucket=True)
        if target_rows is not None:  # per-image masks or boxes: each ablated row scored on its image's own
            index = target_rows
        else:
            index = callable_index(targets, n) if callable(targets) else idx.astype(np.int32)
        key = ("ablation", position, inputs.structure, signature(inputs.arrays, rows),
               signature([native], rows), np.shape(index)[1:], targets if callable(targets) else None)
        axis = self._channel_axis(native.ndim, position)
        ablate = self._compiled(key, lambda owner: self._ablation_graph(owner, inputs.structure, position,
                                                                        axis, targets))

        def call(ids, ks):
            return ablate(*to_tensors([index[ids], ks, native[ids]] + [a[ids] for a in inputs.arrays]))

        (ablated,) = run_batched(call, [image_ids, channels], rows)  # (rows,) or (rows, K)
        y = scores.astype(np.float64)[image_ids]
        drop = (y - ablated.astype(np.float64)) / np.maximum(np.abs(y), _EPS)
        weights = np.zeros((n,) + idx.shape[1:] + (c,), np.float32)
        if idx.ndim == 2:
            weights[image_ids, :, channels] = drop
        else:
            weights[image_ids, channels] = drop
        return weights

    @staticmethod
    def _ablation_graph(owner, structure, position: int, axis: int, targets: Any) -> Callable:
        """(index, channels (rows,), activations (rows, ...), *inputs (rows, ...)) -> the scores with each
        row's channel of the layer's output zeroed."""

        def ablated(index, channels, activations, *tensors):
            ops = keras.ops
            this = owner()
            c = activations.shape[axis]
            shape = [-1] + [1] * (len(activations.shape) - 1)
            shape[axis] = c
            mask = ops.reshape(1.0 - ops.one_hot(channels, c), shape)
            replaced = activations * ops.cast(mask, activations.dtype)
            layer = this.layer_refs[position].layer
            # The layer's own output is ignored (and what only fed it is pruned by the compiler).
            with this._logits_scope(), capture.intercept(layer, lambda out: ops.cast(replaced, out.dtype)):
                outputs = this.model(structure.pack(list(tensors)), training=False)
            return this._score_fn(targets, index)(outputs)[0]

        return ablated


__all__: List[str] = ["AblationCAM"]
