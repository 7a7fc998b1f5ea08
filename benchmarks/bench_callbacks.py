"""Overhead of CAMSnapshot during training, as a share of the epoch time, side by side in one run.

Trains a small CNN on make_shapes (1,024 images, 48x48) and times what is spent inside the callbacks'
`on_epoch_end` against the epoch time, for:
  - keras-cam's CAMSnapshot (8 images, Grad-CAM, masks -> pointing game in logs), and
  - a naive snapshot as found in tutorials: `model.predict` for the targets, a fresh Grad-CAM explainer
    (so a fresh compilation) and a PNG every epoch.

Usage: KERAS_BACKEND=tensorflow python benchmarks/bench_callbacks.py [--epochs 6] [--save FILE.md]
"""
import argparse
import os
import statistics
import tempfile
import time

import keras
import numpy as np

import keras_cam as kc
from keras_cam.demo import build_demo_model


class Timed(keras.callbacks.Callback):
    """Wraps a callback and accumulates the time spent in its epoch-end hook."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seconds = []

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        self.inner.on_epoch_end(epoch, logs)
        self.seconds.append(time.perf_counter() - start)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)


class NaiveSnapshot(keras.callbacks.Callback):
    def __init__(self, images, out):
        super().__init__()
        self.images, self.out = images, out

    def on_epoch_end(self, epoch, logs=None):
        targets = self.model.predict(self.images, verbose=0).argmax(-1)
        heatmaps = kc.GradCAM(self.model)(self.images, targets=targets)
        tiles = [kc.overlay(i, h) for i, h in zip(self.images, heatmaps)]
        kc.save_image(os.path.join(self.out, f"epoch_{epoch + 1:03d}.png"), kc.image_grid(tiles, cols=len(tiles)))


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - self.start]


def run(kind, x, y, probe, masks, epochs, out):
    model = build_demo_model((48, 48, 3), 3)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    if kind == "keras-cam":
        inner = kc.callbacks.CAMSnapshot(probe, masks=masks, output_dir=out)
    else:
        inner = NaiveSnapshot(probe, out)
    timed, epoch_timer = Timed(inner), EpochTimer()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[epoch_timer, timed])
    # Skip epoch 1 (compilation of the train step and the explainer) when there are enough epochs.
    skip = 1 if epochs > 2 else 0
    inside = statistics.median(timed.seconds[skip:])
    epoch = statistics.median(epoch_timer.seconds[skip:])
    return inside, epoch, timed.seconds[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--save", default=None, help="also write the printed report to this file (Markdown)")
    args = parser.parse_args()
    lines = []

    def say(line):
        print(line, flush=True)
        lines.append(line)

    x, y, _ = kc.datasets.make_shapes(args.images, size=48, seed=0)
    probe, _, masks = kc.datasets.make_shapes(8, size=48, seed=1)
    say(f"backend={keras.backend.backend()} keras={keras.__version__} cpus={os.cpu_count()} "
        f"train images={args.images} 48x48, snapshot images=8, epochs={args.epochs}, "
        f"load average {os.getloadavg()[0]:.1f}")
    say("")
    say("| snapshot | inside callback (median s) | epoch (median s) | share of epoch | first epoch s |")
    say("|---|---|---|---|---|")
    for kind in ("keras-cam", "naive"):
        with tempfile.TemporaryDirectory() as out:
            inside, epoch, first = run(kind, x, y, probe, masks, args.epochs, out)
        say(f"| {kind} | {inside:.4f} | {epoch:.3f} | {100 * inside / epoch:.2f} % | {first:.3f} |")
    say("")
    say("Medians over epochs 2..N (epoch 1 compiles). Target: keras-cam CAMSnapshot <= 3 % of the epoch.")
    if args.save:
        with open(args.save, "w") as f:
            f.write("# bench_callbacks\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
