"""The user's inputs for one call: validated copies, which of them is the image, and the model's structure.

A model takes one array, a list or a dict of arrays. Compiled functions receive a flat list of tensors and
rebuild the structure with `InputStructure.pack`; the structure is small and hashable, so it can be part of
a compiled function's key without the function holding on to the user's arrays.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam import capture
from keras_cam._validation import as_image_batch, to_numpy


@dataclasses.dataclass(frozen=True)
class InputStructure:
    """How a flat list of tensors becomes the model's input: one tensor, a list, or a dict by `keys`."""

    image_index: int
    keys: Optional[Tuple[str, ...]]
    single: bool

    def pack(self, tensors: Sequence[Any]) -> Any:
        if self.single:
            return tensors[0]
        if self.keys is not None:
            return dict(zip(self.keys, tensors))
        return list(tensors)


@dataclasses.dataclass
class ModelInputs:
    """Validated float32 copies of the user's inputs (one array per model input) and their structure."""

    arrays: List[np.ndarray]
    structure: InputStructure

    @property
    def n(self) -> int:
        return self.arrays[0].shape[0]

    @property
    def image(self) -> np.ndarray:
        return self.arrays[self.structure.image_index]

    def pack(self, tensors: Sequence[Any]) -> Any:
        return self.structure.pack(tensors)

    def rows(self, index: Any) -> "ModelInputs":
        """The same inputs restricted to rows `index` (a slice or an index array)."""
        return ModelInputs([a[index] for a in self.arrays], self.structure)

    def user_structure(self) -> Any:
        """The arrays in the structure the user passed them (an array, a list or a dict)."""
        return self.pack(self.arrays)


def prepare_inputs(
    model: keras.layers.Layer,
    images: Any,
    input_index: Optional[int] = None,
    input_name: Optional[str] = None,
) -> ModelInputs:
    """Validates `images` for `model` (one array, or a list / dict with one array per model input).

    The image input is checked as an image batch against the model's input shape; the others are copied as
    they are. Nothing the user passed is modified.
    """
    model_inputs = capture.graph_tensors(model, "inputs")
    if len(model_inputs) == 1 and isinstance(images, (list, tuple)) and len(images) != 1:
        raise ValueError(
            f"Model '{model.name}' has one input, but `images` is a {type(images).__name__} of {len(images)} "
            "items: pass one array (N, H, W, C), e.g. np.stack(images) for a list of single images."
        )
    if len(model_inputs) == 1 and isinstance(images, (list, tuple)):
        images = images[0]  # one batch in a list: the model takes it as it is
    if len(model_inputs) <= 1 and not isinstance(images, (list, tuple, dict)):
        expected = tuple(model_inputs[0].shape[1:]) if model_inputs else None
        return ModelInputs([as_image_batch(images, expected, channels_first=_channels_first(model, expected))],
                           InputStructure(0, None, True))
    if not isinstance(images, (list, tuple, dict)):
        raise ValueError(
            f"Model '{model.name}' has {len(model_inputs)} inputs; pass `images` as a list (or dict by input "
            "name) with one array per input. The image input is found by rank (or set `input_index` / "
            "`input_name`)."
        )
    keys = list(images) if isinstance(images, dict) else None
    values = [images[k] for k in keys] if keys is not None else list(images)
    if model_inputs and len(values) != len(model_inputs):
        raise ValueError(f"Model '{model.name}' has {len(model_inputs)} inputs but {len(values)} arrays were "
                         "given.")
    image_index = _image_input_index(values, keys, model_inputs, input_index, input_name)
    arrays = []
    for i, v in enumerate(values):
        if i == image_index:
            expected = tuple(model_inputs[i].shape[1:]) if model_inputs else None
            arrays.append(as_image_batch(v, expected, channels_first=_channels_first(model, expected)))
        else:
            arrays.append(np.array(to_numpy(v), copy=True))
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(f"All inputs need the same batch size, got {[a.shape[0] for a in arrays]}.")
    single = len(values) == 1 and keys is None and not model_inputs
    return ModelInputs(arrays, InputStructure(image_index, None if keys is None else tuple(keys), single))


def _image_input_index(values: List[Any], keys: Optional[List[str]], model_inputs: list,
                       input_index: Optional[int], input_name: Optional[str]) -> int:
    names = [getattr(t, "name", "").split(":")[0] for t in model_inputs]
    if input_name is not None:
        if keys is not None and input_name in keys:
            return keys.index(input_name)
        if input_name in names:
            return names.index(input_name)
        raise ValueError(f"Input '{input_name}' not found; the model's inputs are {names or keys}.")
    if input_index is not None:
        if not 0 <= input_index < len(values):
            raise ValueError(f"`input_index` {input_index} is out of range for {len(values)} inputs.")
        return input_index
    spatial = [i for i, v in enumerate(values) if 3 <= np.ndim(to_numpy(v)) <= 5]
    if len(spatial) != 1:
        raise ValueError(
            f"Found {len(spatial)} inputs of rank 3 to 5 (signals, images or volumes); say which one is explained "
            "with `input_index` or `input_name`."
        )
    return spatial[0]


def _channels_first(model: keras.layers.Layer, expected: Optional[Tuple[Optional[int], ...]]) -> bool:
    """Whether the model's image input is channels_first (only names the axes in messages)."""
    return expected is not None and capture.input_layout(model, len(expected) + 1).channels_first


def image_input_shape(model: keras.layers.Layer, spatial_ranks: Sequence[int] = (2,)
                      ) -> Optional[Tuple[Optional[int], ...]]:
    """The shape (without the batch axis) of the model's single input, with None for free sizes; None when
    unknown. Raises when its number of spatial axes is not one of `spatial_ranks`."""
    shape = capture.input_shape(model)
    if shape is not None and len(shape) - 1 not in spatial_ranks:
        kinds = {1: "signals (N, T, C)", 2: "images (N, H, W, C)", 3: "volumes (N, D, H, W, C)"}
        raise ValueError(
            f"Model '{model.name}' takes inputs of shape {(None,) + shape}; this needs "
            f"{' or '.join(kinds[r] for r in spatial_ranks)} (or channels first)."
        )
    return shape


def image_input(model: keras.Model) -> Tuple[Tuple[int, int], int, bool]:
    """`(height, width)`, channels and channels-first of a model's fixed-size image input: what image
    files are resized and converted to (`explain_dataset`, the command line, the Ray integration)."""
    try:
        shape = capture.input_shape(model)
    except ValueError:  # several inputs
        shape = None
    layout = capture.input_layout(model, 4) if shape is not None and len(shape) == 3 else None
    hw = None if layout is None else layout.spatial_shape((1,) + tuple(shape))
    if hw is None or None in hw:
        takes = (None,) + tuple(shape) if shape else "other inputs"
        raise ValueError(f"Explaining image files needs a model with a fixed image input size; model "
                         f"'{model.name}' takes {takes}. "
                         "Read and resize the images yourself and pass them as arrays or batches.")
    channels = int(shape[0] if layout.channels_first else shape[-1])
    return (int(hw[0]), int(hw[1])), channels, layout.channels_first


def pictures_to_input(x: np.ndarray, channels: int, channels_first: bool,
                      preprocess: Optional[Callable]) -> Any:
    """(N, H, W, 3) RGB in [0, 1] -> the model's input: gray for one channel, its layout, `preprocess`."""
    x = x.mean(axis=-1, keepdims=True) if channels == 1 else x
    x = np.moveaxis(x, -1, 1) if channels_first else x
    return x if preprocess is None else keras.tree.map_structure(to_numpy, preprocess(x))
