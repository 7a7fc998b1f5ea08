"""`keras-cam filters`: a grid of the patterns a layer's filters respond to, from a saved .keras model."""
from __future__ import annotations

import argparse

from keras_cam.cli._common import integer, positive_int
from keras_cam.loading import load_model

HELP = "a grid of the patterns a layer's filters respond to, from a saved .keras model"
DESCRIPTION = (
    "Gradient ascent on the input for each filter of --layer (all filters in one batch), written as one "
    "mosaic PNG. By default the pattern is a 1/f-scaled spectrum kept under random shifts, zooms and "
    "turns (--param fourier); --param pixel --transforms none gives the classic pixel ascent."
)


def _floats(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("--layer", required=True, help="layer name or 'outer/inner' path")
    parser.add_argument("--filters", type=positive_int, default=64, help="the first N filters (default 64)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="pattern size (default: the model's input size, else 64)")
    parser.add_argument("--steps", type=positive_int, default=30, help="gradient ascent steps (default 30)")
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    parser.add_argument("--param", choices=("fourier", "pixel"), default="fourier",
                        help="what is optimized: a 1/f-scaled spectrum (default) or the pixels")
    parser.add_argument("--transforms", choices=("default", "none"), default="default",
                        help="random shift, zoom and turn at every step (default), or none")
    parser.add_argument("--objective", choices=("channel", "neuron"), default="channel",
                        help="a channel's mean activation (default) or its centre unit")
    parser.add_argument("--diversity", type=positive_int, default=1,
                        help="N different patterns per filter, one row each (default 1: off)")
    parser.add_argument("--total-variation", type=_floats, default=0.0, help="smoothness penalty (default 0)")
    parser.add_argument("--l2", type=_floats, default=0.0, help="contrast penalty (default 0)")
    parser.add_argument("--jitter", type=integer, default=2, help="pixels of random roll per step (default 2)")
    parser.add_argument("--step-size", type=_floats, default=None, help="step size (default: per --param)")
    parser.add_argument("--value-range", type=_floats, nargs=2, metavar=("LOW", "HIGH"), default=(0.0, 1.0),
                        help="the model's input range (default 0 1; e.g. 0 255 for raw pixels)")
    parser.add_argument("--out", default="filters.png", help="output PNG (default: filters.png)")
    parser.add_argument("--unsafe", action="store_true", help="load with safe_mode=False (trusted files only)")


def run(args: argparse.Namespace) -> int:
    from keras_cam import visualize
    from keras_cam.activation_maximization import Channel, Diversity, FilterVisualizer, Neuron

    model = load_model(args.model, args.unsafe)
    viz = FilterVisualizer(model, args.layer, value_range=tuple(args.value_range))
    count = min(args.filters, viz.num_filters())
    objective = Neuron() if args.objective == "neuron" else None
    if args.diversity > 1:
        objective = Diversity(args.diversity, objective=objective or Channel())
    grid = viz.grid(filters=range(count), size=args.size, steps=args.steps, seed=args.seed, param=args.param,
                    transforms="default" if args.transforms == "default" else (), objective=objective,
                    total_variation=args.total_variation, l2=args.l2, jitter=args.jitter,
                    step_size=args.step_size)
    visualize.save_image(args.out, grid)
    print(f"{count} filters of '{args.layer}' -> {args.out}")
    return 0
