"""`CAMHead` (global average pooling + dense in one layer) and `attach_cam_head`.

A model whose classifier is a `CAMHead` has class activation maps for free (Zhou et al. 2016; the maps are
computed by `keras_cam.explainers.cam`):
the score of class `c` is `S_c = sum_k w_k^c mean_{x,y} f_k(x, y) + b_c`, so the map
`M_c(x, y) = sum_k w_k^c f_k(x, y)` says how much each location contributes to it. The same holds for
signals (1 spatial axis) and volumes (3), channels last or first.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import keras
import numpy as np

from keras_cam import capture, layout
from keras_cam._validation import close_matches


@keras.saving.register_keras_serializable(package="keras_cam")
class CAMHead(keras.layers.Layer):
    """Global average pooling followed by a dense classifier, as one layer.

    `CAMHead(num_classes)` is equivalent to `GlobalAveragePooling1D/2D/3D()` +
    `Dense(num_classes, activation=activation)`, but keeps the two together so
    that `kc.class_activation_maps` (and `kc.CAM`) can find the feature map and the class weights
    `w_k^c = head.kernel[k, c]` of any model that contains one, nested models included.

    The output is always float32 (also under a `"mixed_float16"` policy, where the pooling and the dense
    product run in float16), as Keras recommends for the last layer of a mixed-precision model.

    Args:
        num_classes: number of classes (units of the dense layer), a positive int.
        activation: activation applied to the class scores: `"softmax"` (default), `"sigmoid"`, `None`
            (logits) or any name or callable accepted by `keras.activations.get`.
        kernel_initializer: initializer of the class weights `(C, num_classes)`.
        bias_initializer: initializer of the class biases.
        kernel_regularizer: optional regularizer of the class weights.
        bias_regularizer: optional regularizer of the class biases.
        data_format: `"channels_last"` or `"channels_first"`: where the input's channel axis is; `None`
            (default) takes `keras.config.image_data_format()`, as Keras' own layers do.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        The last feature map of a convolutional network, with 1, 2 or 3 spatial axes: 3D `(batch, steps,
        channels)`, 4D `(batch, height, width, channels)` or 5D `(batch, depth, height, width, channels)`
        (channels first: `(batch, channels, ...)`).

    Output shape:
        2D tensor `(batch_size, num_classes)`, float32.

    Example:

    >>> import keras, numpy as np, keras_cam as kc
    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    ...     kc.CAMHead(3),
    ... ])
    >>> tuple(model(np.zeros((2, 32, 32, 3))).shape)
    (2, 3)
    """

    def __init__(
        self,
        num_classes: int,
        activation: Any = "softmax",
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        data_format: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"`data_format` must be 'channels_last', 'channels_first' or None, got {data_format!r}.")
        self.data_format = data_format
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        # The explainers swap this attribute for `linear` during a call to score on logits; `call` must
        # read it from `self` every time.
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        # The activation is applied by the head itself (after the float32 cast), never by the dense layer.
        self.dense = keras.layers.Dense(
            self.num_classes,
            activation=None,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        if not 3 <= len(input_shape) <= 5:
            raise ValueError(
                f"CAMHead needs a spatial feature map with 1, 2 or 3 spatial axes (rank 3 to 5, e.g. (batch, "
                f"height, width, channels)), got input shape {input_shape}. Put CAMHead directly after the last "
                "convolutional block, before any Flatten or global pooling layer (it does the pooling itself)."
            )
        axis = self._layout(len(input_shape)).channel_axis
        if input_shape[axis] is None:
            raise ValueError(f"CAMHead needs a known number of channels (axis {axis}), got input shape "
                             f"{input_shape}.")
        self.dense.build((input_shape[0], input_shape[axis]))
        self.input_spec = keras.layers.InputSpec(ndim=len(input_shape), axes={axis: input_shape[axis]})
        self.built = True

    def _layout(self, rank: int) -> layout.Layout:
        return layout.Layout(rank - 2, self.data_format == "channels_first")

    @property
    def kernel(self) -> keras.Variable:
        """The class weights `w_k^c`, shape `(channels, num_classes)`."""
        return self.dense.kernel

    @property
    def bias(self) -> keras.Variable:
        """The class biases, shape `(num_classes,)`."""
        return self.dense.bias

    def call(self, inputs: Any) -> Any:
        pooled = keras.ops.mean(inputs, axis=self._layout(len(inputs.shape)).spatial_axes)
        # float32 before the activation: a float16 softmax/sigmoid saturates and loses precision.
        logits = keras.ops.cast(self.dense(pooled), "float32")
        return self.activation(logits)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.num_classes)

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "data_format": self.data_format,
            }
        )
        return config


# ----------------------------------------------------------------------------------------------------------


def _is_spatial(shape: Any, channels_first: bool) -> bool:
    """1 to 3 spatial axes, each > 1 (unknown sizes count as spatial), in the given layout."""
    return shape is not None and 3 <= len(shape) <= 5 and \
        layout.Layout(len(shape) - 2, channels_first).is_spatial(shape)


def _nested_owner(backbone: keras.Model, name: str) -> Optional[str]:
    """Path of the nested model inside `backbone` that holds a layer called `name`, if any."""
    for layer in backbone.layers:
        if isinstance(layer, keras.Model):
            if any(inner.name == name for inner in layer.layers):
                return layer.name
            deeper = _nested_owner(layer, name)
            if deeper is not None:
                return f"{layer.name}/{deeper}"
    return None


def _feature_output(backbone: keras.Model, feature_layer: Union[str, keras.layers.Layer]) -> Any:
    """The symbolic output of `feature_layer`, a top-level layer of the (Functional/Sequential) backbone."""
    if isinstance(feature_layer, keras.layers.Layer):
        if not any(layer is feature_layer for layer in backbone.layers):
            raise ValueError(
                f"`feature_layer` '{feature_layer.name}' is not a layer of backbone '{backbone.name}'. "
                "Pass one of `backbone.layers` or its name."
            )
        layer = feature_layer
    elif isinstance(feature_layer, str):
        names = [layer.name for layer in backbone.layers]
        if feature_layer not in names:
            owner = _nested_owner(backbone, feature_layer)
            if owner is not None:
                raise ValueError(
                    f"`feature_layer` '{feature_layer}' is inside the nested model '{owner}' of backbone "
                    f"'{backbone.name}'. Pass that model as the backbone, e.g. "
                    f"attach_cam_head(backbone.get_layer('{owner.split('/')[0]}'), ..., "
                    f"feature_layer='{feature_layer}')."
                )
            guesses = close_matches(feature_layer, names)
            hint = f" Did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else ""
            raise ValueError(
                f"`feature_layer` '{feature_layer}' not found in backbone '{backbone.name}'.{hint}"
            )
        layer = backbone.get_layer(feature_layer)
    else:
        raise ValueError(
            "`feature_layer` must be None, a layer name or a keras Layer, got "
            f"{type(feature_layer).__name__}."
        )
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"Could not read the output of `feature_layer` '{layer.name}' ({e}). Use a layer that is called "
            "once in the backbone."
        ) from None
    channels_first = _traced_format(backbone, layer)
    if not _is_spatial(getattr(output, "shape", None), bool(channels_first)):
        raise ValueError(
            f"`feature_layer` '{layer.name}' has output shape {getattr(output, 'shape', None)}, which is "
            "not a spatial feature map (1 to 3 spatial axes, each > 1). Pick a convolutional layer."
        )
    return output


def _named_layer(backbone: keras.Model, feature_layer: Union[str, keras.layers.Layer]) -> keras.layers.Layer:
    return backbone.get_layer(feature_layer) if isinstance(feature_layer, str) else feature_layer


def _traced_format(backbone: keras.Model, layer: keras.layers.Layer) -> bool:
    """Whether `layer`'s output is channels_first: its own `data_format`, else the layout of the data it
    receives, traced through the backbone's graph (a ReLU after a channels_first convolution)."""
    own = layout.data_format(layer)
    if own is not None:
        return own == "channels_first"
    traced = capture.graph_layouts(backbone).get(id(layer))
    if traced is None:
        raise ValueError(
            f"Where the channels of `feature_layer` '{layer.name}' are cannot be traced from backbone "
            f"'{backbone.name}' (it has no data_format of its own). Put kc.CAMHead(num_classes, "
            "data_format='channels_first' or 'channels_last') on its output yourself.")
    return traced


def attach_cam_head(
    backbone: keras.Model,
    num_classes: int,
    activation: Any = "softmax",
    feature_layer: Union[None, str, keras.layers.Layer] = None,
    name: Optional[str] = None,
) -> keras.Model:
    """Returns a new model `backbone -> CAMHead(num_classes)`, ready to train and to explain with CAM.

    With `feature_layer=None` the backbone is nested, unchanged, inside a new Functional model and the head
    is put on its output, which must be a spatial feature map: build application backbones with
    `include_top=False, pooling=None`. With `feature_layer` (a name or a layer of the backbone, which must
    then be Functional or Sequential with a known input) the head is put on that layer's output:
    `keras.Model(backbone.inputs, CAMHead(...)(layer.output))`; the layers after it are not used.
    The backbone is never modified; its layers (and weights) are shared with the new model, so training the
    new model trains them unless you set `backbone.trainable = False` first.

    Args:
        backbone: a Keras model with defined inputs (Functional, Sequential built with `keras.Input`, or
            a `keras.applications` model).
        num_classes: number of classes of the head.
        activation: activation of the head (`"softmax"`, `"sigmoid"`, `None`, ...), see `CAMHead`.
        feature_layer: `None` (the backbone's output) or the name / object of one of the backbone's layers.
        name: name of the new model (default: `"<backbone name>_cam"`).

    Returns:
        A Functional `keras.Model` from the backbone's inputs to `(batch, num_classes)` float32 scores.

    Example:

    >>> import keras, keras_cam as kc
    >>> backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    >>> model = kc.attach_cam_head(backbone, num_classes=5)
    >>> model.output_shape
    (None, 5)
    """
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"`backbone` must be a keras.Model, got {type(backbone).__name__}.")
    try:
        backbone_inputs = backbone.inputs
    except (AttributeError, ValueError):
        backbone_inputs = None
    if not backbone_inputs:
        raise ValueError(
            f"Backbone '{backbone.name}' has no defined inputs (a subclassed model or a Sequential model "
            "without keras.Input). Start the Sequential model with keras.Input(shape), or add "
            "kc.CAMHead(num_classes) to your model yourself."
        )
    model_name = name if name is not None else f"{backbone.name}_cam"
    head_name = "cam_head"

    if feature_layer is not None:
        features = _feature_output(backbone, feature_layer)
        fmt = _traced_format(backbone, _named_layer(backbone, feature_layer))
        outputs = CAMHead(num_classes, activation=activation, name=head_name,
                          data_format="channels_first" if fmt else "channels_last")(features)
        return keras.Model(backbone.inputs, outputs, name=model_name)

    out_shapes = [tuple(t.shape) for t in keras.tree.flatten(backbone.outputs)]
    channels_first = len(out_shapes) == 1 and 3 <= len(out_shapes[0]) <= 5 and \
        capture.input_layout(backbone, len(out_shapes[0])).channels_first
    if len(out_shapes) != 1 or not _is_spatial(out_shapes[0], channels_first):
        shown = out_shapes[0] if len(out_shapes) == 1 else out_shapes
        ended = ("it already ends in pooling, Flatten or Dense"
                 if len(out_shapes) == 1 and len(out_shapes[0]) == 2 else "its spatial axes are gone or of size 1")
        raise ValueError(
            f"Backbone '{backbone.name}' has output shape {shown}, which is not a spatial feature map (1 to 3 "
            f"spatial axes, each > 1): {ended}. Build the backbone without its top (for keras.applications: "
            "include_top=False, pooling=None), or pass feature_layer= with the name of its last convolutional "
            "layer."
        )
    # Fresh inputs of the same shape, dtype and name; calling the backbone on them nests it unchanged.
    inputs = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=getattr(t, "name", None))
        for t in backbone_inputs
    ]
    features = backbone(inputs[0] if len(inputs) == 1 else inputs)
    outputs = CAMHead(num_classes, activation=activation, name=head_name,
                      data_format="channels_first" if channels_first else "channels_last")(features)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model_name)


def find_cam_head(model: keras.layers.Layer) -> CAMHead:
    """The `CAMHead` of a model, searching nested models and sublayers.

    Args:
        model: a Keras model (or layer) that contains a `CAMHead` anywhere.

    Returns:
        The `CAMHead`. With several, the last one in layer order (the one nearest the output in a
        Sequential or Functional model).

    Example:

    >>> import keras, keras_cam as kc
    >>> model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), kc.CAMHead(2)])
    >>> type(kc.layers.find_cam_head(model)).__name__
    'CAMHead'
    """
    if isinstance(model, CAMHead):
        return model
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model, got {type(model).__name__}.")
    heads = [layer for layer in capture.walk_layers(model) if isinstance(layer, CAMHead)]
    if not heads:
        raise ValueError(
            f"Model '{model.name}' has no CAMHead layer; add one with kc.CAMHead(num_classes) or "
            "kc.attach_cam_head(backbone, num_classes), or use kc.GradCAM for models without one."
        )
    return heads[-1]
