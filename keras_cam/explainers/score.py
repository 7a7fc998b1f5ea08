"""Score-CAM (Wang et al. 2020): each channel weighed by the model's score on the input masked by it."""
from __future__ import annotations

from typing import Any, Callable, Optional

import keras
import numpy as np

from keras_cam._batching import (DEFAULT_BATCH_SIZE, check_batch_size, chunk_size, run_batched, signature,
                                 to_tensors)
from keras_cam import layout
from keras_cam.explainers.base import BaseCAM, Explanation
from keras_cam.explainers.maps import first_component, minmax, weigh, weighted_sum


class ScoreCAM(BaseCAM):
    """Score-CAM: gradient-free channel weights from masked forward passes.

    Channel `k` of the layer is upsampled (linear, bilinear or trilinear, to the input's spatial size) and
    min-max normalized into a mask `M_k`; the model scores
    `image * M_k` for the explained class; the map is `ReLU(sum_k softmax_k(score_k) A_k)`.
    The masked passes dominate the cost (one per channel and image); they run compiled, in chunks of
    `batch_size` masked images, so memory stays bounded whatever the channel count.

    Args:
        model, layer, use_logits, input_index, input_name, binary, reshape: as for every explainer (see
            `BaseCAM`).
        max_channels: Faster Score-CAM: only the `max_channels` channels with the largest activation
            variance (per image) are scored; None scores all channels.
        batch_size: masked images per forward pass (default 32); `explain(batch_size=...)` overrides it.

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    heatmaps = kc.ScoreCAM(model, batch_size=8)(np.random.rand(2, 32, 32, 3))   # (2, 32, 32)
    ```
    """

    name = "scorecam"
    aliases = ("score-cam",)
    needs_grads = False

    def __init__(
        self,
        model: keras.Model,
        layer=None,
        *,
        max_channels: Optional[int] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        **options: Any,
    ) -> None:
        super().__init__(model, layer, **options)
        if max_channels is not None and int(max_channels) < 1:
            raise ValueError(f"`max_channels` must be >= 1 or None, got {max_channels}.")
        self.max_channels = None if max_channels is None else int(max_channels)
        self.channel_batch = check_batch_size(batch_size)

    def _compute(self, images: Any, targets: Any, upsample: bool, normalize: bool, batch_size: Optional[int],
                 eigen_smooth: bool) -> Explanation:
        # Here `batch_size` is the number of masked images per forward pass.
        chunk = self.channel_batch if batch_size is None else check_batch_size(batch_size)
        inputs, resolved = self._prepare_call(images, targets)
        # First pass, compiled like every method's: each layer's activations, explained classes and scores.
        *acts_per_layer, idx, scores = self._run_batches(inputs, resolved, chunk_size(inputs.n, bucket=True),
                                                         False, False)
        size = self._input_size(inputs)
        several = idx.ndim == 2
        maps = []
        for acts in acts_per_layer:
            chosen = np.stack([a[..., self._channels(a)] for a in acts])  # (N, *spatial, k)
            # Fewer channels than a chunk: smaller chunks rather than forward passes over padding.
            rows = min(chunk, chosen.shape[-1])
            key = ("masked", inputs.structure, signature(inputs.arrays, 1), rows, chosen.shape[1:-1],
                   resolved if callable(resolved) else np.shape(resolved)[1:])
            masked = self._compiled(key, lambda owner: self._masked_graph(
                owner, inputs.structure, size, self._input_layout.channels_first, resolved))
            # (N, C) or (N, K, C): every target's weights come from the same masked passes.
            weights = np.stack([self._channel_weights(masked, inputs.rows(slice(i, i + 1)), chosen[i], idx[i],
                                                      rows) for i in range(inputs.n)])
            if several:  # one row per (image, target), as the base pipeline lays them out
                chosen = np.repeat(chosen, idx.shape[1], axis=0)
                weights = weights.reshape(-1, weights.shape[-1])
            chosen, weights = keras.ops.convert_to_tensor(chosen), keras.ops.convert_to_tensor(weights)
            maps.append(first_component(weigh(chosen, weights)) if eigen_smooth else weighted_sum(chosen, weights))
        heatmaps = self._combine(maps, keras.ops.convert_to_tensor(idx), size, upsample, normalize)
        heatmaps = np.asarray(keras.ops.convert_to_numpy(heatmaps)).astype(np.float32)
        return Explanation(heatmaps, idx.astype(np.int64), scores.astype(np.float32))

    @staticmethod
    def _graph(owner, structure, size, targets, upsample, normalize, eigen=False):
        # The first pass returns each layer's raw activations instead of a map.
        def fn(index, *tensors):
            this = owner()
            activations, _, _, (scores, idx) = this._activations(structure.pack(tensors),
                                                                 this._score_fn(targets, index))
            return (*activations, idx, scores)

        return fn

    def _channels(self, a: np.ndarray) -> np.ndarray:
        """All channels, or the `max_channels` of largest spatial variance (Faster Score-CAM)."""
        c = a.shape[-1]
        if self.max_channels is None or self.max_channels >= c:
            return np.arange(c)
        variance = a.reshape(-1, c).var(axis=0)
        return np.sort(np.argsort(-variance, kind="stable")[: self.max_channels])

    def _channel_weights(self, masked, image, a: np.ndarray, target: np.ndarray, chunk: int) -> np.ndarray:
        """Softmax over channels of the target score(s) on one image masked by each channel of `a`
        (*spatial, k): (k,), or (K, k) for K targets."""
        channels = np.ascontiguousarray(np.moveaxis(a, -1, 0))  # (k, *spatial)
        # The image goes in once; masks are built and applied inside the compiled function, per chunk.
        tensors = to_tensors(image.arrays)
        index = keras.ops.convert_to_tensor(np.broadcast_to(np.asarray(target, np.int32),
                                                            (chunk,) + np.shape(target)).copy())
        (scores,) = run_batched(lambda part: masked(index, keras.ops.convert_to_tensor(part), *tensors),
                                [channels], chunk)
        s = scores.astype(np.float64).T if scores.ndim == 2 else scores.astype(np.float64)  # (K, k) or (k,)
        w = np.exp(s - s.max(axis=-1, keepdims=True))
        return (w / w.sum(axis=-1, keepdims=True)).astype(np.float32)

    @staticmethod
    def _masked_graph(owner, structure, size, channels_first: bool, targets) -> Callable:
        """(index, channels (chunk, *spatial), *one input's arrays) -> scores of the input masked by each."""

        def masked(index, channels, *tensors):
            ops = keras.ops
            this = owner()
            masks = minmax(layout.resize(channels, size))  # (chunk, *SIZE) in [0, 1]
            masks = ops.expand_dims(masks, 1 if channels_first else -1)  # broadcast over the input's channels
            # The chunk's own rows: on several devices each gets part of the channels, and the whole image.
            batch = [ops.repeat(t, channels.shape[0], axis=0) for t in tensors]
            image = batch[structure.image_index]
            batch[structure.image_index] = image * ops.cast(masks, image.dtype)
            with this._logits_scope():
                outputs = this.model(structure.pack(batch), training=False)
            return this._score_fn(targets, index)(outputs)[0]

        return masked
