"""Every option of every method is part of its compiled functions' cache key: two explainers that differ in
any option never share a compiled function (a method's options are declared once, in its constructor)."""
import inspect

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.explainers import registry

_OTHER = {"kernel": "rbf", "baseline": 0.5, "max_channels": 2, "gamma": 0.5, "samples": 3, "steps": 4}


def _other_value(name, default):
    if name in _OTHER:
        return _OTHER[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default * 2 + 0.25
    raise AssertionError(f"no second value for option {name}={default!r}: add one to _OTHER")


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))


def _options(cls):
    common = set(inspect.signature(kc.GradCAM.__init__).parameters)
    found = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind is p.KEYWORD_ONLY and name not in common:
                found.setdefault(name, p.default)
    return found


@pytest.mark.parametrize("cls", registry.registered_methods(), ids=lambda c: c.name)
def test_every_option_is_in_the_cache_key(cls):
    model = _camhead_model() if cls.name == "cam" else _model()
    base = cls(model)
    for name, default in _options(cls).items():
        other = cls(model, **{name: _other_value(name, default)})
        assert other._config() != base._config(), f"{cls.name}: option {name} is not in the cache key"


def test_common_options_are_keyword_only():
    with pytest.raises(TypeError):
        kc.GradCAM(_model(), "conv", False)  # use_logits must be named
    assert kc.ScoreCAM(_model(), "conv", max_channels=2, use_logits=False).use_logits is False


def _camhead_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    return keras.Model(inputs, kc.CAMHead(3, name="head")(x))


@pytest.mark.slow  # every option of every method, three explanations each
@pytest.mark.parametrize("cls", registry.registered_methods(), ids=lambda c: c.name)
def test_every_option_gives_the_maps_of_a_fresh_explainer(cls):
    # The trap the cache key guards against: an explainer built after another with a different option value
    # silently reusing the other's compiled function. Oracle: the maps of the same explainer computed with
    # an empty cache. And an option that changes the maps of a fresh explainer must change them after too.
    keras.utils.set_random_seed(0)
    model = _camhead_model() if cls.name == "cam" else _model()
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    targets = [0, 2]

    def maps(explainer):
        keras.utils.set_random_seed(1)  # the random methods (RandomCAM, SmoothGrad) draw the same numbers
        return explainer.explain(images, targets, normalize=False)

    kc.clear_cache()
    base = maps(cls(model))
    for name, default in _options(cls).items():
        value = _other_value(name, default)
        kc.clear_cache()
        fresh = maps(cls(model, **{name: value}))
        kc.clear_cache()
        maps(cls(model))  # the default's functions in the cache first
        after = maps(cls(model, **{name: value}))
        np.testing.assert_allclose(after, fresh, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{cls.name}: {name}={value!r} reused another option's function")
        if not np.allclose(fresh, base, rtol=1e-5, atol=1e-6):
            assert not np.allclose(after, base, rtol=1e-5, atol=1e-6), f"{cls.name}: {name}"
