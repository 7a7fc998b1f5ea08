"""Several devices: explainers under `tf.distribute.MirroredStrategy` (TF) and `keras.distribution.DataParallel`
(JAX) split each chunk over two simulated CPU devices and give the maps of one device.

Devices must be configured before the backend starts, so each backend's check runs in a fresh Python process
(it sets its own backend: both run from the TensorFlow session of `make test`). The script prints what it
measured as JSON; the assertions are here.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_cam import _devices

# The same seeded model on every run: numpy weights, a spy layer that notes where its input was computed.
_SCRIPT = textwrap.dedent('''
    import json, os
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    else:
        import jax
    import keras, numpy as np
    import keras_cam as kc

    kc.set_cache_size(64)  # every function of this script stays cached (the "from the cache" checks)
    SEEN = []  # per traced call of the spy: (rows the device computes, device or sharding)

    def note(x):
        if not isinstance(x.shape[0], int):  # the model being built (a symbolic batch)
            return
        if backend == "tensorflow":
            ctx = tf.distribute.get_replica_context()
            device = ctx.replica_id_in_sync_group.device if ctx and ctx.num_replicas_in_sync > 1 else "one"
            SEEN.append((int(x.shape[0]), device[-5:]))
        elif isinstance(x, jax.core.Tracer):
            def seen(s, rows=int(x.shape[0]), shape=tuple(x.shape)):
                SEEN.append((int(s.shard_shape(shape)[0]), f"{s.num_devices} devices"))
            jax.debug.inspect_array_sharding(x, callback=seen)

    class Spy(keras.layers.Layer):
        def call(self, x):
            note(x)
            return x

    def build(weights=None):
        model = keras.Sequential([keras.Input((12, 12, 3)), Spy(),
                                  keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                                  keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
        rng = np.random.default_rng(0)
        model.set_weights(weights or [rng.normal(0, 0.5, w.shape).astype("float32") for w in model.weights])
        return model

    def seen(run):
        SEEN.clear()
        out = run()
        return out, sorted(set(SEEN))

    def methods(model):
        x5, x7 = [np.random.default_rng(n).random((n, 12, 12, 3)).astype("float32") for n in (5, 7)]
        two = np.array([[0, 1]] * 5)
        return {
            "gradcam": lambda: kc.GradCAM(model)(x5),
            "gradcam_batch3": lambda: kc.GradCAM(model).explain(x5, batch_size=3),
            "gradcam++_two_targets": lambda: kc.GradCAMPlusPlus(model)(x5, targets=two),
            "scorecam": lambda: kc.ScoreCAM(model, batch_size=4)(x5),
            "ablationcam": lambda: kc.AblationCAM(model, batch_size=4)(x5),
            # Decompositions per image (eigh, svd): on JAX these hung when left to jit's partitioner.
            "kpcacam": lambda: kc.KPCACAM(model).explain(x5, batch_size=3),
            "eigengradcam": lambda: kc.EigenGradCAM(model).explain(x5, batch_size=3),
            # LRP's rules are custom gradients (TensorFlow, JAX): split over devices like any backward pass.
            "lrp": lambda: kc.LRP(model, rules={Spy: kc.lrp.Pass()}).explain(x5, batch_size=3, normalize=False),
            "dataset": lambda: kc.explain_dataset(kc.GradCAM(model), x7, batch_size=4, verbose=0).heatmaps,
            "dataset_reference": lambda: kc.GradCAM(model)(x7),
        }

    result = {"maps": {}, "seen": {}}
    single = build()
    reference, result["seen"]["reference"] = seen(lambda: {name: run() for name, run in methods(single).items()})
    if backend == "tensorflow":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        result["devices"] = strategy.num_replicas_in_sync
        with strategy.scope():
            mirrored = build(single.get_weights())
        runs = methods(mirrored)  # built under the strategy: split also when called outside its scope
        # A model built on one device is split inside the scope only (compiled apart from its own function).
        with strategy.scope():
            result["maps"]["single_in_scope"], result["seen"]["single_in_scope"] = seen(methods(single)["gradcam"])
        _, result["seen"]["single_after"] = seen(methods(single)["gradcam"])
        result["maps"]["single_in_scope"] = result["maps"]["single_in_scope"].tolist()
    else:
        result["devices"] = len(jax.devices())
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        runs = methods(build(single.get_weights()))  # variables replicated, as Keras lays them out
        _, result["seen"]["single_in_distribution"] = seen(methods(single)["gradcam"])
    for name, run in runs.items():
        maps, result["seen"][name] = seen(run)
        result["maps"][name] = maps.tolist()
    if backend == "jax":
        keras.distribution.set_distribution(None)
        _, result["seen"]["single_after"] = seen(methods(single)["gradcam"])
    result["reference"] = {name: maps.tolist() for name, maps in reference.items()}
    print("RESULT" + json.dumps(result))
''')


def _run(backend: str, **env: str) -> dict:
    environment = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", **env)
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=environment, capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT"):])


def _assert_same_maps(result: dict) -> None:
    ref = result["reference"]
    expected = dict(ref, dataset=ref["dataset_reference"], single_in_scope=ref["gradcam"])
    for name, maps in result["maps"].items():
        maps, want = np.asarray(maps), np.asarray(expected[name])
        assert maps.shape == want.shape, name
        # Eigenvectors split one matrix per LAPACK call differ from the batched call's by ~n * eps / gap.
        atol = 1e-4 if name in ("kpcacam", "eigengradcam") else 1e-5
        np.testing.assert_allclose(maps, want, rtol=1e-5, atol=atol, err_msg=name)
    assert np.asarray(ref["gradcam++_two_targets"]).shape == (5, 2, 12, 12)
    assert np.ptp(np.asarray(ref["gradcam"])) > 0.5  # real maps, not constant ones
    assert np.ptp(np.asarray(ref["lrp"])) > 0.01  # signed relevance, not zeros


@pytest.mark.slow
def test_mirrored_strategy_splits_each_chunk_over_the_replicas():
    pytest.importorskip("tensorflow")
    result = _run("tensorflow")
    assert result["devices"] == 2
    _assert_same_maps(result)
    seen = {name: [tuple(s) for s in v] for name, v in result["seen"].items()}
    halves = lambda rows: [(rows, "CPU:0"), (rows, "CPU:1")]  # noqa: E731
    # 5 images: one chunk of 8 (a power of two), 4 rows on each replica.
    assert seen["gradcam"] == halves(4) and seen["gradcam++_two_targets"] == halves(4)
    assert seen["gradcam_batch3"] == halves(2)  # chunks of 3 padded to 4
    assert seen["dataset"] == halves(2)  # batches of 4
    assert seen["lrp"] == [(1, "one")] + halves(2)  # its plan: one sample, eagerly; then chunks of 3 split
    # Score-CAM: the first pass split, and each masked pass (one image, 4 of its 6 channels) 2 channels a replica.
    assert seen["scorecam"] == halves(2) + halves(4)
    assert seen["ablationcam"] == halves(2) + halves(4)  # ablated rows in chunks of 4
    # One model, one signature: its single-device function is not reused inside the scope, nor vice versa.
    assert (8, "one") in seen["reference"] and not any("CPU" in s[1] for s in seen["reference"])
    assert seen["single_in_scope"] == halves(4)
    assert seen["single_after"] == []  # the single-device function again, from the cache: no new trace


@pytest.mark.slow
def test_data_parallel_shards_inputs_over_the_devices():
    pytest.importorskip("jax")
    result = _run("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert result["devices"] == 2
    _assert_same_maps(result)
    seen = {name: [tuple(s) for s in v] for name, v in result["seen"].items()}
    assert all(s[1] == "1 devices" for s in seen["reference"])
    assert seen["gradcam"] == [(4, "2 devices")]  # 8 rows, 4 per device
    assert seen["gradcam++_two_targets"] == [(4, "2 devices")]
    assert seen["gradcam_batch3"] == [(2, "2 devices")]
    assert seen["scorecam"] == [(2, "2 devices"), (4, "2 devices")]  # masked passes: 4 channels, 2 a device
    assert seen["ablationcam"] == [(2, "2 devices"), (4, "2 devices")]
    assert seen["dataset"] == [(2, "2 devices")]
    assert seen["lrp"] == [(2, "2 devices")]
    assert seen["single_in_distribution"] == [(4, "2 devices")]  # a model built before the distribution
    assert seen["single_after"] == []  # its single-device function again, from the cache


@pytest.mark.backends
def test_rows_are_padded_split_and_gathered_in_order():
    a = np.arange(5, dtype=np.float32)[:, None]
    b = np.arange(5, dtype=np.float32) * 10
    assert _devices.common_rows([a, b]) == 5 and _devices.common_rows([a, b[:3]]) is None
    assert _devices.common_rows([a, b[:1]]) == 5  # one row: shared by every part
    padded = [np.asarray(p) for p in _devices.pad([a, b], 2)]
    np.testing.assert_array_equal(padded[1], [0, 10, 20, 30, 40, 40])
    parts = [[np.asarray(p) for p in _devices.split(padded, 2, i)] for i in range(2)]
    np.testing.assert_array_equal(parts[1][0][:, 0], [3, 4, 4])
    outputs = [(p[0] * 2, {"b": p[1]}) for p in parts]
    doubled, rest = _devices.gather(outputs, 5)
    np.testing.assert_array_equal(np.asarray(doubled)[:, 0], np.arange(5) * 2)
    np.testing.assert_array_equal(np.asarray(rest["b"]), b)
    # A one-row argument goes whole to every part, unpadded.
    shared = _devices.pad([a, b[:1]], 2)
    assert _devices.split_mask(shared) == [True, False] and np.asarray(shared[1]).shape == (1,)
    halves = [_devices.split(shared, 2, i) for i in range(2)]
    assert [np.asarray(h[0]).shape[0] for h in halves] == [3, 3]
    assert all(np.asarray(h[1]).tolist() == [0.0] for h in halves)


_DECOMPOSITIONS = textwrap.dedent('''
    import json
    import keras, numpy as np
    import keras_cam as kc

    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    images = np.random.default_rng(0).random((16, 24, 24, 3)).astype("float32")
    runs = {"kpcacam": lambda: kc.KPCACAM(model).explain(images, batch_size=8),
            "eigengradcam": lambda: kc.EigenGradCAM(model).explain(images, batch_size=5),
            "scorecam_batch1": lambda: kc.ScoreCAM(model, batch_size=1).explain(images[:3])}
    reference = {name: run() for name, run in runs.items()}
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    print("RESULT" + json.dumps({name: float(np.abs(run() - reference[name]).max()) for name, run in runs.items()}))
''')


@pytest.mark.slow
def test_data_parallel_on_four_devices_runs_decompositions_and_one_row_chunks():
    # KPCA-CAM's eigh and Eigen-Grad-CAM's svd hung on 4 simulated CPU devices: jaxlib's LAPACK kernels
    # spread a batch of matrices over XLA's intra-op thread pool and wait for it, and with every device's
    # part running on that pool at once, all its threads waited on work queued behind them. Split calls now
    # decompose one matrix at a time (`keras_cam.backend.jax.decompose`); the hang came in 7 runs of 9 on a
    # loaded 2-core machine before, none after.
    pytest.importorskip("jax")
    environment = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run([sys.executable, "-c", _DECOMPOSITIONS], env=environment, capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    # KPCA-CAM's map is a float32 eigenvector of a 576 x 576 kernel matrix: one matrix per LAPACK call and a
    # batch of them take different kernels, whose results differ by ~n * eps / gap (1e-6 here, 1.7e-4 on
    # another CPU). A wrong row or sign would be off by O(0.1).
    tolerance = {"kpcacam": 1e-3}
    for name, error in json.loads(lines[-1][len("RESULT"):]).items():
        assert error < tolerance.get(name, 1e-4), name
