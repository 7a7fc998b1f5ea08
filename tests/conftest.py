"""Fixtures shared by the test modules; the model and input builders they use live in `tests/models.py`."""
import keras
import pytest

import keras_cam as kc
from tests.helpers import png_header
from tests.models import tiny_cam_model


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


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A saved 24x24 CAM model, three 24x24 PNGs, an image bomb and a damaged PNG."""
    root = tmp_path_factory.mktemp("cli_files")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)),
                              keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
                              kc.CAMHead(3, name="head")])
    model.save(root / "model.keras")
    pictures, _, _ = kc.datasets.make_shapes(3, size=24, seed=1)
    pngs = [kc.save_image(root / f"img{i}.png", p) for i, p in enumerate(pictures)]
    (root / "bomb.png").write_bytes(png_header(40000, 40000))  # 1.6 billion pixels declared in 33 bytes
    (root / "damaged.png").write_bytes(pngs[0].read_bytes()[:60])  # a sound header, truncated data
    return root, str(root / "model.keras"), pngs, model
