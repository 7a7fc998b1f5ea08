"""The classic 8x8 grid of filter patterns, by gradient ascent on the input, all 64 filters in one batch.

The recipe (after "Deep Learning with Python"): VGG16, layer block1_conv1, loss = the mean activation of one
filter, gradient divided by its RMS (+1e-5), 40 steps of 1.0 on the 0..255 scale from a grey image with
noise, `deprocess_image`, and an 8x8 grid of 64 px tiles with 5 px margins. The recipe runs 64 separate
optimizations; `kc.FilterVisualizer` runs them as one batch (and adds a 2 px jitter per step).

VGG16 expects "caffe" inputs, BGR minus the ImageNet mean (about -124..152), so the patterns are optimized
in `value_range=(-128, 128)`: grey is 0 there, and step 1.0 is the recipe's. (The recipe feeds raw 0..255
images; there, every first-layer filter whose weights sum above zero is active everywhere on grey, and its
pattern is a flat color.)

    # VGG16 with ImageNet weights from a local file (no download happens here)
    python examples/filter_grid.py --weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

    # no weights file: VGG16's random initial weights, whose first-layer filters are random 3x3 kernels
    python examples/filter_grid.py --out /tmp/filter_grid

    # a deeper layer (slower: about a minute per 16 filters on 2 CPU cores)
    python examples/filter_grid.py --layer block3_conv1 --filters 16

Writes `<out>/vgg16_<layer>.png`.
"""
import argparse
import os
import time

import keras

import keras_cam as kc
from keras_cam.activation_maximization import FilterVisualizer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", default="block1_conv1", help="VGG16 layer (the recipe's: block1_conv1)")
    parser.add_argument("--weights", default=None, help="local VGG16 notop weights file (.h5); default: none")
    parser.add_argument("--filters", type=int, default=64, help="the first N filters (8x8 grid: 64)")
    parser.add_argument("--size", type=int, default=64, help="tile size in pixels")
    parser.add_argument("--steps", type=int, default=40, help="gradient ascent steps (the recipe's: 40)")
    parser.add_argument("--seed", type=int, default=0, help="start noise and jitter")
    parser.add_argument("--out", default="filter_grid_out", help="output directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.weights:
        vgg = keras.applications.VGG16(weights=args.weights, include_top=False)
    else:
        keras.utils.set_random_seed(0)  # the random initial weights, reproducibly
        vgg = keras.applications.VGG16(weights=None, include_top=False)
    viz = FilterVisualizer(vgg, args.layer, value_range=(-128, 128))
    start = time.perf_counter()
    grid = viz.grid(filters=range(args.filters), size=args.size, steps=args.steps, seed=args.seed, verbose=1)
    path = kc.save_image(os.path.join(args.out, f"vgg16_{args.layer}.png"), grid)
    weights = "ImageNet weights" if args.weights else "random initial weights"
    print(f"{args.filters} patterns of VGG16 {args.layer} ({weights}), {args.steps} steps, in one batch: "
          f"{time.perf_counter() - start:.1f} s -> {path}")


if __name__ == "__main__":
    main()
