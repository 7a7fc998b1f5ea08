"""Small models and images shared by the test files.

Import the builders with `from tests.conftest import tiny_cam_model, random_images`, or use the
`make_cam_model` fixture. Everything here is seeded and builds in well under a second on every backend.
"""
from typing import Sequence, Tuple

import keras
import numpy as np
import pytest

import keras_cam as kc


def random_images(n: int = 4, size: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    """float32 (n, size, size, channels) in [0, 1]."""
    return np.random.default_rng(seed).random((n, size, size, channels)).astype("float32")


def _conv_layers(filters: Sequence[int]) -> list:
    layers = []
    for i, f in enumerate(filters):
        layers.append(keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i + 1}"))
        if i == 0:
            layers.append(keras.layers.MaxPooling2D(name="pool1"))
    return layers


def tiny_backbone(input_shape: Tuple[int, int, int] = (16, 16, 3), filters: Sequence[int] = (6, 8),
                  seed: int = 0, name: str = "backbone") -> keras.Model:
    """A Sequential conv stack (conv1, pool1, conv2, ...) ending in a feature map at half resolution."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input(input_shape)] + _conv_layers(filters), name=name)


def tiny_cam_model(input_shape: Tuple[int, int, int] = (16, 16, 3), num_classes: int = 3,
                   activation: str = "softmax", kind: str = "sequential", seed: int = 0) -> keras.Model:
    """conv1 -> pool1 -> conv2 -> CAMHead as a `"sequential"`, `"functional"` or `"nested"` model (the conv
    stack as a model inside a Functional model, via `attach_cam_head`). The head is named `cam_head`."""
    if kind == "nested":
        return kc.attach_cam_head(tiny_backbone(input_shape, seed=seed), num_classes, activation=activation)
    keras.utils.set_random_seed(seed)
    layers = _conv_layers((6, 8)) + [kc.CAMHead(num_classes, activation=activation, name="cam_head")]
    if kind == "sequential":
        return keras.Sequential([keras.Input(input_shape)] + layers, name="seq_cam")
    if kind == "functional":
        inputs = x = keras.Input(input_shape)
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x, name="func_cam")
    raise ValueError(f"kind must be 'sequential', 'functional' or 'nested', got {kind!r}")


def numpy_weights(model, seed=0, bias=0.1):
    """He-normal kernels and constant biases drawn by numpy: the same weights on every backend.

    Layers are built with zero initializers: Keras' random initializers draw from each backend's own
    generator (different numbers per backend) and cost seconds of compilation per shape on JAX.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "kernel", None) is not None:
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
            weights = [rng.normal(0.0, np.sqrt(2.0 / fan_in), layer.kernel.shape).astype(np.float32)]
            if getattr(layer, "bias", None) is not None:
                weights.append(np.full(layer.bias.shape, bias, np.float32))
            layer.set_weights(weights)
    return model


def conv(filters, name, **kwargs):
    return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="zeros",
                               name=name, **kwargs)


def classifier(size=16):
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        conv(8, "conv"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros", name="probs"),
    ])
    return numpy_weights(model, seed=0, bias=0.0)


@pytest.fixture
def make_cam_model():
    """The `tiny_cam_model` builder, as a fixture."""
    return tiny_cam_model


@pytest.fixture
def mixed_precision():
    """Sets the global "mixed_float16" policy for one test and restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
