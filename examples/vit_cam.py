"""Grad-CAM for a vision transformer: where a keras-hub ViT, trained briefly on `make_shapes`, finds the shape.

A small `keras_hub.models.ViTImageClassifier` (built from its config with random weights, no download:
32x32 images cut into 4x4-pixel patches, an 8x8 token grid plus the class token, 4 transformer blocks) is
trained on `make_shapes` images. Then every method explains it with no layer and no reshape given: keras-cam
picks the input normalization of the last attention block (`.../transformer_block_4/ln_1`), drops the class
token and lays the 64 patch tokens out on their 8x8 grid. The example prints the validation accuracy, the
pointing game of each method against the true masks (with its chance level), and writes `vit_cam.png`: a few
validation images with their Grad-CAM, Grad-CAM++ and Score-CAM overlays. Each backend trains its own model
(their random number generators differ: one seed, other initial weights), so the figures differ by backend;
the maps of one set of weights do not.

    python examples/vit_cam.py --out /tmp/vit_cam

Needs keras-hub (`pip install keras-cam[hub]`). Runs offline in a few minutes on two CPU cores.
"""
import argparse
import os
import time
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np

import keras_cam as kc

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")


def build_model(size: int, patch: int, classes: int, pooling: str = "token", layers: int = 4,
                dim: int = 64) -> keras.Model:
    """A small keras-hub ViT classifier: its head reads the class token (`pooling="token"`) or the mean of
    the patch tokens (`"gap"`, no class token)."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=patch, num_layers=layers,
                                            num_heads=4, hidden_dim=dim, mlp_dim=2 * dim,
                                            use_class_token=pooling == "token")
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=classes, pooling=pooling,
                                               preprocessor=None)


def main(argv: Optional[Sequence[str]] = None, out: Optional[str] = None, n_train: int = 8000,
         n_val: int = 200, size: int = 32, patch: int = 4, epochs: int = 12, lr: float = 5e-4,
         pooling: str = "token", seed: int = 0, verbose: int = 2) -> Dict[str, Any]:
    """Trains the ViT, explains the validation images with every method; returns the measured numbers.

    Command-line arguments (`argv`) override the keyword defaults.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=out or "vit_cam_out", help="output directory")
    parser.add_argument("--n-train", type=int, default=n_train, help="training images")
    parser.add_argument("--n-val", type=int, default=n_val, help="validation images")
    parser.add_argument("--size", type=int, default=size, help="image size (a multiple of --patch)")
    parser.add_argument("--patch", type=int, default=patch, help="patch size in pixels")
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    parser.add_argument("--pooling", default=pooling, choices=("token", "gap"),
                        help="what the head reads: the class token, or the mean of the patch tokens")
    parser.add_argument("--layer", default=None,
                        help="the layer to explain (default: chosen automatically), e.g. "
                             "vi_t_backbone/vit_encoder for the encoder's output")
    parser.add_argument("--lr", type=float, default=lr, help="learning rate (AdamW)")
    parser.add_argument("--seed", type=int, default=seed, help="random seed")
    args = parser.parse_args([] if argv is None else argv)
    start = time.perf_counter()

    keras.utils.set_random_seed(args.seed)
    shapes = dict(size=args.size, clutter=0.3, distractors=0)
    x, y, _ = kc.datasets.make_shapes(args.n_train, seed=args.seed + 1, **shapes)
    x_val, y_val, m_val = kc.datasets.make_shapes(args.n_val, seed=args.seed + 2, **shapes)
    model = build_model(args.size, args.patch, classes=int(y.max()) + 1, pooling=args.pooling)
    model.compile(optimizer=keras.optimizers.AdamW(args.lr, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=verbose)
    accuracy = float(np.mean(np.asarray(model.predict(x_val, batch_size=64, verbose=0)).argmax(-1) == y_val))

    heatmaps, pointing = {}, {}
    for method in METHODS:
        explainer = kc.get_explainer(method, model, layer=args.layer)  # token grid found automatically
        heatmaps[method] = explainer(x_val, targets=y_val)
        pointing[method] = float(kc.metrics.pointing_game(heatmaps[method], m_val))
    chance = float(np.mean(m_val))

    tiles, labels = [], []
    for row in range(6):
        tiles.append(x_val[row])
        labels.append("image")
        for method in METHODS[:3]:
            tiles.append(kc.overlay(x_val[row], heatmaps[method][row]))
            labels.append(method)
    big = [np.repeat(np.repeat(kc.visualize.as_rgb(t), 3, axis=0), 3, axis=1) for t in tiles]  # 3x, to see
    path = kc.save_image(os.path.join(args.out, "vit_cam.png"), kc.image_grid(big, cols=4, labels=labels))
    summary = {"accuracy": accuracy, "pointing_game": pointing, "chance": chance,
               "layer": kc.GradCAM(model, layer=args.layer).layer_ref.path, "seconds": time.perf_counter() - start,
               "file": str(path), "backend": keras.backend.backend()}
    scores = ", ".join(f"{m} {p:.2f}" for m, p in pointing.items())
    print(f"{summary['backend']}: accuracy {accuracy:.3f}; layer {summary['layer']}; pointing game {scores} "
          f"(chance {chance:.2f}); {summary['seconds']:.0f} s; wrote {path}")
    return summary


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
