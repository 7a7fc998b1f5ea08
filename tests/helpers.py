"""What several test modules share beyond the oracles: probes of what this machine's backend can run;
image headers and output lines for the image and command-line modules; references for the method families."""
import functools
import struct
import zlib

import keras
import numpy as np
import pytest

from tests import oracles
from tests.models import images


@functools.lru_cache(maxsize=None)
def channels_first_conv_runs() -> bool:
    """Whether the active backend runs channels_first convolutions here: TensorFlow on a CPU does only with
    its oneDNN optimizations on (off by default on some CPUs, and with TF_ENABLE_ONEDNN_OPTS=0)."""
    if keras.backend.backend() != "tensorflow":
        return True
    from keras_cam.backend import tensorflow as seam

    return seam.channels_first_supported()


def requires_channels_first_conv() -> None:
    """For tests that run a channels_first convolution: where this TensorFlow cannot, check that keras-cam
    says so in its own words instead, then skip the rest of the test."""
    if channels_first_conv_runs():
        return
    import keras_cam as kc

    model = keras.Sequential([keras.Input((3, 8, 8)),
                              keras.layers.Conv2D(2, 3, data_format="channels_first", name="conv_cf"),
                              keras.layers.GlobalAveragePooling2D(data_format="channels_first"),
                              keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="runs channels_first convolutions only with oneDNN on"):
        kc.GradCAM(model)(np.zeros((1, 3, 8, 8), "float32"))
    pytest.skip("TensorFlow on this CPU cannot run channels_first convolutions (oneDNN off); keras-cam's "
                "one-line error was checked instead")


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring width x height, and no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def text_lines(text: str) -> list[str]:
    """The lines of a captured output, without the surrounding blank space."""
    return text.strip().splitlines()


# --------------------------------------------- references shared by the method-family modules

TARGETS = np.array([0, 1, 2, 1])


def two_conv_oracle(wts, targets=TARGETS, dlogits=None):
    """conv1 activations A (float64), d(score)/dA, and the logits of `functional_model(wts)` on `images()`.

    The score is the target's logit, or `sum_k dlogits[n, k] * logit_k` when `dlogits` (N, K) is given.
    """
    x = images().astype(np.float64)
    a = np.maximum(oracles.conv_forward(x, wts["k1"], wts["b1"]), 0)
    y2 = oracles.conv_forward(a, wts["k2"], wts["b2"])
    f = np.maximum(y2, 0)
    logits = f.mean(axis=(1, 2)) @ wts["w"] + wts["b"]
    if dlogits is None:
        dlogits = np.eye(wts["w"].shape[1])[targets]
    dpooled = dlogits @ wts["w"].T  # (N, C2)
    df = np.broadcast_to(dpooled[:, None, None, :] / (f.shape[1] * f.shape[2]), f.shape)
    grads = oracles.conv_backward_input(df * (y2 > 0), a.shape, wts["k2"])
    return a, grads, logits


def gap_dense(seed=0, size=10, channels=5, classes=3, activation=None, head_activation=None,
              conv_activation="relu"):
    """Input -> Conv2D "conv" (3x3, same, bias) -> GAP -> Dense "head" [-> Activation]: numpy weights."""
    rng = np.random.default_rng(seed)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", activation=conv_activation, name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(classes, activation=activation, name="head")(x)
    if head_activation is not None:
        x = keras.layers.Activation(head_activation, name="curve")(x)
    model = keras.Model(inp, x)
    wts = dict(k=rng.normal(size=(3, 3, 3, channels)).astype("float32") * 0.5,
               b=rng.normal(size=(channels,)).astype("float32") * 0.3,
               w=rng.normal(size=(channels, classes)).astype("float32"),
               c=rng.normal(size=(classes,)).astype("float32") * 0.5)
    model.get_layer("conv").set_weights([wts["k"], wts["b"]])
    model.get_layer("head").set_weights([wts["w"], wts["c"]])
    return model, wts


def conv_gap_dense_numpy(x, wts):
    """(pre-activation z, A = relu(z), logits) of `gap_dense` in float64."""
    z = oracles.conv_forward(x.astype(np.float64), wts["k"], wts["b"])
    a = np.maximum(z, 0)
    return z, a, a.mean(axis=(1, 2)) @ wts["w"] + wts["c"]
