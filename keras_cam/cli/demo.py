"""`keras-cam demo`: train a small CNN with a CAMHead on synthetic shapes and score its maps."""
from __future__ import annotations

import argparse
import sys

from keras_cam.cli._common import integer, positive_int

HELP = "train a small CNN with a CAMHead on synthetic shapes and write CAM overlays"
DESCRIPTION = ("Trains a small CNN ending in a CAMHead on synthetic shapes (make_shapes), prints the validation "
               "accuracy and the pointing game of its class activation maps, and writes to --out: the maps of 8 "
               "held-out images after every epoch (snapshots/, with evolution.png/.gif), overlays per class, "
               "correct and wrong predictions, a comparison of every explainer (methods.md, methods.png) and "
               "summary.json. Needs no download; a few minutes on 2 CPU cores.")

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from keras_cam.demo import DEFAULT_EPOCHS

    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the comparison of every explainer (methods.md, methods.png)")


def run(args: argparse.Namespace) -> int:
    from keras_cam.demo import run_demo

    # A progress bar on a terminal; one line per epoch when the output goes to a file or a pipe.
    run_demo(out_dir=args.out, epochs=args.epochs, seed=args.seed, compare=not args.no_compare,
             verbose=1 if sys.stdout.isatty() else 2)
    return 0
