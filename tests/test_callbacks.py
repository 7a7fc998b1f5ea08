"""Training callbacks: files, logs, resume, no retracing, no effect on training, early errors."""
import os
import random

import cv2
import keras
import numpy as np
import pytest

import keras_cam as kc

BACKEND = keras.backend.backend()
SIZE = 32


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.Dropout(0.3),
        kc.CAMHead(3, name="cam_head"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def data():
    x, y, masks = kc.datasets.make_shapes(96, size=SIZE, seed=3)
    return x, y, masks


def fit(model, data, callbacks, epochs=2, **kwargs):
    x, y, _ = data
    keras.utils.set_random_seed(7)
    return model.fit(x[:64], y[:64], batch_size=16, epochs=epochs, shuffle=True, verbose=0,
                     validation_data=(x[64:80], y[64:80]), callbacks=callbacks, **kwargs)


def _global_random_draws():
    """What the next draws of Python's, numpy's and Keras' global generators will be (consumes them)."""
    keras_draw = keras.ops.convert_to_numpy(keras.random.uniform((4,)))  # Keras' global SeedGenerator
    return random.random(), np.random.random(), keras_draw


@pytest.mark.backends
def test_callbacks_do_not_change_training(data, tmp_path):
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    x, y, masks = data
    plain = small_model()
    fit(plain, data, [])
    plain_draws = _global_random_draws()
    watched = small_model()
    callbacks = [
        kc.callbacks.CAMSnapshot(x[80:84], targets=y[80:84], masks=masks[80:84], output_dir=tmp_path / "cam"),
        kc.callbacks.FeatureMapSnapshot(x[80:82], layer="conv1", output_dir=tmp_path / "maps"),
        kc.callbacks.FilterSnapshot("conv2", filters=4, steps=3, output_dir=tmp_path / "filters"),
    ]
    history = fit(watched, data, callbacks)
    for a, b in zip(plain.get_weights(), watched.get_weights()):
        np.testing.assert_array_equal(a, b)  # the same Dropout draws, gradients and updates
    for a, b in zip(plain.optimizer.variables, watched.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # The callbacks drew nothing from the global generators (Python, numpy, Keras' SeedGenerator).
    for a, b in zip(plain_draws, _global_random_draws()):
        np.testing.assert_array_equal(a, b)
    assert len(history.history["cam_pointing_game"]) == 2
    assert all(0.0 <= v <= 1.0 for v in history.history["cam_pointing_game"])
    for name in ("cam", "maps", "filters"):
        files = set(os.listdir(tmp_path / name))
        assert {"epoch_001.png", "epoch_002.png", "evolution.png", "evolution.gif"} <= files, (name, files)
    maps = cv2.imread(str(tmp_path / "maps" / "epoch_002.png"))
    assert maps.shape[1] > 2 * SIZE and maps.std() > 0  # two mosaics of real activations side by side


@pytest.mark.backends
def test_batch_norm_statistics_untouched_and_steps_per_epoch(data, tmp_path):
    x, y, masks = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(8, 3, padding="same", name="conv1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        kc.CAMHead(3, name="cam_head"),
    ])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    snap = kc.callbacks.CAMSnapshot(x[80:84], layer="conv1", masks=masks[80:84], output_dir=tmp_path)

    class BatchNormStats(keras.callbacks.Callback):
        """Records the BatchNorm statistics at each epoch end, where it sits in the callback list."""

        def __init__(self):
            super().__init__()
            self.seen = {}

        def on_epoch_end(self, epoch, logs=None):
            self.seen[epoch] = [keras.ops.convert_to_numpy(v).copy()
                                for v in model.get_layer("bn").non_trainable_variables]

    before, after = BatchNormStats(), BatchNormStats()
    history = model.fit(x[:64], y[:64], batch_size=8, epochs=2, steps_per_epoch=3, verbose=0,
                        callbacks=[before, snap, after])
    for epoch in (0, 1):
        for a, b in zip(before.seen[epoch], after.seen[epoch]):
            np.testing.assert_array_equal(a, b)
    assert len(history.history["cam_pointing_game"]) == 2
    frames = sorted(n for n in os.listdir(tmp_path) if n.startswith("epoch_"))
    assert frames == ["epoch_001.png", "epoch_002.png"]


@pytest.mark.backends
def test_cam_snapshot_files_logs_and_no_retracing(data, tmp_path):
    x, y, masks = data
    traces = []

    class Counting(kc.GradCAM):
        def compute_cam(self, a, g, t):
            traces.append(1)
            return super().compute_cam(a, g, t)

    model = small_model()
    snap = kc.callbacks.CAMSnapshot(x[80:85], method=Counting(model), targets=y[80:85], masks=masks[80:85],
                                    output_dir=tmp_path)
    history = fit(model, data, [snap], epochs=3)
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.startswith("epoch_")] == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    assert {"evolution.png", "evolution.gif"} <= set(names)
    frame = cv2.imread(str(tmp_path / "epoch_001.png"))
    evolution = cv2.imread(str(tmp_path / "evolution.png"))
    assert frame.shape[1] >= 5 * SIZE and evolution.shape[0] >= 3 * frame.shape[0]
    # The pointing game in the logs is the one of the heatmaps on the last epoch's weights.
    heatmaps = kc.GradCAM(model).explain(x[80:85], targets=y[80:85])
    assert history.history["cam_pointing_game"][-1] == pytest.approx(kc.metrics.pointing_game(heatmaps, masks[80:85]))
    if BACKEND != "torch":  # torch runs eagerly: nothing is traced
        assert len(traces) == 1


def test_every_and_resume_continue_numbering(data, tmp_path):
    model = small_model()
    x, y, _ = data
    snap = kc.callbacks.CAMSnapshot(x[80:82], output_dir=tmp_path, every=2)
    fit(model, data, [snap], epochs=3)
    # every=2 -> epochs 2 and the last one (3)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("epoch_")) == ["epoch_002.png", "epoch_003.png"]
    first = cv2.imread(str(tmp_path / "epoch_002.png"))
    resumed = kc.callbacks.CAMSnapshot(x[80:82], output_dir=tmp_path, every=1)
    fit(model, data, [resumed], epochs=5, initial_epoch=3)
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("epoch_"))
    assert names == ["epoch_002.png", "epoch_003.png", "epoch_004.png", "epoch_005.png"]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "epoch_002.png")), first)  # not overwritten
    evolution = cv2.imread(str(tmp_path / "evolution.png"))
    assert evolution.shape[0] >= 4 * first.shape[0]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorBoard summaries are checked once, on TensorFlow")
def test_tensorboard_events(data, tmp_path):
    x, y, _ = data
    snap = kc.callbacks.CAMSnapshot(x[80:82], output_dir=tmp_path / "png", log_dir=tmp_path / "tb")
    fit(small_model(), data, [snap], epochs=2)
    events = [f for f in os.listdir(tmp_path / "tb") if f.startswith("events.out.tfevents")]
    assert events and os.path.getsize(tmp_path / "tb" / events[0]) > 1000


def test_bad_arguments_fail_before_training(data, tmp_path):
    x, y, _ = data
    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    cases = [
        (kc.callbacks.CAMSnapshot(x[:2], layer="conv9", output_dir=tmp_path), "not found"),
        (kc.callbacks.CAMSnapshot(x[:2], method="gradkam", output_dir=tmp_path), "Unknown method"),
        (kc.callbacks.CAMSnapshot(x[:2, :16, :16], output_dir=tmp_path), "height 16 but the model expects 32"),
        (kc.callbacks.FeatureMapSnapshot(x[:2], layer="nope", output_dir=tmp_path), "not found"),
        (kc.callbacks.FilterSnapshot("conv2", filters=[40], output_dir=tmp_path), "out of range"),
    ]
    for callback, message in cases:
        with pytest.raises(ValueError, match=message):
            fit(model, data, [callback], epochs=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        fit(model, data, [kc.callbacks.CAMSnapshot(x[:2], output_dir=blocker / "sub")], epochs=1)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing was trained
    with pytest.raises(ValueError, match="every"):
        kc.callbacks.CAMSnapshot(x[:2], every=0)


# --------------------------------------------------------------------------------------------- epoch metrics

@pytest.mark.backends
def test_cam_snapshot_metrics_are_in_every_epochs_logs(tmp_path):
    import csv

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
                              kc.CAMHead(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y, masks = kc.datasets.make_shapes(24, size=24, seed=2)
    snap = kc.callbacks.CAMSnapshot(x[:4], targets=y[:4], masks=masks[:4], every=2, output_dir=tmp_path / "cams")
    log = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0,
                        callbacks=[snap, keras.callbacks.CSVLogger(str(log))])
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(0.0 <= float(r["cam_pointing_game"]) <= 1.0 for r in rows)
    assert [float(r["cam_pointing_game"]) for r in rows] == pytest.approx(history.history["cam_pointing_game"])
    # Pictures every 2 epochs (and the last): epochs 2 and 3.
    assert sorted(p.name for p in (tmp_path / "cams").glob("epoch_*.png")) == ["epoch_002.png", "epoch_003.png"]
