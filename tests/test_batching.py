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


# -------------------------------------------------------------------- compiled functions: shared and bounded

import keras_cam as kc  # noqa: E402
from tests.models import fixed_weights, functional_model, images  # noqa: E402


@pytest.mark.backends
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch runs eagerly: nothing is traced")
def test_fresh_explainers_share_traces_and_ragged_batches_share_buckets():
    traces = []

    class Counting(kc.GradCAM):
        def compute_cam(self, a, g, t):
            traces.append(tuple(a.shape))
            return super().compute_cam(a, g, t)

    model = functional_model(fixed_weights(seed=3))
    x = images(n=8)
    first = Counting(model)(x)
    for _ in range(5):  # a fresh explainer per call, as in `kc.GradCAM(model)(x)` in a loop
        np.testing.assert_array_equal(Counting(model)(x), first)
    assert len(traces) == 1
    for n in range(1, 9):  # batch sizes 1..8 share the buckets 1, 2, 4 and 8
        np.testing.assert_allclose(Counting(model)(x[:n]), first[:n], atol=1e-6)
    assert sorted({shape[0] for shape in traces}) == [1, 2, 4, 8] and len(traces) == 4


@pytest.mark.backends
def test_the_cache_is_bounded_and_never_keeps_models_alive(tmp_path, monkeypatch):
    import copy
    import gc
    import pickle
    import weakref

    from keras_cam import _batching

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    previous = kc.set_cache_size(3)
    trims = []  # the freed functions' pages go back to the system after each eviction
    monkeypatch.setattr(_batching, "return_freed_memory", lambda: trims.append(len(_batching.CACHE)))
    try:
        explainer = kc.GradCAM(model)
        maps = [explainer(images(n=2, size=size)) for size in (8, 9, 10, 11, 12)]
        assert _batching.CACHE.count(model) == 3 and len(_batching.CACHE) <= 3
        assert len(trims) >= 2 and all(n <= 3 for n in trims)
        np.testing.assert_allclose(explainer(images(n=2, size=8)), maps[0], atol=1e-6)  # rebuilt, same maps
    finally:
        kc.set_cache_size(previous)
    # The user's model is left as it was: it deep-copies, pickles and saves as before.
    x = images(n=2, size=9)
    expected = keras.ops.convert_to_numpy(model(x))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), expected, rtol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, rtol=1e-6)
    refs = weakref.ref(model), weakref.ref(explainer)
    del model, explainer, loaded
    gc.collect()
    assert refs[0]() is None and refs[1]() is None  # the shared cache held neither


def test_freed_memory_is_returned_to_the_system():
    from keras_cam.backend import common

    import platform

    common.return_freed_memory()  # collects garbage; glibc's malloc_trim where there is one
    if platform.libc_ver()[0] == "glibc":
        assert common._LIBC and callable(common._LIBC.malloc_trim)
    else:
        assert common._LIBC is False
