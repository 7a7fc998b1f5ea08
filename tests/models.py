"""Small seeded models and inputs shared by the test modules (builders, not tests): every test module
imports them from here, none from another test module. Each builds in well under a second on every backend."""
from typing import Sequence, Tuple

import keras
import numpy as np

import keras_cam as kc
from keras_cam.capture import iter_layers


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


def conv_layers(wts, activation="softmax"):
    c1, c2, k = wts["k1"].shape[-1], wts["k2"].shape[-1], wts["w"].shape[-1]
    return [
        keras.layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(k, activation=activation, name="head"),
    ]


def set_fixed(layers, wts):
    layers[0].set_weights([wts["k1"], wts["b1"]])
    layers[1].set_weights([wts["k2"], wts["b2"]])
    layers[3].set_weights([wts["w"], wts["b"]])


def fixed_weights(seed=0, c1=4, c2=5, k=3):
    rng = np.random.default_rng(seed)
    return dict(
        k1=rng.normal(size=(3, 3, 3, c1)).astype("float32") * 0.5,
        b1=rng.normal(size=(c1,)).astype("float32") * 0.1,
        k2=rng.normal(size=(3, 3, c1, c2)).astype("float32") * 0.5,
        b2=rng.normal(size=(c2,)).astype("float32") * 0.1,
        w=rng.normal(size=(c2, k)).astype("float32"),
        b=rng.normal(size=(k,)).astype("float32") * 0.1,
    )


def functional_model(wts, size=10, activation="softmax"):
    layers = conv_layers(wts, activation)
    inp = keras.Input((size, size, 3))
    x = inp
    for layer in layers:
        x = layer(x)
    model = keras.Model(inp, x, name="functional")
    set_fixed(layers, wts)
    return model


def sequential_model(wts, size=10):
    layers = conv_layers(wts)
    model = keras.Sequential([keras.Input((size, size, 3))] + layers, name="sequential")
    set_fixed(layers, wts)
    return model


class TwoConv(keras.Model):
    def __init__(self, wts, **kwargs):
        super().__init__(**kwargs)
        self.conv1, self.conv2, self.gap, self.head = conv_layers(wts)

    def call(self, x):
        return self.head(self.gap(self.conv2(self.conv1(x))))


def subclassed_model(wts, size=10):
    model = TwoConv(wts, name="subclassed")
    model(np.zeros((1, size, size, 3), "float32"))
    set_fixed([model.conv1, model.conv2, model.gap, model.head], wts)
    return model


def images(n=4, size=10, seed=1):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def model_snapshot(model):
    state = {}
    for ref in iter_layers(model):
        state[ref.path] = (sorted(ref.layer.__dict__), getattr(ref.layer, "activation", None))
    weights = [np.array(w) for w in model.get_weights()]
    return state, weights


def assert_unchanged(model, snapshot):
    state, weights = model_snapshot(model)
    assert state == snapshot[0]
    for a, b in zip(weights, snapshot[1]):
        np.testing.assert_array_equal(a, b)
    assert not any("call" in ref.layer.__dict__ for ref in iter_layers(model)), "a call hook was left behind"


CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
POOL = {1: keras.layers.MaxPooling1D, 2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}
GAP = {1: keras.layers.GlobalAveragePooling1D, 2: keras.layers.GlobalAveragePooling2D,
       3: keras.layers.GlobalAveragePooling3D}
LAYOUT_SIZE = {1: 12, 2: 8, 3: 6}


def layout_weights(rank, seed=0, c1=4, c2=5, k=3):
    rng = np.random.default_rng(seed)
    kernel = (3,) * rank
    return dict(k1=rng.normal(size=kernel + (2, c1)).astype("float32") * 0.5,
                b1=rng.normal(size=(c1,)).astype("float32") * 0.1,
                k2=rng.normal(size=kernel + (c1, c2)).astype("float32") * 0.5,
                b2=rng.normal(size=(c2,)).astype("float32") * 0.1,
                w=rng.normal(size=(c2, k)).astype("float32"),
                b=rng.normal(size=(k,)).astype("float32") * 0.1)


def layout_model(rank, wts, data_format="channels_last", pool=False, head="camhead"):
    """conv1 -> [pool] -> conv2 -> CAMHead (or GAP + Dense), in the given layout, with fixed weights."""
    size = LAYOUT_SIZE[rank]
    first = (data_format or keras.config.image_data_format()) == "channels_first"
    shape = (2,) + (size,) * rank if first else (size,) * rank + (2,)
    conv1 = CONV[rank](wts["k1"].shape[-1], 3, padding="same", activation="relu", data_format=data_format,
                       name="conv1")
    conv2 = CONV[rank](wts["k2"].shape[-1], 3, padding="same", activation="relu", data_format=data_format,
                       name="conv2")
    layers = [keras.Input(shape), conv1] + ([POOL[rank](data_format=data_format)] if pool else []) + [conv2]
    if head == "camhead":
        top = kc.CAMHead(wts["w"].shape[-1], data_format=data_format, name="head")
        layers.append(top)
    else:
        top = keras.layers.Dense(wts["w"].shape[-1], activation="softmax", name="head")
        layers += [GAP[rank](data_format=data_format), top]
    net = keras.Sequential(layers)
    conv1.set_weights([wts["k1"], wts["b1"]])
    conv2.set_weights([wts["k2"], wts["b2"]])
    (top.dense if head == "camhead" else top).set_weights([wts["w"], wts["b"]])
    return net


def layout_inputs(rank, n=3, seed=1):
    return np.random.default_rng(seed).random((n,) + (LAYOUT_SIZE[rank],) * rank + (2,)).astype("float32")


def bright_square_model(head: bool = True) -> keras.Model:
    # Channel 0 fires on bright pixels only (sum of RGB above 1.5), channel 1 is dead; class 1's logit grows
    # with their share, class 0's falls. Every method's map of class 1 should peak on the bright square, and
    # a blurred or blacked-out square (the insertion / deletion baselines) no longer fires.
    keras.utils.set_random_seed(0)
    top = [kc.CAMHead(2, name="cam_head")] if head else [keras.layers.GlobalAveragePooling2D(),
                                                          keras.layers.Dense(2, activation="softmax")]
    model = keras.Sequential([keras.Input((16, 16, 3)),
                              keras.layers.Conv2D(2, 1, activation="relu", name="bright")] + top)
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[..., 0] = 1.0
    model.get_layer("bright").set_weights([kernel, np.array([-1.5, 0.0], np.float32)])
    dense = model.layers[-1].dense if head else model.layers[-1]
    # One square (16 of 256 pixels at 1.5): mean activation 0.094, logits (-3, +3); without it (+3, -3).
    dense.set_weights([np.array([[-64.0, 64.0], [0.0, 0.0]], np.float32), np.array([3.0, -3.0], np.float32)])
    return model


def squares(n: int = 12):
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 0.1, (n, 16, 16, 3)).astype(np.float32)
    masks = np.zeros((n, 16, 16), bool)
    for i in range(n):
        r, c = rng.integers(0, 12, 2)
        images[i, r:r + 4, c:c + 4] = 1.0
        masks[i, r:r + 4, c:c + 4] = True
    return images, masks
