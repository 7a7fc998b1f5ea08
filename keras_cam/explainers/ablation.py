"""Ablation-CAM (Desai & Ramaswamy 2020): each channel weighed by the drop of the class score without it.

`ChannelPerturbationCAM` is the machinery shared by gradient-free methods whose channel weights come from more
forward passes (Score-CAM's could be written on it): a first compiled pass gives each layer's activations,
explained classes and scores; the method then weighs channels, and the weighted sum of channels goes through
the pipeline's ReLU, upsampling and normalization (`BaseCAM._combine`).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import keras
import numpy as np

from keras_cam import capture, layout
from keras_cam._batching import (DEFAULT_BATCH_SIZE, check_batch_size, chunk_size, run_batched, signature,
                                 to_tensors)
from keras_cam._validation import check_int
from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.explainers.maps import channels_last, first_component, weigh, weighted_sum
from keras_cam.targets import Targets, callable_index

_EPS = 1e-7


def top_channels(strength: np.ndarray, k: Optional[int]) -> np.ndarray:
    """The indices (sorted) of the `k` largest entries of a per-channel `strength` (C,), ties broken by
    channel order; every channel when `k` is None or >= C. (Score-CAM's `_channels` is this with the
    channels' spatial variance as strength.)"""
    c = strength.shape[-1]
    if k is None or k >= c:
        return np.arange(c)
    return np.sort(np.argsort(-strength, kind="stable")[:k])


class ChannelPerturbationCAM(BaseCAM):
    """Base of the gradient-free methods whose channel weights come from perturbed forward passes.

    `_compute` runs one compiled pass for each layer's activations (channels_last, and as the layer gave them,
    for passes that replace the layer's output), the explained classes and the scores; `layer_weights` turns
    one layer's activations into channel weights (N, C), or (N, K, C) for K targets per image; the maps are
    `ReLU(sum_k w_k A_k)`, finished by the pipeline. (No `name`: a base, not a method.)
    """

    needs_grads = False

    def __init__(self, model: keras.Model, layer: capture.LayerSpec = None, *,
                 max_channels: Optional[int] = None, batch_size: int = DEFAULT_BATCH_SIZE, **options: Any) -> None:
        super().__init__(model, layer, **options)
        self.max_channels = None if max_channels is None else check_int("max_channels", max_channels, 1)
        self.channel_batch = check_batch_size(batch_size)

    def layer_weights(self, position: int, inputs: Any, targets: Any, native: np.ndarray, acts: np.ndarray,
                      idx: np.ndarray, scores: np.ndarray, rows: int) -> np.ndarray:
        """Channel weights of layer `position` (see the class docstring)."""
        raise NotImplementedError

    def _compute(self, images: Any, targets: Targets, upsample: bool, normalize: bool,
                 batch_size: Optional[int], eigen_smooth: bool) -> Explanation:
        # Here `batch_size` is the number of perturbed rows per forward pass.
        rows = self.channel_batch if batch_size is None else check_batch_size(batch_size)
        inputs, resolved = self._prepare_call(images, targets)
        *per_layer, idx, scores = self._run_batches(inputs, resolved, chunk_size(inputs.n, bucket=True),
                                                    False, False)
        count = len(self.layer_refs)
        maps = []
        for i, (native, acts) in enumerate(zip(per_layer[:count], per_layer[count:])):
            weights = self.layer_weights(i, inputs, resolved, native, acts, idx, scores, rows)
            if idx.ndim == 2:  # one row per (image, target), as the base pipeline lays them out
                acts = np.repeat(acts, idx.shape[1], axis=0)
                weights = weights.reshape(-1, weights.shape[-1])
            acts, weights = keras.ops.convert_to_tensor(acts), keras.ops.convert_to_tensor(weights)
            maps.append(first_component(weigh(acts, weights)) if eigen_smooth
                        else weighted_sum(acts, weights))
        heatmaps = self._combine(maps, keras.ops.convert_to_tensor(idx), self._input_size(inputs), upsample,
                                 normalize)
        heatmaps = np.asarray(keras.ops.convert_to_numpy(heatmaps)).astype(np.float32)
        return Explanation(heatmaps, idx.astype(np.int64), scores.astype(np.float32))

    @staticmethod
    def _graph(owner, structure, size, targets, upsample, normalize, eigen=False):
        # The first pass returns each layer's activations as the layer gave them, then channels_last.
        def fn(index, *tensors):
            this = owner()
            with this._logits_scope(), capture.recording_all([r.layer for r in this.layer_refs]) as records:
                outputs = this.model(structure.pack(tensors), training=False)
            _, (scores, idx) = this._score_fn(targets, index)(outputs)
            native = []
            for ref, record in zip(this.layer_refs, records):
                if not record:
                    raise ValueError(f"Layer '{ref.path}' was not called when the model ran, so its output "
                                     "cannot be explained. Pass a layer that the model's forward pass uses.")
                native.append(record[-1])
            lasts = [channels_last(this.model, ref, a, None, this._input_layout.rank, this._call_size,
                                   this.reshape)[0] for ref, a in zip(this.layer_refs, native)]
            return (*native, *lasts, idx, scores)

        return fn

    def _channel_axis(self, native_rank: int, position: int) -> int:
        """Where the channels are in the layer's own output (tokens (N, L, D): the last axis)."""
        if native_rank == 3 and self._input_layout.rank == 2:
            return 2
        return layout.layer_layout(self.layer_refs[position], native_rank).channel_axis


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

    def layer_weights(self, position, inputs, targets, native, acts, idx, scores, rows):
        n, c = acts.shape[0], acts.shape[-1]
        chosen = [top_channels(np.abs(a).reshape(-1, c).mean(axis=0), self.max_channels) for a in acts]
        image_ids = np.concatenate([np.full(len(ch), i, np.int32) for i, ch in enumerate(chosen)])
        channels = np.concatenate(chosen).astype(np.int32)
        # One row per (image, channel); rows of every image share the chunks, so few compiled calls.
        rows = chunk_size(len(channels), rows, bucket=True)
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


__all__: List[str] = ["AblationCAM", "ChannelPerturbationCAM", "top_channels"]
