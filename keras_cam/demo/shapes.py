"""The shapes demo: train a small CNN with a `CAMHead` on synthetic shapes and score its CAMs.

Everything is generated, so it runs offline and every heatmap can be checked against the true object mask
(`keras-cam demo`, or `make demo`).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam import datasets, metrics, visualize
from keras_cam.callbacks import CAMSnapshot
from keras_cam.comparison import DEFAULT_METRICS, RANDOM, compare_methods
from keras_cam.explainers import class_activation_maps
from keras_cam.layers import CAMHead

DEFAULT_EPOCHS = 10
CLASSES = ("circle", "square", "triangle")
_TILES = 16  # images per grid
_SNAPSHOTS = 8  # held-out images watched during training


def build_demo_model(
    input_shape: Tuple[int, int, int] = (48, 48, 3),
    num_classes: int = 3,
    width: int = 16,
    name: str = "shapes_cnn",
) -> keras.Model:
    """A small all-convolutional classifier ending in a `CAMHead`, made for sharp CAMs.

    Four conv-BN-ReLU blocks and two poolings only, so the head sees a feature map at 1/4 of the input
    resolution (12x12 for a 48x48 input): a CAM has the feature map's resolution, and no Flatten or Dense
    layer loses where things are. The last block's receptive field (26 pixels) covers a whole shape.

    Args:
        input_shape: `(height, width, channels)` of the images.
        num_classes: number of classes.
        width: filters of the first block (doubled after each pooling).
        name: model name.

    Returns:
        A Sequential model (not compiled); the head is the layer named `"cam_head"` and its input the
        output of the layer named `"features"`.

    Example:

    >>> from keras_cam.demo import build_demo_model
    >>> build_demo_model((48, 48, 3), 3).output_shape
    (None, 3)
    """

    def block(filters: int, block_name: str) -> list:
        return [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{block_name}_conv"),
            # momentum 0.9: the moving statistics must keep up with a model trained for only a few hundred
            # steps, or inference-mode predictions lag behind training-mode ones.
            keras.layers.BatchNormalization(momentum=0.9, name=f"{block_name}_bn"),
            keras.layers.Activation("relu", name=block_name),
        ]

    layers = [keras.Input(input_shape, name="image")]
    layers += block(width, "block1") + [keras.layers.MaxPooling2D(name="pool1")]
    layers += block(2 * width, "block2") + [keras.layers.MaxPooling2D(name="pool2")]
    layers += block(4 * width, "block3")
    layers += block(4 * width, "features")
    layers += [CAMHead(num_classes, name="cam_head")]
    return keras.Sequential(layers, name=name)


def train_demo_model(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
    verbose: int = 0,
    callbacks: Optional[Sequence[keras.callbacks.Callback]] = None,
) -> keras.callbacks.History:
    """Compiles and trains `model` the way the demo does (Adam, cosine-decayed learning rate).

    Args:
        model: e.g. `build_demo_model(...)`; compiled here.
        images: float32 `(N, H, W, 3)` training images.
        labels: int `(N,)` class indices.
        epochs: training epochs.
        batch_size: training batch size.
        verbose: `fit` verbosity.
        callbacks: passed to `fit` (the demo passes a `CAMSnapshot`).

    Returns:
        The `History` returned by `fit`.
    """
    steps = epochs * int(np.ceil(len(images) / batch_size))
    # A high rate leaves the initial plateau fast; decaying it lets the last epochs settle the weights, and
    # with them the BatchNormalization statistics that inference uses.
    learning_rate = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose,
                     callbacks=list(callbacks or []))


def run_demo(
    out_dir: str = "demo_out",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    n_train: int = 3000,
    n_val: int = 300,
    size: int = 48,
    batch_size: int = 32,
    verbose: int = 1,
    classes: Sequence[str] = CLASSES,
    compare: bool = True,
    n_compare: int = 96,
) -> Dict[str, Any]:
    """Trains `build_demo_model` on `make_shapes`, prints accuracy and pointing game, writes pictures.

    Writes to `out_dir`:
    - `snapshots/epoch_NNN.png`, `snapshots/evolution.png` and `.gif`: a `CAMSnapshot` attached to the
      training shows the CAMs of 8 held-out images after every epoch; with their masks it puts the pointing
      game of those images in the training logs (`pointing_game_per_epoch` in the summary);
    - `class_<name>.png` (CAM overlays of validation images of each class, for their true class),
      `correct.png` and `wrong.png` (overlays for the predicted class; `wrong.png` is skipped when every
      prediction is right, noted in the summary);
    - with `compare`, `methods.md` and `methods.png`: every explainer on `n_compare` held-out images, scored
      with `kc.metrics.compare_methods` (pointing game, energy pointing game, deletion and insertion AUC,
      time per image), and their heatmaps side by side;
    - `summary.json`.

    The demo owns its process, so it seeds every generator with `keras.utils.set_random_seed(seed)`: two
    runs with the same seed on the same backend and machine train the same model.

    Args:
        out_dir: output folder (created if needed).
        epochs: training epochs (>= 1).
        seed: seed of the data and of the training.
        n_train: training images.
        n_val: held-out images used for accuracy, pointing game and pictures.
        size: image height and width.
        batch_size: training batch size.
        verbose: 0 silent, 1 progress bar and results, 2 one line per epoch and results.
        classes: shape classes (names understood by `make_shapes`).
        compare: compare every explainer after training (`methods.md`, `methods.png`).
        n_compare: held-out images used in the comparison (at most `n_val`).

    Returns:
        The summary dict written to `summary.json` (`accuracy`, `pointing_game`, `energy_pointing_game`,
        `chance_pointing_game`, `epochs`, `seed`, `backend`, `keras_version`, `seconds`, `files`, ...).

    Example:

    ```python
    from keras_cam.demo import run_demo
    summary = run_demo("demo_out")   # about a minute on 2 CPU cores
    print(summary["pointing_game"])
    ```
    """
    check_demo_args(epochs=epochs, seed=seed, n_train=n_train, n_val=n_val, batch_size=batch_size,
                    n_compare=n_compare, size=(size, 16))
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)

    keras.utils.set_random_seed(seed)
    classes = tuple(classes)
    x_train, y_train, _ = datasets.make_shapes(n_train, size=size, seed=seed, classes=classes)
    # A different seed stream for the held-out images, so they are never training images.
    x_val, y_val, m_val = datasets.make_shapes(n_val, size=size, seed=seed + 10_000, classes=classes)

    model = build_demo_model((size, size, 3), len(classes))
    say(f"Training a {model.count_params():,}-parameter CNN with a CAMHead on {n_train} synthetic shapes "
        f"({', '.join(classes)}), {epochs} epochs, {keras.backend.backend()} backend.")
    # Watch the maps form: the CAMs of a few held-out images after each epoch, scored against their masks
    # (the callback never changes training: the same seed trains the same weights without it).
    per_epoch, watched = train_watched(model, (x_train, y_train), (x_val, y_val, m_val), classes, out_dir,
                                       _SNAPSHOTS, epochs, batch_size, verbose)
    say(f"pointing game of the {watched} snapshot images, epoch by epoch: "
        + " ".join(f"{v:.2f}" for v in per_epoch))

    probs = keras.ops.convert_to_numpy(model.predict(x_val, batch_size=128, verbose=0))
    pred = probs.argmax(axis=-1)
    accuracy = float(np.mean(pred == y_val))
    # The pointing game asks whether the map of the *true* class peaks on the object.
    cams = class_activation_maps(model, x_val, targets=y_val)
    pointing = float(metrics.pointing_game(cams, m_val))
    energy = float(metrics.energy_pointing_game(cams, m_val))
    chance = float(np.mean(m_val))  # a uniformly random point lands in the mask this often
    say(f"validation accuracy: {accuracy:.2f}")
    say(f"pointing game: {pointing:.2f} (chance {chance:.2f})")
    say(f"energy pointing game: {energy:.2f} (chance {chance:.2f})")

    files = []

    def write(filename: str, image: np.ndarray) -> None:
        path = os.path.join(out_dir, filename)
        visualize.save_image(path, image)
        files.append(filename)

    for c, name in enumerate(classes):
        idx = np.flatnonzero(y_val == c)[:_TILES]
        if idx.size:
            labels = [f"{name} {probs[i, c]:.2f}" for i in idx]
            write(f"class_{name}.png", _overlay_grid(x_val[idx], cams[idx], labels))
    files += [f"snapshots/epoch_{e:03d}.png" for e in range(1, epochs + 1)]
    files += ["snapshots/evolution.png", "snapshots/evolution.gif"]
    right, wrong = np.flatnonzero(pred == y_val), np.flatnonzero(pred != y_val)
    if right.size:
        idx = right[:_TILES]
        write("correct.png", _overlay_grid(x_val[idx], cams[idx], [classes[pred[i]] for i in idx]))
    if wrong.size:
        idx = wrong[:_TILES]
        # What the model looked at when it was wrong: the map of the class it predicted.
        wrong_cams = class_activation_maps(model, x_val[idx], targets=pred[idx])
        labels = [f"{classes[y_val[i]]}->{classes[pred[i]]}" for i in idx]
        write("wrong.png", _overlay_grid(x_val[idx], wrong_cams, labels))
    else:
        say("every validation image was classified correctly: no wrong.png")
        stale = os.path.join(out_dir, "wrong.png")
        if os.path.isfile(stale):  # left by an earlier run; it would contradict this summary
            os.remove(stale)

    methods = None
    if compare:
        idx = np.arange(min(n_compare, n_val))
        say(f"Comparing every explainer on {idx.size} held-out images (their true class)...")
        # The sanity check explains 8 images again on a randomized copy: seconds, not minutes.
        comparison = compare_methods(model, x_val[idx], targets=y_val[idx], masks=m_val[idx],
                                     metrics=DEFAULT_METRICS + ("sanity",), sanity_images=8)
        table = comparison.to_markdown()
        say(table)
        with open(os.path.join(out_dir, "methods.md"), "w") as f:
            f.write(_methods_page(table, idx.size, size, keras.backend.backend()))
        files.append("methods.md")
        write("methods.png", _methods_grid(x_val, comparison.heatmaps, classes, y_val))
        methods = [{k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v)
                    for k, v in row.items()} for row in comparison.rows]

    summary = {
        "accuracy": round(accuracy, 4),
        "pointing_game": round(pointing, 4),
        "energy_pointing_game": round(energy, 4),
        "chance_pointing_game": round(chance, 4),
        "pointing_game_per_epoch": per_epoch,
        "methods": methods,
        "wrong_predictions": int(wrong.size),
        "note": None if wrong.size else "every validation image was classified correctly; no wrong.png",
    }
    return write_summary(out_dir, summary, files, start, say, epochs=epochs, seed=seed, n_train=n_train,
                         n_val=n_val, size=size, classes=list(classes))


def write_summary(out_dir: str, summary: Dict[str, Any], files: list, start: float, say: Callable,
                  **settings: Any) -> Dict[str, Any]:
    """Completes a demo's summary (its settings, backend, files, seconds), writes `summary.json`, says so."""
    summary.update({k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in settings.items()})
    summary.update(backend=keras.backend.backend(), keras_version=keras.__version__,
                   files=list(files) + ["summary.json"])
    summary["seconds"] = round(time.perf_counter() - start, 2)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    say(f"wrote {', '.join(summary['files'])} to {out_dir}/ in {summary['seconds']:.0f} s")
    return summary


def check_demo_args(seed: Any, size: Tuple[Any, int], **counts: Any) -> None:
    """One clear error for a demo argument that is not a positive integer (`size`: (value, its minimum))."""
    for arg, value, low in [(k, v, 1) for k, v in counts.items()] + [("size", size[0], size[1])]:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{arg}` must be an integer >= {low}, got {value!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}.")


def train_watched(model: keras.Model, train: Tuple[np.ndarray, np.ndarray],
                  val: Tuple[np.ndarray, np.ndarray, np.ndarray], classes: Sequence[str], out_dir: str,
                  n_snapshots: int, epochs: int, batch_size: int, verbose: int) -> Tuple[list, int]:
    """Trains with a `CAMSnapshot` of up to `n_snapshots` held-out examples (classes in turn) and their masks,
    written to `out_dir/snapshots`; returns their pointing game after each epoch (from the training logs) and
    how many were watched."""
    x_val, y_val, m_val = val
    idx = balanced(y_val, len(classes), n_snapshots)
    snapshot = CAMSnapshot(x_val[idx], method="cam", targets=y_val[idx], masks=m_val[idx],
                           output_dir=os.path.join(out_dir, "snapshots"), class_names=classes)
    clear_snapshots(snapshot.output_dir)
    history = train_demo_model(model, *train, epochs=epochs, batch_size=batch_size, verbose=verbose,
                               callbacks=[snapshot])
    return [round(float(v), 4) for v in history.history.get("cam_pointing_game", [])], len(idx)


def balanced(labels: np.ndarray, num_classes: int, n: int) -> np.ndarray:
    """Up to `n` indices, taking the classes in turn (circle, square, triangle, circle, ...)."""
    per_class = [list(np.flatnonzero(labels == c)) for c in range(num_classes)]
    picked = []
    while len(picked) < n and any(per_class):
        for queue in per_class:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return np.array(picked, dtype=np.int64)


def clear_snapshots(directory: str) -> None:
    # Frames of an earlier, longer run would join this run's evolution strip.
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith("epoch_") and name.endswith(".png"):
                os.remove(os.path.join(directory, name))


def _methods_grid(images: np.ndarray, heatmaps: Dict[str, np.ndarray], classes: Sequence[str],
                  labels: np.ndarray) -> np.ndarray:
    """One row per method (the random reference left out), the same held-out images in the columns."""
    cols = balanced(labels[: len(next(iter(heatmaps.values())))], len(classes), 6)
    tiles, names = [], []
    for method, maps in heatmaps.items():
        if method == RANDOM:
            continue
        for j, i in enumerate(cols):
            tiles.append(_upscale(visualize.overlay(images[i], maps[i], alpha=0.4), 2))
            names.append(method if j == 0 else "")
    return visualize.image_grid(tiles, cols=len(cols), margin=3, labels=names)


def _methods_page(table: str, n: int, size: int, backend: str) -> str:
    return (
        "# Every explainer on the demo model\n\n"
        f"{n} held-out `make_shapes` images ({size}x{size}), each explained for its true class at the layer "
        f"feeding the CAMHead; {backend} backend, 2-call timing (the first call compiles).\n\n"
        + table
        + "\n- pointing game: share of maps whose maximum lies on the object (chance: the object's area).\n"
        "- energy pointing game: share of the map's mass on the object.\n"
        "- deletion AUC: the class probability as the highest-ranked pixels are removed (lower: the map found "
        "what the model needs).\n"
        "- insertion AUC: the class probability as they are put back on a blurred image (higher is better).\n"
        "- average drop %: how much of the class probability is lost on image × map (lower is better); "
        "increase in confidence %: the share of images whose probability rises on it (higher is better).\n"
        "- sanity ρ: Spearman correlation of each map with the same method's map after every layer's "
        "weights are randomized (8 images); near 1: the map does not depend on what the model learned.\n"
        "- random (reference): uniformly random maps, what any useful method must beat.\n"
    )


def _overlay_grid(
    images: np.ndarray, heatmaps: np.ndarray, labels: Optional[Sequence[str]] = None
) -> np.ndarray:
    tiles = np.stack([visualize.overlay(img, cam, alpha=0.4) for img, cam in zip(images, heatmaps)])
    tiles = np.stack([_upscale(t, 3) for t in tiles])  # 48x48 tiles are too small to read
    return visualize.image_grid(tiles, cols=min(len(tiles), 8), labels=labels)


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
