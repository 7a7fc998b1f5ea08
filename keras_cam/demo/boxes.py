"""The boxes demo: train a small centre-point detector on shapes with boxes and explain it box by box.

Every image of `kc.datasets.make_shapes(..., return_boxes=True)` holds one shape and its box. The detector
predicts, for each cell of a stride-4 grid, class logits and the distances from the cell's centre to the
box's four sides; its raw outputs `{"boxes", "logits"}` are what `kc.targets.detection` reads. Each box's
Grad-CAM is scored by the pointing game on the box (`keras-cam demo --data boxes`).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Sequence, Tuple

import keras
import numpy as np

from keras_cam import datasets, visualize
from keras_cam.demo.shapes import CLASSES, check_demo_args, write_summary
from keras_cam.detection import detection
from keras_cam.explainers import GradCAM
from keras_cam.visualize.boxes import draw_boxes

DEFAULT_EPOCHS = 12
STRIDE = 4  # input pixels per cell of the detector's grid
_PICTURES = 16


@keras.saving.register_keras_serializable(package="keras_cam")
class CellBoxes(keras.layers.Layer):
    """Distances (N, h, w, 4) from each cell's centre to a box's left, top, right and bottom sides, in
    cells (any real number: exp keeps them positive), as boxes (N, h * w, 4) x0, y0, x1, y1 in pixels."""

    def __init__(self, stride: int = STRIDE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, distances: Any) -> Any:
        ops = keras.ops
        h, w = int(distances.shape[1]), int(distances.shape[2])
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        centre = np.stack([xs, ys, xs, ys], -1).reshape(1, h * w, 4).astype(np.float32) + 0.5
        d = ops.exp(ops.clip(ops.reshape(ops.cast(distances, "float32"), (-1, h * w, 4)), -4.0, 4.0))
        sign = ops.convert_to_tensor(np.array([-1, -1, 1, 1], np.float32))
        return (ops.convert_to_tensor(centre) + d * sign) * self.stride

    def compute_output_shape(self, input_shape: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return (input_shape[0], input_shape[1] * input_shape[2], 4)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "stride": self.stride}


def build_box_detector(input_shape: Tuple[int, int, int] = (48, 48, 3), num_classes: int = 3,
                       width: int = 16, name: str = "shapes_detector") -> keras.Model:
    """A small centre-point detector: the shapes demo's conv blocks (features at 1/4 of the input), then a
    1x1 head with `num_classes` logits and 4 box distances per cell.

    Returns:
        A Functional model (not compiled) with outputs `{"boxes": (N, cells, 4), "logits": (N, cells, K)}`;
        its last feature map is the layer named `"features"`.

    Example:

    >>> from keras_cam.demo.boxes import build_box_detector
    >>> {k: v.shape for k, v in build_box_detector((48, 48, 3)).output.items()}["logits"]
    (None, 144, 3)
    """
    def block(x: Any, filters: int, block_name: str) -> Any:
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{block_name}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{block_name}_bn")(x)
        return keras.layers.Activation("relu", name=block_name)(x)

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.MaxPooling2D(name="pool1")(block(inputs, width, "block1"))
    x = keras.layers.MaxPooling2D(name="pool2")(block(x, 2 * width, "block2"))
    x = block(block(x, 4 * width, "block3"), 4 * width, "features")
    cells = (input_shape[0] // STRIDE) * (input_shape[1] // STRIDE)
    logits = keras.layers.Reshape((cells, num_classes), name="logits")(
        keras.layers.Conv2D(num_classes, 1, name="class_head")(x))
    boxes = CellBoxes(STRIDE, name="boxes")(keras.layers.Conv2D(4, 1, name="box_head")(x))
    return keras.Model(inputs, {"boxes": boxes, "logits": logits}, name=name)


def detection_targets(boxes: np.ndarray, labels: np.ndarray, size: int, num_classes: int,
                      radius: float = 1.5) -> Dict[str, np.ndarray]:
    """Training targets: the cells within `radius` cells of a box's centre are positive for its class, and
    learn the box; `boxes` carries the mask of those cells as a fifth column."""
    g = size // STRIDE
    centres = (np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), -1)[..., ::-1] + 0.5) * STRIDE
    centres = centres.reshape(1, g * g, 2)
    middle = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    near = (np.abs(centres - middle) <= radius * STRIDE).all(-1).astype(np.float32)  # (N, cells)
    heat = near[..., None] * np.eye(num_classes, dtype=np.float32)[labels][:, None, :]
    box = np.concatenate([np.broadcast_to(boxes[:, None, :], near.shape + (4,)), near[..., None]], -1)
    return {"logits": heat, "boxes": box.astype(np.float32)}


@keras.saving.register_keras_serializable(package="keras_cam")
def masked_box_loss(y_true: Any, y_pred: Any) -> Any:
    """L1 distance of the predicted boxes to the true box on the positive cells (fifth column), in cells."""
    ops = keras.ops
    mask = y_true[..., 4]
    error = ops.sum(ops.abs(y_pred - y_true[..., :4]), axis=-1) / STRIDE
    return ops.sum(error * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)


def train_box_detector(model: keras.Model, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                       epochs: int = DEFAULT_EPOCHS, batch_size: int = 32, verbose: int = 0) -> Any:
    """Compiles and trains `model` (sigmoid cross-entropy on the cells' classes, L1 on their boxes)."""
    num_classes = int(model.output["logits"].shape[-1])
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss={"logits": keras.losses.BinaryCrossentropy(from_logits=True), "boxes": masked_box_loss},
                  loss_weights={"logits": 20.0, "boxes": 1.0})
    y = detection_targets(boxes.astype(np.float32), labels, images.shape[1], num_classes)
    return model.fit(images, y, epochs=epochs, batch_size=batch_size, verbose=verbose)


def box_pointing_game(heatmaps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per map (N, H, W): whether its maximum lies in its box (N, 4) x0, y0, x1, y1 (half-open)."""
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(-1)
    y, x = np.unravel_index(flat, heatmaps.shape[1:])
    return (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])


def run_box_demo(out_dir: str = "demo_out", epochs: int = DEFAULT_EPOCHS, seed: int = 0, n_train: int = 2000,
                 n_val: int = 200, size: int = 48, verbose: int = 1,
                 classes: Sequence[str] = CLASSES) -> Dict[str, Any]:
    """Trains `build_box_detector` on shapes with boxes, explains each held-out box with Grad-CAM and
    `kc.targets.detection`, prints the pointing game on the boxes, writes `boxes.png` and `summary.json`.

    The summary holds the pointing game per box (`pointing_game_per_box`) and over all (`pointing_game`):
    the true boxes explained (for the true labels), and the model's own most confident box of each image
    (`own_box_pointing_game`, on the true box).
    """
    check_demo_args(seed, (size, 16), epochs=epochs, n_train=n_train, n_val=n_val)
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    x, y, _, b = datasets.make_shapes(n_train, size=size, seed=seed, classes=classes, return_boxes=True)
    xv, yv, _, bv = datasets.make_shapes(n_val, size=size, seed=seed + 1, classes=classes, return_boxes=True)
    model = build_box_detector((size, size, 3), len(classes))
    say(f"training a centre-point detector on {n_train} shapes with boxes ({epochs} epochs)")
    train_box_detector(model, x, y, b, epochs=epochs, verbose=2 if verbose else 0)
    explainer = GradCAM(model, layer="features")
    maps = explainer(xv, targets=detection(bv, yv))
    hits = box_pointing_game(maps, bv)
    own = detection(max_boxes=1, min_score=0.0)
    own_maps = explainer(xv, targets=own)[:, 0]
    own_hits = box_pointing_game(own_maps, bv)
    found = own.boxes(model, xv[:_PICTURES])
    # The model's own best box, coloured by its class and captioned with its probability; the true box white.
    tiles = [draw_boxes(visualize.overlay(xv[i], own_maps[i], boxes=f["boxes"], labels=list(f["labels"]),
                                          scores=list(f["probabilities"])), bv[i:i + 1])
             for i, f in enumerate(found)]
    path = os.path.join(out_dir, "boxes.png")
    visualize.save_image(path, visualize.image_grid(tiles, cols=8))
    summary = {"pointing_game": round(float(hits.mean()), 4),
               "pointing_game_per_box": [bool(h) for h in hits],
               "own_box_pointing_game": round(float(own_hits.mean()), 4)}
    say(f"pointing game of the boxes' Grad-CAM: {summary['pointing_game']:.3f} (true boxes), "
        f"{summary['own_box_pointing_game']:.3f} (the model's own best box)")
    return write_summary(out_dir, summary, ["boxes.png"], start, say, epochs=epochs, seed=seed, n_train=n_train,
                         n_val=n_val, size=size)
