"""The machinery shared by gradient-free methods whose channel weights come from more forward passes
(Score-CAM: the input masked by each channel; Ablation-CAM: the layer's output without each channel).

A first compiled pass gives each layer's activations, explained classes and scores; the method then weighs
channels (`layer_weights`), and the weighted sum of channels goes through the pipeline's ReLU, upsampling and
normalization (`BaseCAM._combine`).
"""
from __future__ import annotations

from typing import Any, List, Optional

import keras
import numpy as np

from keras_cam import capture, layout
from keras_cam._batching import DEFAULT_BATCH_SIZE, check_batch_size, chunk_size
from keras_cam._rows import RowsTarget
from keras_cam._validation import check_int
from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.explainers.maps import channels_last, first_component, weigh, weighted_sum
from keras_cam.targets import Targets


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
                      idx: np.ndarray, scores: np.ndarray, rows: int,
                      target_rows: Optional[np.ndarray] = None) -> np.ndarray:
        """Channel weights of layer `position` (see the class docstring); `target_rows` is the per-image data
        of a target that carries some (per-image masks, given boxes), for scoring each image's copies."""
        raise NotImplementedError

    def _compute(self, images: Any, targets: Targets, upsample: bool, normalize: bool,
                 batch_size: Optional[int], eigen_smooth: bool) -> Explanation:
        # Here `batch_size` is the number of perturbed rows per forward pass.
        rows = self.channel_batch if batch_size is None else check_batch_size(batch_size)
        inputs, resolved = self._prepare_call(images, targets)
        # Per-image masks or boxes of the target: the clean pass below takes them, the perturbed passes of
        # each image need them too.
        held = resolved.peek_rows() if isinstance(resolved, RowsTarget) else None
        *per_layer, idx, scores = self._run_batches(inputs, resolved, chunk_size(inputs.n, bucket=True),
                                                    False, False)
        count = len(self.layer_refs)
        maps = []
        for i, (native, acts) in enumerate(zip(per_layer[:count], per_layer[count:])):
            weights = self.layer_weights(i, inputs, resolved, native, acts, idx, scores, rows, held)
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


__all__: List[str] = ["ChannelPerturbationCAM", "top_channels"]
