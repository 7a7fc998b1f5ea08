"""_batching.py: chunking with padding, the compiled-function cache, and its per-model lifetime."""
import gc
import weakref

import keras
import numpy as np
import pytest

from keras_cam import _batching, faithfulness


def test_chunks_and_padding():
    assert _batching.chunk_size(70) == 32 and _batching.chunk_size(5) == 5
    assert _batching.chunk_size(70, 32, even=True) == 24  # 3 chunks of 24 rather than 32, 32, 6
    assert _batching.chunk_size(10, 3, even=True) == 3
    a = np.arange(5)[:, None]
    np.testing.assert_array_equal(_batching.pad_rows(a, 8)[:, 0], [0, 1, 2, 3, 4, 4, 4, 4])
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1, got 0"):
        _batching.chunk_size(4, 0)
    seen = []

    def call(x, y):
        seen.append(x.shape[0])
        return x * 2, y[:, 0] + x[:, 0]

    x = np.arange(7, dtype=np.float32)[:, None]
    doubled, summed = _batching.run_batched(call, [x, x * 10], 3)
    assert seen == [3, 3, 3]  # every chunk padded to one signature
    np.testing.assert_array_equal(doubled[:, 0], np.arange(7) * 2)
    np.testing.assert_array_equal(summed, np.arange(7) * 11)


def test_function_cache_is_lru_and_builds_once():
    builds = []
    cache = _batching.FunctionCache(maxsize=2)

    def build(name):
        return lambda: builds.append(name) or name

    assert cache.get("a", build("a")) == "a" and cache.get("a", build("a")) == "a"
    cache.get("b", build("b"))
    cache.get("a", build("a"))  # a is now the most recent
    cache.get("c", build("c"))  # evicts b
    assert len(cache) == 2 and builds == ["a", "b", "c"]
    cache.get("b", build("b"))
    assert builds == ["a", "b", "c", "b"]


@pytest.mark.backends
def test_deletion_compiles_once_per_model_and_never_keeps_it_alive():
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    images = np.random.default_rng(0).random((3, 4, 4, 1)).astype(np.float32)
    maps = np.random.default_rng(1).random((3, 4, 4)).astype(np.float32)
    first = faithfulness.deletion_auc(model, images, maps, targets=0, steps=4)
    assert _batching.CACHE.count(model) == 1
    assert faithfulness.deletion_auc(model, images, maps, targets=0, steps=4) == first
    faithfulness.insertion_auc(model, images, maps, targets=0, steps=4)
    assert _batching.CACHE.count(model) == 1  # the same forward pass, the same chunk shape: reused
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the cache held the model weakly, and so did its compiled function
