"""The `keras-cam` command line (also `python -m keras_cam`).

Each subcommand is two small functions, `_add_<name>(parser)` that declares its arguments and
`_run_<name>(args) -> int` that runs it, registered in `COMMANDS` with its help and description.
Errors are one line on stderr, `keras-cam: error: <what to fix>`, never a traceback (unless
KERAS_CAM_DEBUG=1).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

PROG = "keras-cam"

# Errors the library raises on bad input or files: reported as one line, exit status 2, no traceback.
USER_ERRORS = (ValueError, OSError)
#: Exit status of an unexpected exception (a bug: KERAS_CAM_DEBUG=1 shows its traceback).
INTERNAL_ERROR = 3

# What `explain` takes from a folder: the suffixes of the formats OpenCV decodes.
IMAGE_SUFFIXES = frozenset([".avif", ".bmp", ".dib", ".exr", ".gif", ".hdr", ".jp2", ".jpe", ".jpeg", ".jpg",
                            ".pbm", ".pfm", ".pgm", ".pic", ".png", ".pnm", ".ppm", ".pxm", ".ras", ".sr",
                            ".tif", ".tiff", ".webp"])


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


def _name_or_index(text: str) -> object:
    """An int is an index, anything else a name."""
    try:
        return int(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------------------- demo


def _add_demo(parser: argparse.ArgumentParser) -> None:
    from keras_cam.demo import DEFAULT_EPOCHS

    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--seed", type=_int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the comparison of every explainer (methods.md, methods.png)")


def _run_demo(args: argparse.Namespace) -> int:
    from keras_cam.demo import run_demo

    # A progress bar on a terminal; one line per epoch when the output goes to a file or a pipe.
    run_demo(out_dir=args.out, epochs=args.epochs, seed=args.seed, compare=not args.no_compare,
             verbose=1 if sys.stdout.isatty() else 2)
    return 0


# ----------------------------------------------------------------------------------------------- models

_SCALES = ("1/255", "none", "caffe", "tf", "torch")


def _load_model(path: str, unsafe: bool):
    import zipfile

    import keras

    if not os.path.exists(path):
        raise ValueError(f"model file '{path}' does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"cannot load '{path}' as a Keras model: it is a folder, not a .keras file")
    # Keras says "File not found" for a .keras file that exists but is not a zip archive: say what it is.
    if not path.lower().endswith((".h5", ".hdf5")):
        try:
            with open(path, "rb") as f:
                archive = zipfile.is_zipfile(f)
        except OSError as e:
            raise ValueError(f"cannot read the model file '{path}': {e.strerror or e}") from None
        if not archive:
            raise ValueError(f"cannot load '{path}' as a Keras model: it is not a valid .keras archive "
                             "(empty, truncated or corrupt); save the model again with "
                             "model.save('model.keras')")
    try:
        return keras.saving.load_model(path, safe_mode=not unsafe)
    except Exception as e:  # unknown layers, Lambda refused in safe mode, a damaged member, ...
        detail = " ".join(str(e).split())[:300]
        hint = " (it contains Python code: re-run with --unsafe if you trust the file)" if "safe_mode" in detail else ""
        raise ValueError(f"cannot load '{path}' as a Keras model{hint}: {detail}") from None


def _check_pixels(height: int, width: int, max_pixels: int, what: str, fix: str) -> None:
    if height * width > max_pixels:
        raise ValueError(f"{what} {height}x{width} = {height * width:,} pixels, above the limit of "
                         f"{max_pixels:,} (--max-pixels); {fix}")


def _input_size(model, size: Optional[Sequence[int]], max_pixels: int) -> Tuple[int, int]:
    if size:
        return int(size[0]), int(size[1])  # checked against --max-pixels before any work
    from keras_cam import capture

    inputs = capture.graph_tensors(model, "inputs")
    if inputs and len(inputs[0].shape) == 4 and None not in tuple(inputs[0].shape[1:3]):
        height, width = (int(v) for v in inputs[0].shape[1:3])
        _check_pixels(height, width, max_pixels, "the model's input size is",
                      "raise --max-pixels if you mean it, or pass a smaller --size if the model accepts one")
        return height, width
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

_EXPLAIN_DESCRIPTION = (
    "Loads MODEL (safe mode), reads each IMAGE with OpenCV (a folder: every image file inside, recursively, "
    "sorted), resizes it to the model's input size and writes one overlay per image under --out "
    "(NAME_METHOD.png, and NAME_METHOD.npy with --save-raw), in the images' folders relative to their common "
    "parent; inputs that would still share a name get their extension (then a number) in it, so no output is "
    "written twice. Prints the explained class and its "
    "score per image and a closing summary. Images are checked before any work: missing, unreadable or "
    "corrupt files and images above --max-pixels are reported on stderr ('keras-cam: skipped PATH: reason') "
    "and skipped, as are files that fail to decode later. Exit status: 0 when every image was explained, "
    "1 when some were skipped, 2 when none could be explained or on a usage or model error."
)


def _add_explain(parser: argparse.ArgumentParser) -> None:
    from keras_cam.explainers import available_methods
    from keras_cam.visualize.headers import DEFAULT_MAX_PIXELS

    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    parser.add_argument("--method", default="gradcam", help=f"one of: {', '.join(available_methods())}")
    parser.add_argument("--layer", default=None, help="layer name or 'outer/inner' path (default: last spatial)")
    parser.add_argument("--target", type=_int, default=None, help="class index (default: the predicted class)")
    parser.add_argument("--output", type=_name_or_index, default=None, metavar="NAME|INDEX",
                        help="the output to explain, for models with several (an integer is its index)")
    parser.add_argument("--size", type=_positive_int, nargs=2, metavar=("H", "W"),
                        help="resize images to H W (default: the model's input size)")
    parser.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse images (and sizes) of more than N pixels, read from the file's header "
                             f"before decoding (default: {DEFAULT_MAX_PIXELS:,}, Pillow's image-bomb limit)")
    parser.add_argument("--scale", default="1/255", choices=_SCALES,
                        help="input scaling: 1/255 -> [0, 1] (default), none -> [0, 255], or the "
                             "keras.applications modes caffe / tf / torch")
    parser.add_argument("--alpha", type=float, default=0.4, help="heatmap weight in the overlay (default 0.4)")
    parser.add_argument("--colormap", default="jet", help="OpenCV colormap name (default jet)")
    parser.add_argument("--out", default="cam_out", help="output folder (default: cam_out)")
    parser.add_argument("--save-raw", action="store_true",
                        help="also save each heatmap as a .npy array, beside its overlay")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--unsafe", action="store_true",
                        help="load with safe_mode=False (allows Lambda layers' Python code: only for files "
                             "you trust)")


def _skip(path: str, reason: str) -> None:
    print(f"{PROG}: skipped {path}: {reason}", file=sys.stderr, flush=True)


def _image_files(items: Sequence[str], out: str) -> Tuple[List[str], int]:
    """Files to explain from the command line's files and folders (each once), and how many items were
    skipped (a folder without images). Folders are searched recursively in sorted order, leaving out --out
    (a second run must not explain the first one's overlays)."""
    out_dir = os.path.normcase(os.path.abspath(out))
    files: List[str] = []
    skipped = 0
    for item in items:
        if not os.path.isdir(item):
            files.append(item)  # missing or unreadable files are reported by the header check
            continue
        found = []
        for root, dirs, names in os.walk(item):
            dirs[:] = [d for d in dirs if os.path.normcase(os.path.abspath(os.path.join(root, d))) != out_dir]
            found += [os.path.join(root, n) for n in names
                      if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
        if not found:
            _skip(item, "a folder without image files")
            skipped += 1
        files += sorted(found)
    seen = set()
    unique = []
    for path in files:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, skipped


def _output_stems(paths: Sequence[str], out: str, tag: str) -> List[str]:
    """One output path without suffix per input: `out/<its folder relative to the inputs' common parent
    folder>/<name>_<tag>`. Distinct inputs get distinct outputs, and no output is an input: names that would
    clash (x.png and x.jpg, or names equal but for case) get the input's extension, then "-2", "-3", ...

    Args:
        paths: the input files, each once.
        out: the output folder.
        tag: what the outputs are (e.g. the method's name).

    Returns:
        The stems, in the order of `paths`; add ".png" or ".npy".
    """
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    try:
        common: Optional[str] = os.path.commonpath(folders) if folders else None
    except ValueError:  # different drives (Windows): no common parent, names alone
        common = None

    def place(i: int, name: str) -> str:
        folder = os.path.relpath(folders[i], common) if common else ""
        return os.path.normpath(os.path.join(out, folder, name))

    def key(path: str) -> str:  # case-insensitive: x.png and X.png are one file on macOS and Windows
        return os.path.normcase(os.path.abspath(path)).casefold()

    names = [os.path.splitext(os.path.basename(p)) for p in paths]
    primary = [place(i, f"{stem}_{tag}") for i, (stem, _) in enumerate(names)]
    counts = collections.Counter(key(p) for p in primary)
    inputs = {key(p) for p in paths}
    reserved = {key(p) for p in primary if counts[key(p)] == 1}
    taken: set = set()

    def clashes(stem: str) -> bool:
        return key(stem) in taken or key(stem + ".png") in inputs or key(stem + ".npy") in inputs

    stems = []
    for i, (stem, ext) in enumerate(names):
        chosen = primary[i]
        if counts[key(chosen)] > 1 or clashes(chosen):
            base = place(i, f"{stem}_{ext[1:]}_{tag}" if ext[1:] else f"{stem}_{tag}")
            chosen, number = base, 2
            while clashes(chosen) or key(chosen) in reserved:
                chosen, number = f"{base}-{number}", number + 1
        taken.add(key(chosen))
        stems.append(chosen)
    return stems


# "[ WARN:0@3.5] global grfmt_png.cpp:793 readFromStreamOrBuffer " before OpenCV's log messages.
_OPENCV_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*(?:global\s+)?\S+:\d+\s+\S+\s+")


def _native_detail(log: tempfile.SpooledTemporaryFile) -> str:
    """The last message a native decoder wrote (libpng's, OpenCV's log), for a skipped file's reason."""
    log.seek(0)
    details = []
    for line in log.read().decode(errors="replace").splitlines():
        line = _OPENCV_LOG_PREFIX.sub("", line.strip()).split(" error: ", 1)[-1].strip()
        if line:
            details.append(line)
    return f": {details[-1][:200]}" if details else ""


def _checked(paths: Sequence[str], max_pixels: int) -> List[str]:
    """The files that exist, are readable and declare an image within `max_pixels` in their header; the
    others are reported as skipped."""
    from keras_cam.visualize.headers import ImageFileError, check_image_file

    passed = []
    for path in paths:
        try:
            check_image_file(path, max_pixels, option="--max-pixels")
            passed.append(path)
        except ImageFileError as e:
            _skip(path, e.reason)
    return passed


def _read_images(paths: Sequence[str], size: Tuple[int, int], max_pixels: int) -> List[Tuple[int, object]]:
    """(position, picture) of the images that decode; the others are reported as skipped."""
    import cv2

    from keras_cam.visualize import ImageFileError, read_image

    pictures = []
    for i, path in enumerate(paths):
        # The decoders' own complaints (libpng, libjpeg) go to file descriptor 2: keep them off the terminal.
        with _native_stderr_captured() as log:
            try:
                pictures.append((i, read_image(path, size, max_pixels=max_pixels)))
                continue
            except ImageFileError as e:
                reason = e.reason + (_native_detail(log) if "OpenCV" in e.reason else "")
            except (ValueError, OSError, MemoryError, cv2.error) as e:
                reason = _one_line(e)
        _skip(path, reason)
    return pictures


def _check_outputs(explainer, args: argparse.Namespace) -> None:
    """Several outputs need --output (the library's own message names `kc.targets.output`)."""
    from keras_cam import capture

    if args.output is not None or explainer.num_classes is not None:
        return
    outputs = capture.graph_tensors(explainer.model, "outputs")
    if len(outputs) > 1:
        names = capture.output_names(explainer.model)
        listed = f" ({', '.join(repr(n) for n in names)})" if names else ""
        raise ValueError(f"the model has {len(outputs)} outputs{listed}; choose the one to explain with "
                         "--output NAME|INDEX (and its class with --target)")


def _describe_target(explainer, args: argparse.Namespace, target: int, score: float) -> str:
    if args.output is not None:
        cls = f" class {args.target}" if args.target is not None else ""
        return f"output {args.output!r}{cls} score {score:.4f}"
    if explainer.output_kind == "regression":
        return f"output {score:.4f}"
    return f"class {int(target)} score {score:.4f}"


def _run_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_cam import visualize
    from keras_cam.explainers import get_explainer
    from keras_cam.targets import output as output_target

    started = time.perf_counter()
    if args.size:  # before any work: a 100000 x 100000 resize asks for 30 GB
        _check_pixels(args.size[0], args.size[1], args.max_pixels, "--size", "pass a smaller --size")
    candidates, skipped = _image_files(args.images, args.out)
    paths = _checked(candidates, args.max_pixels)  # before the model is loaded and anything is written
    skipped += len(candidates) - len(paths)
    explained = 0
    if paths:
        model = _load_model(args.model, args.unsafe)
        size = _input_size(model, args.size, args.max_pixels)
        explainer = get_explainer(args.method, model, **({"layer": args.layer} if args.layer else {}))
        _check_outputs(explainer, args)
        targets = args.target if args.output is None else output_target(args.output, class_index=args.target)
        # Names from every input, skipped or not: where an output goes does not depend on which files fail.
        stems = dict(zip(candidates, _output_stems(candidates, args.out, explainer.name.replace("+", "p"))))
        for start in range(0, len(paths), args.batch_size):
            batch = paths[start : start + args.batch_size]
            read = _read_images(batch, size, args.max_pixels)
            skipped += len(batch) - len(read)
            if not read:
                continue
            pictures = np.stack([picture for _, picture in read])
            try:
                result = explainer.compute(_scale(pictures, args.scale), targets=targets)
            except ValueError as e:  # a subclassed model shows its outputs only when it runs
                if args.output is None and "several outputs" in str(e):
                    raise ValueError("the model has several outputs; choose the one to explain with --output "
                                     "NAME|INDEX (and its class with --target)") from None
                raise
            for (i, _), picture, heatmap, target, score in zip(read, pictures, result.heatmaps,
                                                               result.targets, result.scores):
                stem = stems[batch[i]]
                overlay = visualize.overlay(picture, heatmap, alpha=args.alpha, colormap=args.colormap)
                visualize.save_image(stem + ".png", overlay)
                if args.save_raw:
                    np.save(stem + ".npy", heatmap)
                print(f"{batch[i]}: {_describe_target(explainer, args, target, float(score))} -> {stem}.png")
                explained += 1
    plural = "" if explained == 1 else "s"
    print(f"explained {explained} image{plural}, skipped {skipped}, in {time.perf_counter() - started:.1f} s")
    return 0 if not skipped else 1 if explained else 2


# ---------------------------------------------------------------------------------------------- filters


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("--layer", required=True, help="layer name or 'outer/inner' path")
    parser.add_argument("--filters", type=_positive_int, default=64, help="the first N filters (default 64)")
    parser.add_argument("--size", type=_positive_int, default=None,
                        help="pattern size (default: the model's input size, else 64)")
    parser.add_argument("--steps", type=_positive_int, default=30, help="gradient ascent steps (default 30)")
    parser.add_argument("--seed", type=_int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default="filters.png", help="output PNG (default: filters.png)")
    parser.add_argument("--unsafe", action="store_true", help="load with safe_mode=False (trusted files only)")


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


class Command(NamedTuple):
    """A subcommand: its one-line help, its --help description, and its two functions."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: name -> Command, in the order `keras-cam --help` lists them.
COMMANDS: Dict[str, Command] = {
    "explain": Command(
        help="heatmap overlays for images, from a saved .keras model",
        description=_EXPLAIN_DESCRIPTION,
        add_arguments=_add_explain,
        run=_run_explain,
    ),
    "filters": Command(
        help="a grid of the patterns a layer's filters respond to, from a saved .keras model",
        description="Gradient ascent on the input for each filter of --layer (all filters in one batch), "
                    "written as one mosaic PNG.",
        add_arguments=_add_filters,
        run=_run_filters,
    ),
    "demo": Command(
        help="train a small CNN with a CAMHead on synthetic shapes and write CAM overlays",
        description="Trains a small CNN ending in a CAMHead on synthetic shapes (make_shapes), prints the "
                    "validation accuracy and the pointing game of its class activation maps, and writes to "
                    "--out: the maps of 8 held-out images after every epoch (snapshots/, with "
                    "evolution.png/.gif), overlays per class, correct and wrong predictions, a comparison "
                    "of every explainer (methods.md, methods.png) and summary.json. Needs no download; "
                    "a few minutes on 2 CPU cores.",
        add_arguments=_add_demo,
        run=_run_demo,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of `COMMANDS`."""
    parser = _Parser(
        prog=PROG,
        description="Class activation maps, Grad-CAM family heatmaps and filter visualization for Keras 3 "
                    "models (TensorFlow, JAX or PyTorch backend: set KERAS_BACKEND). Errors are one line; "
                    "KERAS_CAM_DEBUG=1 adds the traceback.",
    )
    from keras_cam import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.description)
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


# ------------------------------------------------------------------------------------------------ errors


def _one_line(error: BaseException) -> str:
    """An error's message as one line: TensorFlow's autograph wrapper ("in user code: File ..., line N")
    stripped down to the original message, OpenCV's source location dropped."""
    text = str(error)
    if "in user code:" in text:
        lines = text.splitlines()
        frames = [i for i, line in enumerate(lines) if line.strip().startswith('File "')]
        if frames:
            rest = lines[frames[-1] + 1 :]  # the last frame's source line, a blank line, then the message
            blank = next((i for i, line in enumerate(rest) if not line.strip()), 0)
            text = "\n".join(rest[blank:]).strip() or text
            prefix = f"{type(error).__name__}: "
            text = text[len(prefix):] if text.startswith(prefix) else text
    text = " ".join(text.split())
    if type(error).__name__ == "error" and type(error).__module__.startswith("cv2"):
        text = text.split(" error: ", 1)[-1]  # "OpenCV(5.0.0) /io/.../file.cpp:79: error: (-215...) ..."
    return text or type(error).__name__


# Allocation failures, by type name (torch, TensorFlow: no backend import) and by text (XLA's, OpenCV's, ...).
_OUT_OF_MEMORY_TYPES = ("OutOfMemoryError", "ResourceExhaustedError")
_OUT_OF_MEMORY_TEXTS = ("Failed to allocate", "RESOURCE_EXHAUSTED", "Insufficient memory", "out of memory",
                        "OOM when allocating")


def _out_of_memory(error: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED
    and OpenCV's "Failed to allocate"."""
    if isinstance(error, MemoryError) or type(error).__name__ in _OUT_OF_MEMORY_TYPES:
        return True
    return any(text in str(error) for text in _OUT_OF_MEMORY_TEXTS)


def _report(error: BaseException) -> int:
    """Prints an error from a subcommand as one line on stderr; returns the exit status."""
    if os.environ.get("KERAS_CAM_DEBUG", "") not in ("", "0"):
        traceback.print_exception(type(error), error, error.__traceback__)
    message = _one_line(error)
    if _out_of_memory(error):
        line, status = (f"out of memory ({message[:300]}); use a smaller --batch-size or --size, or smaller "
                        "images"), 2
    elif isinstance(error, USER_ERRORS) or type(error).__module__.startswith("cv2"):
        # One line, like argparse's own errors: the library's messages already say what to fix.
        line, status = message, 2
    else:
        line, status = (f"{type(error).__name__}: {message} (unexpected: set KERAS_CAM_DEBUG=1 for the "
                        "traceback)"), INTERNAL_ERROR
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return status


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
    """Runs the command line; returns the exit status.

    0 ok; 1 some images skipped (`explain`); 2 a usage, input or model error, or nothing could be done;
    3 an unexpected error (a bug); 130 interrupted. Errors print one line to stderr,
    `keras-cam: error: <what to fix>`, without a traceback (KERAS_CAM_DEBUG=1 prints it first).

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
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error is one line; _report says which kind
        return _report(e)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
