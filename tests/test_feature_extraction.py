"""Feature maps: a layer's activations, computed up to that layer, against a direct sub-model."""
import keras
import numpy as np
import pytest

from keras_cam.feature_extraction import FeatureMapExtractor, feature_maps
from tests.helpers import requires_channels_first_conv
from tests.models import classifier, numpy_weights, random_images


@pytest.mark.backends
def test_feature_maps_are_the_layer_output():
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Conv2D(5, 3, activation="relu", kernel_initializer="zeros", name="c1")(inputs)
    outputs = keras.layers.Dense(2, kernel_initializer="zeros")(keras.layers.GlobalAveragePooling2D()(hidden))
    model = numpy_weights(keras.Model(inputs, outputs), seed=2, bias=-0.05)
    images = random_images(5, 16)
    copy = images.copy()
    maps = feature_maps(model, "c1", images, batch_size=2)
    expected = keras.ops.convert_to_numpy(keras.Model(inputs, hidden)(images))
    assert maps.dtype == np.float32 and maps.shape == (5, 14, 14, 5)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(images, copy)



def test_feature_maps_errors_and_batches():
    with pytest.raises(ValueError, match="\\(N, H, W, C\\)"):
        feature_maps(classifier(), "probs", random_images(1, 16))
    model = classifier()
    extractor = FeatureMapExtractor(model, "conv")
    images = random_images(7, 16)
    with pytest.raises(ValueError, match="channels 1 but the model expects 3"):
        extractor(images[..., :1])
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        extractor(images, batch_size=0)
    # Even chunks of at most 3 (3, 2, 2 rows): the same maps as one batch.
    np.testing.assert_allclose(extractor(images, batch_size=3), extractor(images), atol=1e-6)


@pytest.mark.channels_first
@pytest.mark.backends
@pytest.mark.parametrize("rank, data_format", [(1, "channels_last"), (3, "channels_last"), (2, "channels_first")])
def test_feature_maps_in_every_layout_come_back_channels_last(rank, data_format):
    if data_format == "channels_first":
        requires_channels_first_conv()
    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    size = (9,) * rank
    shape = (2,) + size if data_format == "channels_first" else size + (2,)
    keras.utils.set_random_seed(0)
    layer = conv(3, 3, padding="same", data_format=data_format, name="c")
    model = keras.Sequential([keras.Input(shape), layer, keras.layers.Flatten(data_format=data_format),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((4,) + shape).astype("float32")
    maps = feature_maps(model, "c", x, batch_size=3)
    expected = keras.ops.convert_to_numpy(layer(x))
    expected = np.moveaxis(expected, 1, -1) if data_format == "channels_first" else expected
    assert maps.shape == (4,) + size + (3,)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)
