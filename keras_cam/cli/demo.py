"""`keras-cam demo`: train a small network with a CAMHead on synthetic data and score its maps."""
from __future__ import annotations

import argparse
import sys

from keras_cam.cli._common import integer, positive_int

HELP = "train a small network with a CAMHead on synthetic shapes, signals or volumes; write CAM pictures"
DESCRIPTION = (
    "Trains a small network ending in a CAMHead on synthetic data with ground-truth masks, prints the "
    "validation accuracy and the pointing game of its class activation maps, and writes pictures and "
    "summary.json to --out. --data shapes (default): a CNN on make_shapes images; also the maps of 8 "
    "held-out images after every epoch (snapshots/, with evolution.png/.gif), overlays per class, correct"
    " and wrong predictions and a comparison of every explainer (methods.md, methods.png). --data "
    "signals: a Conv1D network on make_signals; --data volumes: a Conv3D network on make_volumes "
    "(snapshots/ and class_<name>.png). --data shortcut: the shapes CNN trained with a corner mark on most "
    "circle images; its held-out maps are audited (report/index.html) and the named cluster is scored "
    "against the marked images. --data boxes: a centre-point detector on shapes with boxes, each box "
    "explained with kc.targets.detection, its pointing game in summary.json (boxes.png). Needs no "
    "download; a minute or two on 2 CPU cores."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from keras_cam.demo import DEFAULT_EPOCHS, LAYOUT_DATA

    parser.add_argument("--data", choices=("shapes",) + LAYOUT_DATA + ("shortcut", "boxes"), default="shapes",
                        help="what is learnt: shapes (images, default), signals (1-D), volumes (3-D); "
                             "shortcut: shapes with a planted corner mark, found by kc.audit; boxes: a small "
                             "detector, explained box by box")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"training epochs (default: {DEFAULT_EPOCHS} for shapes, else 8)")
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the comparison of every explainer (shapes: methods.md, methods.png)")


def run(args: argparse.Namespace) -> int:
    from keras_cam.demo import DEFAULT_EPOCHS, run_demo, run_layout_demo, run_shortcut_demo

    # A progress bar on a terminal; one line per epoch when the output goes to a file or a pipe.
    verbose = 1 if sys.stdout.isatty() else 2
    if args.data == "shortcut":
        run_shortcut_demo(out_dir=args.out, epochs=args.epochs or DEFAULT_EPOCHS, seed=args.seed,
                          verbose=verbose)
    elif args.data == "boxes":
        from keras_cam.demo.boxes import DEFAULT_EPOCHS as BOX_EPOCHS, run_box_demo

        run_box_demo(out_dir=args.out, epochs=args.epochs or BOX_EPOCHS, seed=args.seed, verbose=verbose)
    elif args.data == "shapes":
        run_demo(out_dir=args.out, epochs=args.epochs or DEFAULT_EPOCHS, seed=args.seed,
                 compare=not args.no_compare, verbose=verbose)
    else:
        run_layout_demo(args.data, out_dir=args.out, epochs=args.epochs, seed=args.seed, verbose=verbose)
    return 0
