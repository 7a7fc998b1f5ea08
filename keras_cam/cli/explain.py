"""`keras-cam explain`: heatmap overlays for image files and folders, from a saved .keras model."""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import sys
import tempfile
import threading
import time
from typing import Any, List, Optional, Sequence, Tuple

from keras_cam.cli._boxes import box_choice
from keras_cam._validation import one_line
from keras_cam.cli._common import (PROG, check_pixels, input_size, integer, name_or_index, native_stderr_captured,
                                   positive_int)
from keras_cam.loading import SCALES, load_model, scale

#: The overlays' defaults, which are also `kc.explain_dataset`'s (--store --overlays).
ALPHA, COLORMAP = 0.4, "jet"
HELP = "heatmap overlays for images, from a saved .keras model"
DESCRIPTION = (
    "Loads MODEL (safe mode), reads each IMAGE with OpenCV (a folder: every image file inside, recursively, "
    "sorted), resizes it to the model's input size and writes one overlay per image under --out "
    "(NAME_METHOD.png, and NAME_METHOD.npy with --save-raw), in the images' folders relative to their common "
    "parent; inputs that would still share a name get their extension (then a number) in it, so no output is "
    "written twice. Prints the explained class and its "
    "score per image and a closing summary. Images are checked before any work: missing, unreadable or "
    "corrupt files and images above --max-pixels are reported on stderr ('keras-cam: skipped PATH: reason') "
    "and skipped, as are files that fail to decode later. With --store, the same run writes into a zarr "
    "store (heatmaps, classes, scores and paths, read back with kc.open_store) with a progress bar, the "
    "overlays (and --save-raw's .npy) only with --overlays DIR; a run that stopped resumes where it did. "
    "Exit status: 0 when every image was explained, 1 when some were skipped, 2 when none could be "
    "explained or on a usage or model error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from keras_cam.explainers import available_methods
    from keras_cam.visualize.headers import DEFAULT_MAX_PIXELS

    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    parser.add_argument("--method", default="gradcam", help=f"one of: {', '.join(available_methods())}")
    parser.add_argument("--layer", default=None, help="layer name or 'outer/inner' path (default: last spatial)")
    parser.add_argument("--composite", default=None,
                        help="LRP composite for --method lrp (default epsilon_plus_flat; see "
                             "kc.lrp.available_composites())")
    parser.add_argument("--target", type=integer, default=None, help="class index (default: the predicted class)")
    parser.add_argument("--box", type=box_choice, default=None, metavar="K|all",
                        help="a detector: explain the model's K-th most confident box (0: the first), or all "
                             "its boxes above --min-score, one overlay each with the box drawn")
    parser.add_argument("--min-score", type=float, default=0.5, metavar="P",
                        help="with --box: the boxes' smallest probability (default 0.5)")
    parser.add_argument("--output", type=name_or_index, default=None, metavar="NAME|INDEX",
                        help="the output to explain, for models with several (an integer is its index)")
    parser.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"),
                        help="resize images to H W (default: the model's input size)")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse images (and sizes) of more than N pixels, read from the file's header "
                             f"before decoding (default: {DEFAULT_MAX_PIXELS:,}, Pillow's image-bomb limit)")
    parser.add_argument("--scale", default="1/255", choices=SCALES,
                        help="input scaling: 1/255 -> [0, 1] (default), none -> [0, 255], or the "
                             "keras.applications modes caffe / tf / torch")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"heatmap weight in the overlay (default {ALPHA})")
    parser.add_argument("--colormap", default=COLORMAP, help=f"OpenCV colormap name (default {COLORMAP})")
    parser.add_argument("--out", default="cam_out", help="output folder (default: cam_out)")
    parser.add_argument("--save-raw", action="store_true",
                        help="also save each heatmap as a .npy array, beside its overlay")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--store", default=None, metavar="PATH",
                        help="write the heatmaps (float16), classes, scores and file paths into a zarr store "
                             "at PATH (a folder, e.g. maps.zarr; needs pip install \"keras-cam[zarr]\") "
                             "batch by batch, instead of one overlay per image; resumes a store of the same "
                             "model, settings, --size and files (by size and modification time), refuses "
                             "others")
    parser.add_argument("--overlays", default=None, metavar="DIR",
                        help="with --store: also write one overlay PNG per image into DIR (with --alpha, "
                             "--colormap, --save-raw, --box as without --store)")
    parser.add_argument("--no-resume", action="store_true",
                        help="with --store: start the store over instead of resuming it")
    parser.add_argument("--unsafe", action="store_true",
                        help="load with safe_mode=False (allows Lambda layers' Python code: only for files "
                             "you trust)")


#: Held while a decoder's messages are kept off file descriptor 2 (`_decode`, in the reader thread), and
#: by every write to sys.stderr meanwhile (`_LockedStream`): those must reach the terminal.
_STDERR = threading.RLock()


class _LockedStream:
    """sys.stderr, written under `_STDERR` (warnings and skips of the loop's thread wait for a decode)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with _STDERR:
            return self._stream.write(text)

    def flush(self) -> None:
        with _STDERR:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _skip(path: str, reason: str) -> None:
    from keras_cam.streaming import printable

    with _STDERR:
        print(f"{PROG}: skipped {printable(path)}: {reason}", file=sys.stderr, flush=True)


def _image_files(items: Sequence[str], out: str) -> Tuple[List[str], int]:
    """Files to explain from the command line's files and folders (each once), and how many items were
    skipped (a folder without images, reported). Folders are searched recursively in sorted order, leaving
    out --out (a second run must not explain the first one's overlays)."""
    from keras_cam.visualize.images import image_files

    files, empty = image_files(items, exclude=out)
    for folder in empty:
        _skip(folder, "a folder without image files")
    return files, len(empty)


def _output_stems(paths: Sequence[str], out: str, tag: str) -> List[str]:
    """One output path without suffix per input (`keras_cam.visualize.images.output_stems`)."""
    from keras_cam.visualize.images import output_stems

    return output_stems(paths, out, tag)


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


def _decode(path: str, size: Tuple[int, int], max_pixels: Optional[int]) -> Any:
    """Reads one image for the pipeline; a decoder's own complaint (libpng, libjpeg, on file descriptor 2)
    is kept off the terminal and added to the skip reason."""
    from keras_cam.visualize import ImageFileError, read_image

    with _STDERR, native_stderr_captured() as log:
        try:
            return read_image(path, size, max_pixels=max_pixels)
        except ImageFileError as e:  # the words of explain_dataset, and the decoder's detail
            if "OpenCV" in e.reason:
                e.reason += _native_detail(log)
            raise


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


def _check_store_options(args: argparse.Namespace) -> None:
    """Options that have no effect with (or without) --store are refused before any work."""
    if args.store is None:
        if args.overlays is not None or args.no_resume:
            raise ValueError("--overlays and --no-resume go with --store PATH (without it, every image gets "
                             "an overlay under --out)")
        return
    options = (("--save-raw", args.save_raw), ("--alpha", args.alpha != ALPHA),
               ("--colormap", args.colormap != COLORMAP))
    pictures = [name for name, used in options if used]
    if pictures and args.overlays is None:
        raise ValueError(f"with --store, {', '.join(pictures)} go with --overlays DIR (they shape the "
                         "pictures; the maps themselves are in the store): add --overlays DIR")


def _stored_rows(path: str) -> int:
    """The maps already in the store at `path` (0 when there is none); checks that zarr can be imported."""
    from keras_cam.store import open_store

    try:
        return len(open_store(path))
    except ImportError as e:
        raise ValueError(f"--store: {one_line(e)}") from None
    except ValueError:  # no store there yet, or not one (explain_dataset says what is wrong with it)
        return 0


def _scaling(mode: str) -> Optional[Any]:
    """--scale as `explain_dataset`'s `preprocess`, named after its mode: the store's settings record the
    name, so a store made with another --scale is refused instead of resumed."""
    if mode == "1/255":
        return None
    scaled = functools.partial(scale, mode=mode)
    scaled.__module__, scaled.__qualname__ = __name__, f"scale(mode={mode!r})"
    return scaled


def _in_cli_terms(error: ValueError) -> str:
    """The library's advice, with the command line's options for its arguments."""
    text = one_line(error)
    for old, new in (("resume=False", "--no-resume"), ("`store` path", "--store path")):
        text = text.replace(old, new)
    return text


def _several_outputs(args: argparse.Namespace, error: ValueError) -> Optional[str]:
    """A subclassed model shows its outputs only when it runs: say which option chooses one."""
    if args.output is None and "several outputs" in str(error):
        return "the model has several outputs; choose the one to explain with --output NAME|INDEX (and its " \
               "class with --target)"
    return None


def _explainer(args: argparse.Namespace, model: Any) -> Tuple[Any, Any]:
    """The explainer of --method, --layer and --composite, and the targets of --target, --output or --box."""
    from keras_cam.cli._boxes import box_target
    from keras_cam.explainers import get_explainer, lookup
    from keras_cam.targets import output as output_target

    options = {"layer": args.layer} if args.layer else {}
    if args.composite is not None:
        if getattr(lookup(args.method), "name", None) != "lrp":
            raise ValueError(f"--composite is an option of --method lrp, not of --method {args.method}.")
        options["composite"] = args.composite
    explainer = get_explainer(args.method, model, **options)
    if args.box is not None:  # a detector's outputs are boxes and logits, read by --box's target
        return explainer, box_target(args)
    _check_outputs(explainer, args)
    if args.output is None:
        return explainer, args.target
    return explainer, output_target(args.output, class_index=args.target)


class _Lines:
    """Counts the images written to --out and prints one line for each."""

    def __init__(self, explainer, args: argparse.Namespace) -> None:  # noqa: ANN001
        self.explainer, self.args, self.explained = explainer, args, 0

    def __call__(self, path: str, written: str, target: Any, score: float) -> None:
        from keras_cam.streaming import printable

        described = _describe_target(self.explainer, self.args, target, score)
        print(f"{printable(path)}: {described} -> {printable(written)}", flush=True)
        self.explained += 1


def _sinks(args: argparse.Namespace, explainer, files: List[str]) -> Tuple[list, Any]:  # noqa: ANN001
    """The overlays (or --box's pictures) under --out, or --overlays with --store; and what counts them."""
    from keras_cam.cli._boxes import BoxSink
    from keras_cam.streaming import file_stems
    from keras_cam.streaming_sinks import OverlaySink

    folder = args.out if args.store is None else args.overlays
    if folder is None:
        return [], None
    # Names from every input, skipped or not: where an output goes does not depend on which files fail.
    stems = file_stems(explainer, files, folder)
    if args.box is not None:
        sink = BoxSink(explainer, args, stems, report=args.store is None)
        return [sink], sink
    lines = _Lines(explainer, args) if args.store is None else None  # with --store: a progress bar
    return [OverlaySink(explainer, folder, stems, args.alpha, args.colormap, args.save_raw, lines)], lines


def _explain(args: argparse.Namespace, model: Any, files: List[str], paths: List[str]
             ) -> Tuple[int, int, Any]:
    """The checked files through the dataset pipeline (`keras_cam.streaming.Pipeline`), into --out's
    overlays or the store of --store: (explained, skipped, the store or None)."""
    from keras_cam.store import open_store
    from keras_cam.streaming import Pipeline
    from keras_cam.streaming_sinks import StoreSink
    from keras_cam.streaming_sources import check_targets, data_source

    size = input_size(model, args.size, args.max_pixels)  # within --max-pixels, before any work
    explainer, targets = _explainer(args, model)
    preprocess = _scaling(args.scale)
    source = data_source(explainer, paths, args.batch_size, preprocess, args.max_pixels,
                         keep_pictures=args.store is None or args.overlays is not None, hw=size,
                         decode=_decode)
    targets = check_targets(targets, source)
    sinks, counted = _sinks(args, explainer, files)
    store = None
    if args.store is not None:  # a store made with another --size is not resumed
        extra = {"size": list(size)} if args.size else None
        store = StoreSink(explainer, source, args.store, targets, args.batch_size, args.batch_size, "float16",
                          not args.no_resume, preprocess, extra)
    with contextlib.redirect_stderr(_LockedStream(sys.stderr)):
        skipped = Pipeline(explainer, source, targets, sinks, store, args.batch_size, args.batch_size,
                           verbose=int(store is not None), on_skip=_skip).run()
    if store is None:
        return counted.explained, len(skipped), None
    written = open_store(store.writer.path)
    return len(written), len(written.skipped), written


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    _check_store_options(args)
    before = None if args.store is None else _stored_rows(args.store)  # also: is zarr there
    if args.size:  # before any work: a 100000 x 100000 resize asks for 30 GB
        check_pixels(args.size[0], args.size[1], args.max_pixels, "--size", "pass a smaller --size")
    candidates, skipped = _image_files(args.images, args.out if args.store is None else args.overlays)
    paths = _checked(candidates, args.max_pixels)  # before the model is loaded and anything is written
    skipped += len(candidates) - len(paths)
    explained, store = 0, None
    if paths:
        model = load_model(args.model, args.unsafe)
        try:
            explained, more, store = _explain(args, model, candidates, paths)
        except ImportError as e:
            if args.store is None:
                raise
            raise ValueError(f"--store: {one_line(e)}") from None
        except ValueError as e:
            raise ValueError(_several_outputs(args, e) or _in_cli_terms(e)) from None
        except OSError as e:  # zarr's own errors name a file inside the store
            inside = args.store and os.path.abspath(e.filename or "").startswith(os.path.abspath(args.store))
            if not inside:
                raise
            raise ValueError(f"cannot write the store '{args.store}': {e.strerror or one_line(e)}; pass "
                             "another --store path") from None
        skipped += more
    seconds = time.perf_counter() - started
    plural = "" if explained == 1 else "s"
    if store is None:
        print(f"explained {explained} image{plural}, skipped {skipped}, in {seconds:.1f} s")
        return 0 if not skipped else 1 if explained else 2
    explained -= 0 if args.no_resume else before
    plural = "" if explained == 1 else "s"
    print(f"explained {explained} image{plural}, skipped {skipped}, in {seconds:.1f} s "
          f"({explained / max(seconds, 1e-9):.1f} images/s) -> {args.store} ({len(store)} maps)")
    return 0 if not skipped else 1 if len(store) else 2
