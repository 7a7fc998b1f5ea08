"""Score-CAM (Wang et al. 2020): each channel weighed by the model's score on the input masked by it, on the
shared perturbation machinery (`perturbation.py`)."""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from keras_cam import layout
from keras_cam._batching import run_batched, signature, to_tensors
from keras_cam.explainers.maps import minmax
from keras_cam.explainers.perturbation import ChannelPerturbationCAM, top_channels


class ScoreCAM(ChannelPerturbationCAM):
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

    def layer_weights(self, position, inputs, targets, native, acts, idx, scores, rows, target_rows=None):
        """Softmax over the chosen channels of each image's target score(s) on the image masked by each;
        channels left out (Faster Score-CAM) weigh 0. (N, C), or (N, K, C) for K targets."""
        n, c = acts.shape[0], acts.shape[-1]
        size = self._input_size(inputs)
        weights = np.zeros((n,) + idx.shape[1:] + (c,), np.float32)
        for i in range(n):
            # Faster Score-CAM: the channels of largest spatial variance.
            chosen = top_channels(acts[i].reshape(-1, c).var(axis=0), self.max_channels)
            # Fewer channels than a chunk: smaller chunks rather than forward passes over padding.
            chunk = min(rows, len(chosen))
            # Each image's copies are scored on its own target: class indices, or its mask or boxes.
            target = idx[i].astype(np.int32) if target_rows is None else target_rows[i]
            key = ("masked", inputs.structure, signature(inputs.arrays, 1), chunk, acts.shape[1:-1],
                   targets if callable(targets) else np.shape(targets)[1:], np.shape(target), str(target.dtype))
            masked = self._compiled(key, lambda owner: self._masked_graph(
                owner, inputs.structure, size, self._input_layout.channels_first, targets))
            weights[i][..., chosen] = self._channel_weights(masked, inputs.rows(slice(i, i + 1)),
                                                            acts[i][..., chosen], target, chunk)
        return weights

    def _channel_weights(self, masked, image, a: np.ndarray, target: np.ndarray, chunk: int) -> np.ndarray:
        """Softmax over channels of the target score(s) on one image masked by each channel of `a`
        (*spatial, k): (k,), or (K, k) for K targets."""
        channels = np.ascontiguousarray(np.moveaxis(a, -1, 0))  # (k, *spatial)
        # The image goes in once; masks are built and applied inside the compiled function, per chunk.
        tensors = to_tensors(image.arrays)
        index = keras.ops.convert_to_tensor(np.broadcast_to(target, (chunk,) + np.shape(target)).copy())
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
