"""Grad-CAM for semantic segmentation: where a per-pixel model finds its "circle" pixels.

A small fully convolutional network is trained on `make_shapes` images to label every pixel: 0 for the
background, 1 + the shape's class for the shape's pixels ("circle" is 1). Then Grad-CAM explains the
segmentation target `kc.targets.segmentation(1)`: the sum of the circle logits over the pixels the model
predicts as circle (mask=None, as pytorch-grad-cam's `SemanticSegmentationTarget` is used), at the network's
last low-resolution layer. The example prints the pixel accuracy of the segmentation, the pointing game of
the circle maps against the circle masks (with its chance level) and writes `segmentation_cam.png`: for a few
validation circles, the image, the predicted circle pixels and the Grad-CAM overlay.

    python examples/segmentation_cam.py --out /tmp/segmentation_cam

Runs offline in about a minute on two CPU cores (TensorFlow).
"""
import argparse
import os
import time
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np

import keras_cam as kc

CLASSES = ("circle", "square", "triangle")
CIRCLE = 1 + CLASSES.index("circle")  # pixel class 0 is the background


def pixel_labels(labels: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """int32 (N, H, W) per-pixel classes: 0 background, 1 + the image's shape class on the shape's pixels."""
    return np.where(masks, labels[:, None, None] + 1, 0).astype(np.int32)


def build_model(size: int, num_classes: int = len(CLASSES) + 1) -> keras.Model:
    """A fully convolutional network: two poolings to size / 4 ("features"), bilinear upsampling back and a
    1x1 convolution to per-pixel class probabilities (N, size, size, num_classes)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.UpSampling2D(4, interpolation="bilinear")(x)
    outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax", name="segmentation")(x)
    return keras.Model(inputs, outputs, name="shapes_fcn")


def main(argv: Optional[Sequence[str]] = None, out: Optional[str] = None, n_train: int = 2000,
         n_val: int = 150, size: int = 32, epochs: int = 15, clutter: float = 0.5, seed: int = 0,
         verbose: int = 2) -> Dict[str, Any]:
    """Trains the network, explains "circle" on the validation circles; returns the measured numbers.

    Command-line arguments (`argv`) override the keyword defaults.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=out or "segmentation_cam_out", help="output directory")
    parser.add_argument("--n-train", type=int, default=n_train, help="training images")
    parser.add_argument("--n-val", type=int, default=n_val, help="validation images")
    parser.add_argument("--size", type=int, default=size, help="image size (a multiple of 4)")
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    parser.add_argument("--clutter", type=float, default=clutter, help="background clutter of make_shapes")
    parser.add_argument("--seed", type=int, default=seed, help="random seed")
    args = parser.parse_args([] if argv is None else argv)
    start = time.perf_counter()

    keras.utils.set_random_seed(args.seed)
    shapes = dict(size=args.size, classes=CLASSES, clutter=args.clutter, distractors=1)
    x, y, m = kc.datasets.make_shapes(args.n_train, seed=args.seed + 1, **shapes)
    x_val, y_val, m_val = kc.datasets.make_shapes(args.n_val, seed=args.seed + 2, **shapes)
    model = build_model(args.size)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, pixel_labels(y, m), epochs=args.epochs, batch_size=32, verbose=verbose)
    predicted = np.asarray(model.predict(x_val, batch_size=64, verbose=0)).argmax(-1)
    accuracy = float(np.mean(predicted == pixel_labels(y_val, m_val)))

    # Grad-CAM of "circle" on the validation circles: circle logits summed over the predicted circle pixels.
    circles = np.flatnonzero(y_val == CLASSES.index("circle"))
    explainer = kc.GradCAM(model, layer="features")
    result = explainer.compute(x_val[circles], targets=kc.targets.segmentation(CIRCLE))
    pointing = kc.metrics.pointing_game(result.heatmaps, m_val[circles])
    chance = float(np.mean(m_val[circles]))

    tiles, labels = [], []
    for i, row in enumerate(circles[:6]):
        tiles += [x_val[row], (predicted[row] == CIRCLE).astype(np.float32),
                  kc.overlay(x_val[row], result.heatmaps[i])]
        labels += ["image", "circle pixels", "Grad-CAM"]
    big = [np.repeat(np.repeat(kc.visualize.as_rgb(t), 4, axis=0), 4, axis=1) for t in tiles]  # 4x, to see
    path = kc.save_image(os.path.join(args.out, "segmentation_cam.png"),
                         kc.image_grid(big, cols=3, labels=labels))
    summary = {"pixel_accuracy": accuracy, "pointing_game": float(pointing), "chance": chance,
               "circles": int(len(circles)), "seconds": time.perf_counter() - start, "file": str(path),
               "backend": keras.backend.backend()}
    print(f"pixel accuracy {accuracy:.3f}; Grad-CAM of 'circle' (segmentation target, mask=None): "
          f"pointing game {pointing:.3f} on {len(circles)} circles (chance {chance:.3f}); "
          f"{summary['seconds']:.0f} s; wrote {path}")
    return summary


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
