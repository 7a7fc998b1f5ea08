"""A layer's activations for a batch of images, computed up to that layer only.

The layer is intercepted during one compiled call (`capture.forward_to`) and the layers behind it never run,
so layers inside nested and subclassed models work and the cost is the truncated forward pass. Pictures of
the maps come from `keras_cam.visualize.feature_map_grid`.
"""
from __future__ import annotations

import dataclasses

import weakref
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam import capture, layout
from keras_cam._batching import CACHE, chunk_size, run_batched, signature
from keras_cam._inputs import image_input_shape
from keras_cam._validation import as_image_batch

__all__ = ["FeatureMapExtractor", "feature_maps"]


class FeatureMapExtractor:
    """A layer's output for a batch of inputs, captured by interception and compiled once per input shape.

    Works on images, signals and volumes, channels last or first; maps come back channels_last.

    Args:
        model: any Keras 3 model with one image (or signal, or volume) input.
        layer: a name, an `"outer/inner"` path, a `keras.layers.Layer` of the model, or `None` for the last
            spatial layer. Its output must be a feature map: (N, H, W, C), (N, T, C), (N, D, H, W, C), or
            channels first.
        data_format: `"channels_first"` or `"channels_last"` for a layer without a `data_format` of its own
            whose layout cannot be traced from the model; `None` (default): traced (see `kc.GradCAM`).

    Example:

    ```python
    extractor = FeatureMapExtractor(model, "conv1")
    maps = extractor(images)   # float32 (N, H, W, C)
    ```
    """

    def __init__(self, model: keras.Model, layer: capture.LayerSpec = None,
                 data_format: Optional[str] = None) -> None:
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
        self.layer_ref = capture.find_layer(model, layer, require_spatial=False)
        self.data_format = layout.check_data_format(data_format)
        if self.data_format is not None:
            own = layout.data_format(self.layer_ref.layer)
            if own is not None and own != self.data_format:
                raise ValueError(f"Layer '{self.layer_ref.path}' has data_format='{own}' of its own; "
                                 f"data_format='{self.data_format}' contradicts it.")
            self.layer_ref = dataclasses.replace(self.layer_ref,
                                                 channels_first=self.data_format == "channels_first")
        self.model = model
        self.input_shape = image_input_shape(model, (1, 2, 3))
        shape = capture.static_output_shape(self.layer_ref.layer)
        if shape is not None and not 3 <= len(shape) <= 5:
            raise self._not_spatial(shape)
        self._seam = seam.get()

    def check_inputs(self, images: Any) -> np.ndarray:
        """A validated float32 copy of `images`; `ValueError` if they do not fit the model."""
        first = self.input_shape is not None and capture.input_layout(self.model, len(self.input_shape) + 1)
        return as_image_batch(images, self.input_shape, channels_first=bool(first and first.channels_first))

    def __call__(self, images: Any, batch_size: Optional[int] = None) -> np.ndarray:
        """float32 activations of the layer for `images` (as the model expects them), channels last:
        (N, h, w, C), (N, t, C) or (N, d, h, w, C)."""
        images = self.check_inputs(images)
        self._seam.check_model(self.model)
        rows = chunk_size(len(images), batch_size, even=True, bucket=True)
        key = ("feature_maps", self.layer_ref.path, signature([images], rows))
        fn = CACHE.get(self.model, key, self._compile)
        (maps,) = run_batched(lambda chunk: fn(keras.ops.convert_to_tensor(chunk)), [images], rows)
        if not 3 <= maps.ndim <= 5:
            raise self._not_spatial(maps.shape)
        found = layout.layer_layout(self._traced_ref(images), maps.ndim)
        return np.moveaxis(maps, 1, -1).astype(np.float32) if found.channels_first else maps.astype(np.float32)

    def _traced_ref(self, images: np.ndarray) -> capture.LayerRef:
        """The layer with its layout, traced from one image when the graph does not say (subclassed models)."""
        ref = self.layer_ref
        if ref.channels_first is None and layout.data_format(ref.layer) is None:
            traced, _ = capture.probe_layouts(self.model, keras.ops.convert_to_tensor(images[:1]))
            if traced.get(id(ref.layer)) is not None:
                self.layer_ref = ref = dataclasses.replace(ref, channels_first=traced[id(ref.layer)])
        return ref

    def _compile(self) -> Callable:
        # Shared by every extractor of this layer; the model is held weakly, as the shared cache requires.
        layer, model = self.layer_ref.layer, weakref.ref(self.model)

        def forward(x):
            return keras.ops.cast(capture.forward_to(model(), layer, x), "float32")

        return self._seam.compile(forward, self.model)

    def _not_spatial(self, shape: Sequence[Any]) -> ValueError:
        return ValueError(
            f"Layer '{self.layer_ref.path}' has output shape {tuple(shape)}; feature maps need a layer with a "
            "feature-map output such as (N, H, W, C) (or (N, T, C), (N, D, H, W, C), channels last or first). "
            "Pick a convolutional (or pooling, activation, ...) layer."
        )


def feature_maps(model: keras.Model, layer: capture.LayerSpec, images: Any,
                 batch_size: Optional[int] = None, data_format: Optional[str] = None) -> np.ndarray:
    """A layer's activations for a batch of images.

    Args:
        model: any Keras 3 model with one image input (layers inside nested models work).
        layer: a name, an `"outer/inner"` path, a `keras.layers.Layer` of the model, or `None` for the last
            spatial layer.
        images: (N, H, W, C) array as the model expects it. Not modified.
        batch_size: images per compiled call (default 32).
        data_format: how the layer's output is laid out, for a layer whose layout cannot be traced (see
            `FeatureMapExtractor`).

    Returns:
        float32 (N, h, w, C) (signals: (N, t, C); volumes: (N, d, h, w, C)): the layer's output, computed up
        to that layer only, channels last whatever the layer's layout.

    Example:

    ```python
    maps = kc.feature_maps(model, "conv1", images)   # (N, h, w, C)
    picture = kc.feature_map_grid(maps[0])           # one tile per channel
    ```
    """
    return FeatureMapExtractor(model, layer, data_format)(images, batch_size=batch_size)
