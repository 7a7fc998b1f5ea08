"""Score-CAM (Wang et al. 2020): each channel weighed by the model's score on the input masked by it."""
from __future__ import annotations

from typing import Any, Optional

import keras
import numpy as np

from keras_cam._validation import to_numpy
from keras_cam.explainers.base import BaseCAM, Explanation, minmax
from keras_cam.targets import resolve_targets

DEFAULT_CHANNEL_BATCH = 32


class ScoreCAM(BaseCAM):
    """Score-CAM: gradient-free channel weights from masked forward passes.

    Channel `k` of the layer is upsampled and min-max normalized into a mask `M_k`; the model scores
    `image * M_k` for the explained class; the map is `ReLU(sum_k softmax_k(score_k) A_k)`.
    The masked passes dominate the cost (one per channel and image); they run compiled, in chunks of
    `batch_size` masked images, so memory stays bounded whatever the channel count.

    Args:
        model, layer, use_logits, input_index, input_name: as for every explainer (see `BaseCAM`).
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
        use_logits: bool = True,
        input_index: Optional[int] = None,
        input_name: Optional[str] = None,
        max_channels: Optional[int] = None,
        batch_size: int = DEFAULT_CHANNEL_BATCH,
    ) -> None:
        super().__init__(model, layer, use_logits, input_index, input_name)
        if max_channels is not None and int(max_channels) < 1:
            raise ValueError(f"`max_channels` must be >= 1 or None, got {max_channels}.")
        self.max_channels = None if max_channels is None else int(max_channels)
        self.channel_batch = self._batch_size(batch_size, 1 << 30)

    def compute(self, images: Any, targets=None, upsample: bool = True, normalize: bool = True,
                batch_size: Optional[int] = None) -> Explanation:
        """See `BaseCAM.explain`; here `batch_size` is the number of masked images per forward pass."""
        chunk = self.channel_batch if batch_size is None else self._batch_size(batch_size, 1 << 30)
        inputs = self._prepare_inputs(images)
        resolved = resolve_targets(targets, inputs.n, self._num_classes())
        self._resolve_on_first_call(inputs)
        # First pass, compiled like every method's: activations, explained classes and their scores.
        acts, idx, scores = self._run_batches(inputs, resolved, self._batch_size(None, inputs.n), False, False)
        size = tuple(inputs.image.shape[1:3])
        masked = self._masked_fn(inputs, chunk, resolved)
        maps = []
        for i in range(inputs.n):
            chosen = self._channels(acts[i])
            weights = self._channel_weights(masked, inputs, i, acts[i][..., chosen], idx[i], chunk, size)
            cam = keras.ops.einsum("nhwc,c->nhw", keras.ops.convert_to_tensor(acts[i : i + 1][..., chosen]),
                                   keras.ops.convert_to_tensor(weights))
            maps.append(to_numpy(keras.ops.convert_to_numpy(self._postprocess(cam, size, upsample, normalize))))
        return Explanation(np.concatenate(maps).astype(np.float32), idx.astype(np.int64),
                           scores.astype(np.float32))

    def _graph(self, inputs, targets, upsample, normalize):
        # The first pass returns the raw activations instead of a map.
        def fn(index, *tensors):
            score_fn = self._score_fn(targets, index)
            activations, _, _, (scores, idx) = self._activations(inputs.pack(tensors), score_fn)
            return activations, idx, scores

        return fn

    def _channels(self, a: np.ndarray) -> np.ndarray:
        """All channels, or the `max_channels` of largest spatial variance (Faster Score-CAM)."""
        c = a.shape[-1]
        if self.max_channels is None or self.max_channels >= c:
            return np.arange(c)
        variance = a.reshape(-1, c).var(axis=0)
        return np.sort(np.argsort(-variance, kind="stable")[: self.max_channels])

    def _channel_weights(self, masked, inputs, i: int, a: np.ndarray, target: int, chunk: int, size) -> np.ndarray:
        """Softmax over channels of the target's score on the image masked by each channel."""
        masks = _channel_masks(a, size)  # (k, H, W)
        k = masks.shape[0]
        base = [np.repeat(arr[i : i + 1], chunk, axis=0) for arr in inputs.arrays]
        index = keras.ops.convert_to_tensor(np.full((chunk,), target, np.int32))
        scores = []
        for start in range(0, k, chunk):
            m = masks[start : start + chunk]
            count = m.shape[0]
            if count < chunk:  # pad with empty masks: one compiled signature for every chunk
                m = np.concatenate([m, np.zeros((chunk - count,) + m.shape[1:], m.dtype)])
            batch = list(base)
            batch[inputs.image_index] = base[inputs.image_index] * m[..., None]
            out = masked(index, *[keras.ops.convert_to_tensor(b) for b in batch])
            scores.append(to_numpy(keras.ops.convert_to_numpy(out))[:count])
        s = np.concatenate(scores).astype(np.float64)
        w = np.exp(s - s.max())
        return (w / w.sum()).astype(np.float32)

    def _masked_fn(self, inputs, chunk: int, targets):
        key = ("masked", chunk, tuple(a.shape[1:] for a in inputs.arrays), targets if callable(targets) else None)
        if key not in self._fns:

            def masked(index, *tensors):
                with self._logits_scope():
                    outputs = self.model(inputs.pack(tensors), training=False)
                return self._score_fn(targets, index)(outputs)[0]

            self._fns[key] = self._seam.compile(masked, self.model)
        return self._fns[key]


def _channel_masks(a: np.ndarray, size) -> np.ndarray:
    """(h, w, k) activations -> (k, H, W) masks in [0, 1]: bilinear upsampling, per-channel min-max."""
    maps = keras.ops.convert_to_tensor(np.ascontiguousarray(np.transpose(a, (2, 0, 1))[..., None]))
    up = keras.ops.image.resize(maps, size, interpolation="bilinear", antialias=False)[..., 0]
    return to_numpy(keras.ops.convert_to_numpy(minmax(up))).astype(np.float32)
