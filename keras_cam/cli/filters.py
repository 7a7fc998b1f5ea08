"""`keras-cam filters`: a grid of the patterns a layer's filters respond to, from a saved .keras model."""
from __future__ import annotations

import argparse

from keras_cam.cli._common import integer, load_model, positive_int

HELP = "a grid of the patterns a layer's filters respond to, from a saved .keras model"
DESCRIPTION = ("Gradient ascent on the input for each filter of --layer (all filters in one batch), written as one "
               "mosaic PNG.")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("--layer", required=True, help="layer name or 'outer/inner' path")
    parser.add_argument("--filters", type=positive_int, default=64, help="the first N filters (default 64)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="pattern size (default: the model's input size, else 64)")
    parser.add_argument("--steps", type=positive_int, default=30, help="gradient ascent steps (default 30)")
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default="filters.png", help="output PNG (default: filters.png)")
    parser.add_argument("--unsafe", action="store_true", help="load with safe_mode=False (trusted files only)")


def run(args: argparse.Namespace) -> int:
    from keras_cam import visualize
    from keras_cam.activation_maximization import FilterVisualizer

    model = load_model(args.model, args.unsafe)
    viz = FilterVisualizer(model, args.layer)
    count = min(args.filters, viz.num_filters())
    grid = viz.grid(filters=range(count), size=args.size, steps=args.steps, seed=args.seed)
    visualize.save_image(args.out, grid)
    print(f"{count} filters of '{args.layer}' -> {args.out}")
    return 0
