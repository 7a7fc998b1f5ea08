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
from keras_cam.explainers import GradCAM, LRP, class_activation_maps
from keras_cam.layers import CAMHead

DEFAULT_EPOCHS = 10
CLASSES = ("circle", "square", "triangle")
_TILES = 16  # images per grid
_SNAPSHOTS = 8  # held-out images watched during training
LRP_COMPOSITE = "epsilon_plus_flat"  # the demo's LRP picture (lrp.png, the README's)


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
    - `snapshots/epoch_NNN.png`, `evolution.png` and `.gif`: a `CAMSnapshot`'s CAMs of 8 held-out images
      after every epoch, their pointing game in the training logs (the summary's `pointing_game_per_epoch`);
    - `class_<name>.png` (CAM overlays of validation images of each class, for their true class),
      `correct.png` and `wrong.png` (for the predicted class; no `wrong.png` when every prediction is right);
    - `lrp.png`: six images, their Grad-CAM and their signed LRP relevance (`epsilon_plus_flat`, "bwr": red
      for the class, blue against it); the LRP pointing games go in the summary (`lrp`);
    - with `compare`, `methods.md` and `methods.png`: every explainer (LRP too) on `n_compare` held-out
      images, scored with `kc.metrics.compare_methods`, and their heatmaps side by side;
    - `summary.json`.

    Every generator is seeded (`keras.utils.set_random_seed(seed)`): a seed trains the same model again.

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
        `chance_pointing_game`, `lrp`, `methods`, `epochs`, `seed`, `backend`, `seconds`, `files`, ...).

    Example:

    ```python
    from keras_cam.demo import run_demo
    summary = run_demo("demo_out")   # a few minutes on 2 CPU cores
    print(summary["pointing_game"], summary["lrp"]["pointing_game"])
    ```
    """
    check_demo_args(epochs=epochs, seed=seed, n_train=n_train, n_val=n_val, batch_size=batch_size,
                    n_compare=n_compare, size=(size, 16))
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    classes = tuple(classes)
    train = datasets.make_shapes(n_train, size=size, seed=seed, classes=classes)[:2]
    # A different seed stream for the held-out images, so they are never training images.
    val = datasets.make_shapes(n_val, size=size, seed=seed + 10_000, classes=classes)
    model = build_demo_model((size, size, 3), len(classes))
    say(f"Training a {model.count_params():,}-parameter CNN with a CAMHead on {n_train} synthetic shapes "
        f"({', '.join(classes)}), {epochs} epochs, {keras.backend.backend()} backend.")
    # Watch the maps form: the CAMs of a few held-out images after each epoch, scored against their masks
    # (the callback never changes training: the same seed trains the same weights without it).
    per_epoch, watched = train_watched(model, train, val, classes, out_dir, _SNAPSHOTS, epochs, batch_size,
                                       verbose)
    say(f"pointing game of the {watched} snapshot images, epoch by epoch: "
        + " ".join(f"{v:.2f}" for v in per_epoch))
    pictures = _DemoPictures(out_dir, model, val, classes, say)
    summary = pictures.cams()
    pictures.files += [f"snapshots/{n}" for n in _snapshot_names(epochs)]
    summary.update(pointing_game_per_epoch=per_epoch, **pictures.predictions())
    summary["lrp"] = pictures.lrp()
    summary["methods"] = pictures.methods(min(n_compare, n_val)) if compare else None
    return write_summary(out_dir, summary, pictures.files, start, say, epochs=epochs, seed=seed,
                         n_train=n_train, n_val=n_val, size=size, classes=list(classes))


def _snapshot_names(epochs: int) -> list:
    return [f"epoch_{e:03d}.png" for e in range(1, epochs + 1)] + ["evolution.png", "evolution.gif"]


class _DemoPictures:
    """The trained demo model's scores and pictures on the held-out images, written to `out_dir` and listed
    in `files` in the order they are written."""

    def __init__(self, out_dir: str, model: keras.Model, val: Tuple[np.ndarray, np.ndarray, np.ndarray],
                 classes: Sequence[str], say: Callable):
        self.out_dir, self.model, self.classes, self.say = out_dir, model, classes, say
        self.x, self.y, self.masks = val
        self.files: list = []

    def write(self, filename: str, image: np.ndarray) -> None:
        visualize.save_image(os.path.join(self.out_dir, filename), image)
        self.files.append(filename)

    def cams(self) -> Dict[str, Any]:
        """Accuracy, the pointing games of the CAMs (true class) and `class_<name>.png`."""
        self.probs = keras.ops.convert_to_numpy(self.model.predict(self.x, batch_size=128, verbose=0))
        self.pred = self.probs.argmax(axis=-1)
        accuracy = float(np.mean(self.pred == self.y))
        # The pointing game asks whether the map of the *true* class peaks on the object.
        self.maps = class_activation_maps(self.model, self.x, targets=self.y)
        pointing = float(metrics.pointing_game(self.maps, self.masks))
        energy = float(metrics.energy_pointing_game(self.maps, self.masks))
        chance = float(np.mean(self.masks))  # a uniformly random point lands in the mask this often
        self.say(f"validation accuracy: {accuracy:.2f}")
        self.say(f"pointing game: {pointing:.2f} (chance {chance:.2f})")
        self.say(f"energy pointing game: {energy:.2f} (chance {chance:.2f})")
        for c, name in enumerate(self.classes):
            idx = np.flatnonzero(self.y == c)[:_TILES]
            if idx.size:
                labels = [f"{name} {self.probs[i, c]:.2f}" for i in idx]
                self.write(f"class_{name}.png", _overlay_grid(self.x[idx], self.maps[idx], labels))
        return {"accuracy": round(accuracy, 4), "pointing_game": round(pointing, 4),
                "energy_pointing_game": round(energy, 4), "chance_pointing_game": round(chance, 4)}

    def predictions(self) -> Dict[str, Any]:
        """`correct.png` and `wrong.png`: CAMs of the predicted class (no `wrong.png` when none is wrong)."""
        right, wrong = np.flatnonzero(self.pred == self.y), np.flatnonzero(self.pred != self.y)
        if right.size:
            idx = right[:_TILES]
            labels = [self.classes[self.pred[i]] for i in idx]
            self.write("correct.png", _overlay_grid(self.x[idx], self.maps[idx], labels))
        stale = os.path.join(self.out_dir, "wrong.png")
        if wrong.size:
            idx = wrong[:_TILES]
            # What the model looked at when it was wrong: the map of the class it predicted.
            wrong_maps = class_activation_maps(self.model, self.x[idx], targets=self.pred[idx])
            labels = [f"{self.classes[self.y[i]]}->{self.classes[self.pred[i]]}" for i in idx]
            self.write("wrong.png", _overlay_grid(self.x[idx], wrong_maps, labels))
        else:
            self.say("every validation image was classified correctly: no wrong.png")
            if os.path.isfile(stale):  # left by an earlier run; it would contradict this summary
                os.remove(stale)
        note = None if wrong.size else "every validation image was classified correctly; no wrong.png"
        return {"wrong_predictions": int(wrong.size), "note": note}

    def lrp(self) -> Dict[str, Any]:
        """`lrp.png`: images of each class in turn, their Grad-CAM and their signed LRP relevance (red for the
        class, blue against it); the LRP pointing games over every held-out image (true class)."""
        signed = LRP(self.model, composite=LRP_COMPOSITE).explain(self.x, targets=self.y, normalize=False)
        maps = np.maximum(signed, 0.0)  # what speaks for the class, as LRP's own maps
        pointing = float(metrics.pointing_game(maps, self.masks))
        energy = float(metrics.energy_pointing_game(maps, self.masks))
        self.say(f"LRP ({LRP_COMPOSITE}) pointing game: {pointing:.2f}, energy pointing game: {energy:.2f}")
        idx = balanced(self.y, len(self.classes), 6)
        gradcam = GradCAM(self.model)(self.x[idx], targets=self.y[idx])
        tiles = []
        for j, i in enumerate(idx):
            # A few pixels carry most relevance: shown up to the 99th percentile of |relevance| (clipped
            # beyond), or the edges alone would show.
            top = float(np.percentile(np.abs(signed[i]), 99))
            shown = np.clip(signed[i] / top, -1.0, 1.0) if top > 0 else signed[i]
            lrp = visualize.overlay(self.x[i], shown, alpha=1.0, colormap="bwr", signed=True)
            gc = visualize.overlay(self.x[i], gradcam[j], alpha=0.5)
            tiles += [_upscale(t, 3) for t in (visualize.to_uint8(self.x[i]), gc, lrp)]
        labels = [f"{self.classes[self.y[i]]}" if k == 0 else ("Grad-CAM" if k == 1 else "LRP")
                  for i in idx for k in range(3)]
        self.write("lrp.png", visualize.image_grid(tiles, cols=9, margin=3, labels=labels))
        return {"composite": LRP_COMPOSITE, "pointing_game": round(pointing, 4),
                "energy_pointing_game": round(energy, 4), "picture": "lrp.png"}

    def methods(self, n: int) -> list:
        """Every explainer on the first `n` held-out images: scored (`methods.md`), drawn (`methods.png`)."""
        self.say(f"Comparing every explainer on {n} held-out images (their true class)...")
        # The sanity check explains 8 images again on a randomized copy: seconds, not minutes.
        comparison = compare_methods(self.model, self.x[:n], targets=self.y[:n], masks=self.masks[:n],
                                     metrics=DEFAULT_METRICS + ("sanity",), sanity_images=8)
        table = comparison.to_markdown()
        self.say(table)
        with open(os.path.join(self.out_dir, "methods.md"), "w") as f:
            f.write(_methods_page(table, n, self.x.shape[1], keras.backend.backend()))
        self.files.append("methods.md")
        self.write("methods.png", _methods_grid(self.x, comparison.heatmaps, self.classes, self.y))
        return [{k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v)
                 for k, v in row.items()} for row in comparison.rows]


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
