"""The `keras-cam` command line (also `python -m keras_cam`).

Each subcommand is one small function: `_add_<name>(subparsers)` declares its arguments and
`_run_<name>(args) -> int` runs it. Register a new one in `COMMANDS`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

PROG = "keras-cam"

# Errors the library raises on bad input or files: reported as one line, exit status 2, no traceback.
USER_ERRORS = (ValueError, OSError)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


# ------------------------------------------------------------------------------------------------- demo


def _add_demo(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from keras_cam.demo import DEFAULT_EPOCHS

    parser = subparsers.add_parser(
        "demo",
        help="train a small CNN with a CAMHead on synthetic shapes and write CAM overlays",
        description="Trains a small CNN ending in a CAMHead on synthetic shapes (make_shapes), prints the "
                    "validation accuracy and the pointing game of its class activation maps, and writes to "
                    "--out: the maps of 8 held-out images after every epoch (snapshots/, with "
                    "evolution.png/.gif), overlays per class, correct and wrong predictions, a comparison "
                    "of every explainer (methods.md, methods.png) and summary.json. Needs no download; "
                    "a few minutes on 2 CPU cores.",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--seed", type=_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the comparison of every explainer (methods.md, methods.png)")
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from keras_cam.demo import run_demo

    # A progress bar on a terminal; one line per epoch when the output goes to a file or a pipe.
    run_demo(out_dir=args.out, epochs=args.epochs, seed=args.seed, compare=not args.no_compare,
             verbose=1 if sys.stdout.isatty() else 2)
    return 0


# ----------------------------------------------------------------------------------------------- models

_SCALES = ("1/255", "none", "caffe", "tf", "torch")


def _load_model(path: str, unsafe: bool):
    import os

    import keras

    if not os.path.isfile(path):
        raise ValueError(f"model file '{path}' does not exist")
    try:
        return keras.saving.load_model(path, safe_mode=not unsafe)
    except Exception as e:  # zip errors, unknown layers, Lambda refused in safe mode, ...
        detail = " ".join(str(e).split())[:300]
        hint = " (it contains Python code: re-run with --unsafe if you trust the file)" if "safe_mode" in detail else ""
        raise ValueError(f"cannot load '{path}' as a Keras model{hint}: {detail}") from None


def _input_size(model, size):
    if size:
        return tuple(size)
    from keras_cam import capture

    inputs = capture.graph_tensors(model, "inputs")
    if inputs and len(inputs[0].shape) == 4 and None not in tuple(inputs[0].shape[1:3]):
        return tuple(inputs[0].shape[1:3])
    raise ValueError("the model accepts any image size; pass --size H W")


def _scale(x, mode: str):
    """Images read as RGB floats in [0, 1] -> what the model expects (keras.applications conventions)."""
    if mode == "1/255":
        return x
    if mode == "none":
        return x * 255.0
    from keras.applications import imagenet_utils

    return imagenet_utils.preprocess_input(x * 255.0, mode=mode)


# ---------------------------------------------------------------------------------------------- explain


def _add_explain(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from keras_cam.explainers import available_methods

    parser = subparsers.add_parser(
        "explain",
        help="heatmap overlays for images, from a saved .keras model",
        description="Loads MODEL (safe mode), reads each IMAGE with OpenCV, resizes it to the model's input "
                    "size, and writes one overlay PNG per image to --out; prints the explained class and "
                    "its score. Images are processed in batches.",
    )
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--method", default="gradcam", help=f"one of: {', '.join(available_methods())}")
    parser.add_argument("--layer", default=None, help="layer name or 'outer/inner' path (default: last spatial)")
    parser.add_argument("--target", type=_int, default=None, help="class index (default: the predicted class)")
    parser.add_argument("--size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="resize images to H W (default: the model's input size)")
    parser.add_argument("--scale", default="1/255", choices=_SCALES,
                        help="input scaling: 1/255 -> [0, 1] (default), none -> [0, 255], or the "
                             "keras.applications modes caffe / tf / torch")
    parser.add_argument("--alpha", type=float, default=0.4, help="heatmap weight in the overlay (default 0.4)")
    parser.add_argument("--colormap", default="jet", help="OpenCV colormap name (default jet)")
    parser.add_argument("--out", default="cam_out", help="output folder (default: cam_out)")
    parser.add_argument("--save-raw", action="store_true", help="also save each heatmap as a .npy array")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--unsafe", action="store_true",
                        help="load with safe_mode=False (allows Lambda layers' Python code: only for files "
                             "you trust)")
    return parser


def _run_explain(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from keras_cam import visualize
    from keras_cam.explainers import get_explainer

    model = _load_model(args.model, args.unsafe)
    explainer = get_explainer(args.method, model, **({"layer": args.layer} if args.layer else {}))
    size = _input_size(model, args.size)
    for path in args.images:  # fail before any work on a bad file
        if not os.path.isfile(path):
            raise ValueError(f"image file '{path}' does not exist")
    os.makedirs(args.out, exist_ok=True)
    name = explainer.name.replace("+", "p")
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        pictures = np.stack([visualize.read_image(p, size) for p in paths])
        result = explainer.compute(_scale(pictures, args.scale), targets=args.target)
        for path, picture, heatmap, target, score in zip(paths, pictures, result.heatmaps, result.targets,
                                                         result.scores):
            stem = os.path.join(args.out, f"{os.path.splitext(os.path.basename(path))[0]}_{name}")
            visualize.save_image(stem + ".png",
                                 visualize.overlay(picture, heatmap, alpha=args.alpha, colormap=args.colormap))
            if args.save_raw:
                np.save(stem + ".npy", heatmap)
            what = "output" if explainer.output_kind == "regression" else f"class {int(target)} score"
            print(f"{path}: {what} {float(score):.4f} -> {stem}.png")
    return 0


# ---------------------------------------------------------------------------------------------- filters


def _add_filters(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "filters",
        help="a grid of the patterns a layer's filters respond to, from a saved .keras model",
        description="Gradient ascent on the input for each filter of --layer (all filters in one batch), "
                    "written as one mosaic PNG.",
    )
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("--layer", required=True, help="layer name or 'outer/inner' path")
    parser.add_argument("--filters", type=_positive_int, default=64, help="the first N filters (default 64)")
    parser.add_argument("--size", type=_positive_int, default=None,
                        help="pattern size (default: the model's input size, else 64)")
    parser.add_argument("--steps", type=_positive_int, default=30, help="gradient ascent steps (default 30)")
    parser.add_argument("--seed", type=_int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default="filters.png", help="output PNG (default: filters.png)")
    parser.add_argument("--unsafe", action="store_true", help="load with safe_mode=False (trusted files only)")
    return parser


def _run_filters(args: argparse.Namespace) -> int:
    from keras_cam import visualize
    from keras_cam.activation_maximization import FilterVisualizer

    model = _load_model(args.model, args.unsafe)
    viz = FilterVisualizer(model, args.layer)
    count = min(args.filters, viz.num_filters())
    grid = viz.grid(filters=range(count), size=args.size, steps=args.steps, seed=args.seed)
    visualize.save_image(args.out, grid)
    print(f"{count} filters of '{args.layer}' -> {args.out}")
    return 0


# --------------------------------------------------------------------------------------------- registry

#: name -> (add the subparser, run it).
COMMANDS: Dict[str, Tuple[Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
                          Callable[[argparse.Namespace], int]]] = {
    "explain": (_add_explain, _run_explain),
    "filters": (_add_filters, _run_filters),
    "demo": (_add_demo, _run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of `COMMANDS`."""
    parser = _Parser(
        prog=PROG,
        description="Class activation maps, Grad-CAM family heatmaps and filter visualization for Keras 3 "
                    "models (TensorFlow, JAX or PyTorch backend: set KERAS_BACKEND).",
    )
    from keras_cam import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name, (add, run) in COMMANDS.items():
        add(subparsers).set_defaults(_run=run)
    return parser


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[tempfile.SpooledTemporaryFile]:
    """Sends what native code writes to file descriptor 2 into a temporary file for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _import_backend() -> None:
    """Imports Keras and its backend without their start-up logs (TensorFlow prints several lines of
    absl/oneDNN notices to the process's stderr, which would bury our one-line errors)."""
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_captured() as log:
        try:
            import keras  # noqa: F401
        except Exception as e:  # the backend is missing or broken: say which, with its own log
            log.seek(0)
            details = log.read().decode(errors="replace").strip()
            backend = os.environ.get("KERAS_BACKEND", "tensorflow")
            raise ImportError(
                f"could not import Keras with the '{backend}' backend ({type(e).__name__}: {e}); install it "
                f"(pip install 'keras-cam[{backend}]') or set KERAS_BACKEND to an installed one"
                + (f"; backend log: {details.splitlines()[-1]}" if details else "")
            ) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 2 usage or input error, 130 interrupted).

    Errors print one line to stderr, `keras-cam: error: <what to fix>`, without a traceback.

    Args:
        argv: the arguments without the program name (default: `sys.argv[1:]`).
    """
    try:
        _import_backend()  # first: the parser reads defaults from modules that import Keras
    except ImportError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed): report it as a status
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as e:
        # One line, like argparse's own errors: the library's messages already say what to fix.
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
