"""keras_cam.loading: the model loading and pixel scalings that the command line and the Ray adapter share."""
import importlib
import zipfile

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import loading


def test_the_cli_and_ray_use_the_library_module():
    common = importlib.import_module("keras_cam.cli._common")
    assert common.load_model is loading.load_model and common.scale is loading.scale
    assert common.SCALES is loading.SCALES
    import keras_cam.integrations.ray as ray_module

    source = open(ray_module.__file__).read()
    assert "keras_cam.loading" in source and "keras_cam.cli" not in source


@pytest.mark.backends
def test_load_model_round_trip_and_one_line_errors(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), kc.CAMHead(2)])
    path = str(tmp_path / "model.keras")
    model.save(path)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    loaded = loading.load_model(path, unsafe=False, compile=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)),
                               atol=1e-6)
    with pytest.raises(ValueError, match="model file '.*missing.keras' does not exist"):
        loading.load_model(str(tmp_path / "missing.keras"), unsafe=False)
    with pytest.raises(ValueError, match="it is a folder, not a .keras file"):
        loading.load_model(str(tmp_path), unsafe=False)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid .keras archive"):
        loading.load_model(str(broken), unsafe=False)
    assert not zipfile.is_zipfile(broken)  # left as it was


def test_scale_modes():
    x = np.full((1, 2, 2, 3), 0.5, np.float32)
    assert loading.scale(x, "1/255") is x
    np.testing.assert_allclose(loading.scale(x, "none"), 127.5)
    np.testing.assert_allclose(loading.scale(x, "tf"), 127.5 / 127.5 - 1.0, atol=1e-6)  # [-1, 1]
    np.testing.assert_allclose(x, 0.5)  # the input is not modified
