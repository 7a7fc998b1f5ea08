"""What several test modules share beyond the oracles: probes of what this machine's backend can run."""
import functools

import keras
import numpy as np
import pytest


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
