"""Concurrent use: hooks are scoped to the thread that installs them, so explainers, feature maps and filter
patterns running in several threads, and other threads' plain `model(x)`, each see the model as the user gave
it and get the same values as when run alone."""
import threading

import keras
import numpy as np
import pytest

import keras_cam as kc

ROUNDS = 6


def _run_together(*jobs, rounds=ROUNDS):
    """Runs each job `rounds` times, all jobs at once in their own threads; returns each job's results."""
    barrier = threading.Barrier(len(jobs))
    results = [[] for _ in jobs]
    errors = []

    def worker(i, job):
        try:
            barrier.wait()
            for _ in range(rounds):
                results[i].append(job())
        except Exception as e:  # reported below, with the job that raised
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def _model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def model_and_images():
    model = _model()
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype("float32")
    return model, x


@pytest.mark.backends
def test_guided_relus_in_one_thread_leave_another_threads_saliency_alone(model_and_images):
    model, x = model_and_images
    saliency, guided = kc.Saliency(model), kc.GuidedBackprop(model)
    alone = saliency(x, targets=0), guided(x, targets=0)
    assert not np.allclose(alone[0], alone[1])  # the two differ, so mixing them up would show
    got = _run_together(lambda: saliency(x, targets=0), lambda: guided(x, targets=0))
    for maps in got[0]:
        np.testing.assert_allclose(maps, alone[0], atol=1e-5)
    for maps in got[1]:
        np.testing.assert_allclose(maps, alone[1], atol=1e-5)


@pytest.mark.backends
def test_one_explainer_shared_by_two_threads(model_and_images):
    model, x = model_and_images
    explainer = kc.GuidedBackprop(model)
    alone = explainer(x, targets=[0, 1, 2])
    for maps in sum(_run_together(lambda: explainer(x, targets=[0, 1, 2]),
                                  lambda: explainer(x, targets=[0, 1, 2])), []):
        np.testing.assert_allclose(maps, alone, atol=1e-5)


@pytest.mark.backends
def test_explainers_of_two_layers_in_two_threads(model_and_images):
    model, x = model_and_images
    first, second = kc.GradCAM(model, layer="conv1"), kc.LayerCAM(model, layer="conv2")
    alone = first(x), second(x)
    got = _run_together(lambda: first(x), lambda: second(x))
    for i in range(2):
        for maps in got[i]:
            np.testing.assert_allclose(maps, alone[i], atol=1e-5)


@pytest.mark.backends
def test_plain_model_calls_in_another_thread_while_feature_maps_and_filters_run(model_and_images):
    model, x = model_and_images
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    maps = kc.feature_maps(model, "conv1", x)
    viz = kc.FilterVisualizer(model, "conv2")
    patterns = viz.visualize(filters=[0, 1], size=16, steps=2)
    got = _run_together(lambda: keras.ops.convert_to_numpy(model(x, training=False)),
                        lambda: kc.feature_maps(model, "conv1", x),
                        lambda: viz.visualize(filters=[0, 1], size=16, steps=2), rounds=3)
    for out in got[0]:
        np.testing.assert_allclose(out, expected, atol=1e-5)
    for out in got[1]:
        np.testing.assert_allclose(out, maps, atol=1e-5)
    for out in got[2]:
        np.testing.assert_array_equal(out, patterns)


@pytest.mark.backends
def test_the_logits_patch_is_not_seen_by_other_threads():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, out)
    images = np.random.default_rng(1).random((2, 16, 16, 3)).astype("float32")
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    explainer = kc.GradCAM(model)
    got = _run_together(lambda: explainer(images), lambda: keras.ops.convert_to_numpy(model(images)))
    for out in got[1]:
        np.testing.assert_allclose(out, probabilities, atol=1e-6)  # probabilities, never logits
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert "call" not in model.get_layer("head").__dict__ and "activation" in model.get_layer("head").__dict__
    assert model.get_layer("head").activation is keras.activations.softmax
