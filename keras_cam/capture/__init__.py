"""Finding a layer in any Keras 3 model and capturing its output by intercepting its call.

Peers build `keras.Model(model.inputs, [layer.output, model.output])`, which fails on nested backbones,
Sequential models and subclassed models. Here the target layer's `call` is wrapped for the duration of one
model call instead (docs/architecture.md, "Call interception"): the wrapper hands the layer's output to a
`transform` (which records it and, for gradients, makes it a differentiation point) and returns what the
transform returns. The wrapper is an instance attribute shadowing the class method, installed and removed in
`try/finally`, so the model is exactly what the user gave after any call, also one that raised.

This package is the only place that reads Keras private attributes (`_functional`, `_inputs`, `_outputs`,
`_keras_history`, `_flatten_layers`, `_build_shapes_dict`); everything else asks it.
"""
from keras_cam.capture.find import (LayerSpec, find_layer, is_spatial_output, spatial_layers,
                                    spatial_rank)
from keras_cam.capture.graph import (LayerRef, graph_tensors, input_layout, input_shape, iter_layers,
                                     logit_layers, logits, output_layers, output_names, output_units,
                                     static_output_shape, sublayers, walk_layers)
from keras_cam.capture.layouts import graph_layouts, probe_layouts
from keras_cam.capture.hooks import CaptureError, forward_to, intercept, intercept_all, recording, recording_all

__all__ = ["CaptureError", "LayerRef", "LayerSpec", "find_layer", "forward_to", "graph_tensors",
           "graph_layouts", "input_layout", "input_shape", "probe_layouts", "intercept", "intercept_all", "is_spatial_output", "iter_layers",
           "logit_layers", "logits", "output_layers", "output_names", "output_units", "recording",
           "recording_all", "spatial_layers", "spatial_rank", "static_output_shape", "sublayers",
           "walk_layers"]
