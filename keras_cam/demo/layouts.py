"""The embedded demos for the other layouts: a Conv1D network on signals, a Conv3D network on volumes.

Both end in a `CAMHead` and are scored against the true motif / solid masks of `kc.datasets.make_signals`
and `kc.datasets.make_volumes` (`keras-cam demo --data signals`, `--data volumes`).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam import datasets, metrics, visualize
from keras_cam.demo.shapes import check_demo_args, train_watched, write_summary
from keras_cam.explainers import GradCAM, class_activation_maps
from keras_cam.layers import CAMHead

# Per dataset: what to generate, how wide the network is, and how long the demo trains by default. Both
# reach a pointing game above 0.9 in well under a minute on 2 CPU cores (TensorFlow).
_SETTINGS = {
    "signals": dict(classes=("sine", "square", "chirp"), size=256, n_train=2000, n_val=300, width=16,
                    epochs=8),
    "volumes": dict(classes=("ball", "cube", "cross"), size=24, n_train=600, n_val=150, width=16, epochs=8),
}
LAYOUT_DATA = tuple(_SETTINGS)
_PER_CLASS = 4  # pictures per class
_SNAPSHOTS = 6  # held-out examples watched during training
_LABEL_STRIP = 18  # pixels


def build_layout_model(
    input_shape: Tuple[int, ...],
    num_classes: int = 3,
    width: int = 16,
    name: str = "layout_cnn",
) -> keras.Model:
    """A small all-convolutional Conv1D or Conv3D classifier ending in a `CAMHead`.

    The same plan as the shapes demo's network: four conv-BN-ReLU blocks, two poolings, so the head sees
    the features at 1/4 of the input's resolution along each spatial axis.

    Args:
        input_shape: `(length, channels)` for signals (Conv1D) or `(depth, height, width, channels)` for
            volumes (Conv3D), channels last.
        num_classes: number of classes.
        width: filters of the first block (doubled after each pooling).
        name: model name.

    Returns:
        A Sequential model (not compiled); the head is the layer named `"cam_head"`, its input the output of
        the layer named `"features"`.

    Example:

    >>> from keras_cam.demo import build_layout_model
    >>> build_layout_model((256, 1), 3).get_layer("features").output.shape
    (None, 64, 64)
    """
    rank = len(input_shape) - 1
    if rank not in (1, 3):
        raise ValueError(f"`input_shape` must be (length, channels) or (depth, height, width, channels), "
                         f"got {tuple(input_shape)}; build_demo_model makes the 2-D network.")
    conv = {1: keras.layers.Conv1D, 3: keras.layers.Conv3D}[rank]
    pool = {1: keras.layers.MaxPooling1D, 3: keras.layers.MaxPooling3D}[rank]

    def block(filters: int, block_name: str) -> list:
        return [
            conv(filters, 3, padding="same", use_bias=False, name=f"{block_name}_conv"),
            keras.layers.BatchNormalization(momentum=0.9, name=f"{block_name}_bn"),
            keras.layers.Activation("relu", name=block_name),
        ]

    layers = [keras.Input(tuple(input_shape), name="input")]
    layers += block(width, "block1") + [pool(name="pool1")]
    layers += block(2 * width, "block2") + [pool(name="pool2")]
    layers += block(4 * width, "block3") + block(4 * width, "features")
    layers += [CAMHead(num_classes, name="cam_head")]
    return keras.Sequential(layers, name=name)


def run_layout_demo(
    data: str = "signals",
    out_dir: str = "demo_out",
    epochs: int | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    size: int | None = None,
    batch_size: int = 32,
    verbose: int = 1,
) -> Dict[str, Any]:
    """Trains `build_layout_model` on signals or volumes, prints accuracy and pointing game, writes pictures.

    Writes to `out_dir`:
    - `snapshots/epoch_NNN.png`, `snapshots/evolution.png` and `.gif`: a `CAMSnapshot` of a few held-out
      examples after every epoch, scored against their masks (`pointing_game_per_epoch` in the summary);
    - `class_<name>.png`: CAMs of held-out examples of each class, for their true class, with the true
      mask (signals: `kc.overlay_signal` line plots with the motif marked below; volumes:
      `kc.volume_montage` slices through the map's peak, the solid outlined);
    - `summary.json` (accuracy, pointing games of CAM and Grad-CAM, chance level, ...).

    Args:
        data: "signals" (a Conv1D network on `make_signals`) or "volumes" (a Conv3D network on
            `make_volumes`).
        out_dir: output folder (created if needed).
        epochs: training epochs (None: 8).
        seed: seed of the data and of the training.
        n_train: training examples (None: 2000 signals, 600 volumes).
        n_val: held-out examples (None: 300 signals, 150 volumes).
        size: signal length or volume side (None: 256 samples, 24 voxels).
        batch_size: training batch size.
        verbose: 0 silent, 1 progress bar and results, 2 one line per epoch and results.

    Returns:
        The summary dict written to `summary.json`.

    Example:

    ```python
    from keras_cam.demo import run_layout_demo
    summary = run_layout_demo("volumes", "demo_volumes")   # under a minute on 2 CPU cores
    print(summary["pointing_game"])
    ```
    """
    epochs, n_train, n_val, size = _resolved(data, epochs, n_train, n_val, size, seed, batch_size)
    settings = _SETTINGS[data]
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)

    keras.utils.set_random_seed(seed)
    classes = settings["classes"]
    make = datasets.make_signals if data == "signals" else datasets.make_volumes
    x_train, y_train, _ = make(n_train, size, seed=seed, classes=classes)
    x_val, y_val, m_val = make(n_val, size, seed=seed + 10_000, classes=classes)  # never training examples

    model = build_layout_model(x_train.shape[1:], len(classes), width=settings["width"],
                               name=f"{data}_cnn")
    kind = "Conv1D" if data == "signals" else "Conv3D"
    say(f"Training a {model.count_params():,}-parameter {kind} network with a CAMHead on {n_train} synthetic "
        f"{data} ({', '.join(classes)}), {epochs} epochs, {keras.backend.backend()} backend.")
    per_epoch, _ = train_watched(model, (x_train, y_train), (x_val, y_val, m_val), classes, out_dir,
                                 _SNAPSHOTS, epochs, batch_size, verbose)

    scores, cams, probs = _scores(model, x_val, y_val, m_val, say)

    files = _class_pictures(data, classes, (x_val, y_val, m_val), cams, probs, out_dir)
    files += [f"snapshots/epoch_{e:03d}.png" for e in range(1, epochs + 1)]
    files += ["snapshots/evolution.png", "snapshots/evolution.gif"]
    summary = {"data": data, **scores, "pointing_game_per_epoch": per_epoch}
    return write_summary(out_dir, summary, files, start, say, epochs=epochs, seed=seed, n_train=n_train,
                         n_val=n_val, size=size, classes=list(classes))


def _resolved(data: str, epochs: Optional[int], n_train: Optional[int], n_val: Optional[int],
              size: Optional[int], seed: int, batch_size: int) -> Tuple[int, int, int, int]:
    """The run's epochs, n_train, n_val and size (the dataset's defaults for None), checked."""
    if data not in _SETTINGS:
        raise ValueError(f"`data` must be one of {', '.join(map(repr, LAYOUT_DATA))}, got {data!r}; "
                         "run_demo is the shapes demo.")
    settings = _SETTINGS[data]
    epochs = settings["epochs"] if epochs is None else epochs
    n_train = settings["n_train"] if n_train is None else n_train
    n_val = settings["n_val"] if n_val is None else n_val
    size = settings["size"] if size is None else size
    check_demo_args(epochs=epochs, seed=seed, n_train=n_train, n_val=n_val, batch_size=batch_size,
                    size=(size, 64 if data == "signals" else 16))
    return epochs, n_train, n_val, size


def _scores(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray, m_val: np.ndarray,
            say: Any) -> Tuple[Dict[str, float], np.ndarray, np.ndarray]:
    """Accuracy and pointing games on the held-out examples (printed), their CAMs and class probabilities."""
    probs = keras.ops.convert_to_numpy(model.predict(x_val, batch_size=64, verbose=0))
    accuracy = float(np.mean(probs.argmax(axis=-1) == y_val))
    # The pointing game asks whether the map of the *true* class peaks on the motif / solid.
    cams = class_activation_maps(model, x_val, targets=y_val)
    pointing = float(metrics.pointing_game(cams, m_val))
    energy = float(metrics.energy_pointing_game(cams, m_val))
    gradcam = float(metrics.pointing_game(GradCAM(model)(x_val, targets=y_val), m_val))
    chance = float(np.mean(m_val))
    say(f"validation accuracy: {accuracy:.2f}")
    say(f"pointing game: {pointing:.2f} (chance {chance:.2f}); Grad-CAM: {gradcam:.2f}")
    say(f"energy pointing game: {energy:.2f} (chance {chance:.2f})")
    scores = {"accuracy": accuracy, "pointing_game": pointing, "gradcam_pointing_game": gradcam,
              "energy_pointing_game": energy, "chance_pointing_game": chance}
    return {k: round(v, 4) for k, v in scores.items()}, cams, probs


def _class_pictures(data: str, classes: Sequence[str], val: Tuple[np.ndarray, np.ndarray, np.ndarray],
                    cams: np.ndarray, probs: np.ndarray, out_dir: str) -> List[str]:
    """Writes `class_<name>.png` (a few held-out examples of each class with their CAM and true mask);
    returns the file names."""
    x_val, y_val, m_val = val
    files = []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(y_val == c)[:_PER_CLASS]
        if not idx.size:
            continue
        if data == "signals":
            tiles = [visualize.overlay_signal(x_val[i], cams[i], height=120, width=512, mask=m_val[i])
                     for i in idx]
        else:
            tiles = [visualize.volume_montage(x_val[i], cams[i], count=4, cols=4, mask=m_val[i], scale=3)
                     for i in idx]
        # A black strip above each picture for its label (a montage labels its own slices).
        tiles = [np.pad(t, ((_LABEL_STRIP, 0), (0, 0), (0, 0))) for t in tiles]
        picture = visualize.image_grid(tiles, cols=1, labels=[f"{name}, p = {probs[i, c]:.2f}" for i in idx])
        filename = f"class_{name}.png"
        visualize.save_image(os.path.join(out_dir, filename), picture)
        files.append(filename)
    return files
