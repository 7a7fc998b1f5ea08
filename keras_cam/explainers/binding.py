"""What an explainer learns about its model: the explained layers and their layouts, the logit layers, the
size of the output and of the input, found when the explainer is built or, where that needs a sample (a
subclassed model, a layer inside a layer), from the first call's input (docs/architecture.md, "Layouts").

`ModelBinding` is a mixin of `BaseCAM`, which sets the attributes it reads (`model`, `_layer_spec`,
`layer_refs`, `data_format`, `binary`, `use_logits`, `input_index`, `input_name`, `_seam` and the `None`s
filled in here); it also says why every map of a call is zero, which depends on the model's layers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Tuple

import keras
import numpy as np

from keras_cam import capture, layout
from keras_cam._inputs import ModelInputs, prepare_inputs
from keras_cam.capture.tokens import auto_token_layer


class ModelBinding:
    """The model-facing half of `BaseCAM`: layers, layouts and output kind, resolved once per explainer."""

    def _resolve_on_first_call(self, inputs: ModelInputs) -> None:
        """Finds what needs a sample input: the auto layer, the logit layers and the output size of
        subclassed models."""
        if self.layer_refs is not None and self._logit_layers is not None and self._input_layout is not None:
            return
        self._seam.check_model(self.model)
        tensors = [keras.ops.convert_to_tensor(a[:1]) for a in inputs.arrays]
        sample = inputs.pack(tensors)
        if self.layer_refs is None:
            self.layer_refs = [self._find_layer(spec, sample) for spec in self._layer_spec]
        if self._logit_layers is None:  # also without use_logits: tells whether outputs are probabilities
            self._logit_layers = capture.logit_layers(self.model, sample)
        if self._output_units is None:
            self._output_units = capture.output_units(self.model, sample)
        if self._input_layout is None:
            self._input_layout = capture.input_layout(self.model, inputs.image.ndim)
            self._probe_layouts(sample, tensors[inputs.structure.image_index])
    def _find_layer(self, layer: capture.LayerSpec, sample: Any = None) -> capture.LayerRef:
        return self._with_data_format(capture.find_layer(self.model, layer, sample=sample))

    def _with_data_format(self, ref: capture.LayerRef) -> capture.LayerRef:
        """`ref` laid out as `data_format=` says; refused where the layer's own `data_format` contradicts it."""
        if self.data_format is None:
            return ref
        own = layout.data_format(ref.layer)
        if own is not None and own != self.data_format:
            raise ValueError(
                f"Layer '{ref.path}' has data_format='{own}' of its own; data_format='{self.data_format}' "
                "contradicts it. Leave data_format=None for layers that have their own.")
        return dataclasses.replace(ref, channels_first=self.data_format == "channels_first")

    def _probe_layouts(self, sample: Any, image: Any) -> None:
        """Layouts that the graph does not give (subclassed models, layers inside layers), traced from the
        first call's sample."""
        unknown = [r for r in self.layer_refs if r.channels_first is None and layout.data_format(r.layer) is None]
        if not unknown or self.data_format is not None:
            return
        traced, calls = capture.probe_layouts(self.model, sample, self._input_layout.channels_first, image=image)
        self.layer_refs = [dataclasses.replace(r, channels_first=traced.get(id(r.layer)))
                           if r in unknown and traced.get(id(r.layer)) is not None else r for r in self.layer_refs]
        shapes = {id(ref.layer): shape for ref, shape in calls}
        for ref in self.layer_refs:  # still unknown for a feature map: ask now, not from inside a traced call
            shape = shapes.get(id(ref.layer))
            if shape is not None and len(shape) == self._input_layout.rank + 2:
                layout.layer_layout(ref, len(shape))

    def _prepare_inputs(self, images: Any) -> ModelInputs:
        return prepare_inputs(self.model, images, self.input_index, self.input_name)

    def _input_size(self, inputs: ModelInputs) -> Tuple[int, ...]:
        """The spatial size of the explained input (what maps are upsampled to)."""
        return tuple(int(d) for d in self._input_layout.spatial_shape(inputs.image.shape))

    def _binary_unit(self) -> bool:
        """Whether a single output unit is a binary classifier (else a regression output)."""
        return self.binary if self.binary is not None else bool(self._logit_layers)

    def _logits_scope(self) -> Any:
        """The model patched to output logits for the call when `use_logits` (else nothing)."""
        if not self.use_logits:
            return contextlib.nullcontext()
        return capture.logits(self.model, self._logit_layers)

    def _check_zero_maps(self, maps: np.ndarray) -> None:
        """Warns when every map of a call is zero: nothing to look at, and never silently. In a vision
        transformer whose head reads the class token only, a block's output after the last attention gets no
        gradient on its patch tokens (the warning names the layer to use); elsewhere no position has positive
        evidence for the explained classes (often an untrained model)."""
        if not maps.size or maps.any():
            return
        layers = ", ".join(repr(r.path) for r in (self.layer_refs or []))
        token = auto_token_layer(capture.iter_layers(self.model))
        if token is not None and token.path not in {r.path for r in self.layer_refs or []}:
            warnings.warn(
                f"Every map of layer(s) {layers} is zero: in a vision transformer whose head reads the class token "
                f"only, the patch tokens after the last attention get no gradient. Explain layer='{token.path}' "
                "(the automatic choice) instead.", stacklevel=3)
        else:
            warnings.warn(
                f"Every map of this call is zero ({type(self).__name__}{' at ' + layers if layers else ''}): no "
                "position has positive evidence for the explained classes (common with random or untrained "
                "weights). Try another layer or method, or explain(..., normalize=False) to see the raw values.",
                stacklevel=3)
