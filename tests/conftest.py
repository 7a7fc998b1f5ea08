"""Fixtures shared by the test modules; the model and input builders they use live in `tests/models.py`."""
import keras
import pytest

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
