"""`keras-cam explain`: heatmap overlays for image files and folders, from a saved .keras model."""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from typing import List, Sequence, Tuple

from keras_cam.cli._common import (PROG, SCALES, check_pixels, input_size, load_model, name_or_index,
                                   native_stderr_captured, one_line, positive_int, scale, integer)

HELP = "heatmap overlays for images, from a saved .keras model"
DESCRIPTION = (
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from keras_cam.explainers import available_methods
    from keras_cam.visualize.headers import DEFAULT_MAX_PIXELS

    parser.add_argument("model", help="a .keras model file")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...) or folders of them")
    parser.add_argument("--method", default="gradcam", help=f"one of: {', '.join(available_methods())}")
    parser.add_argument("--layer", default=None, help="layer name or 'outer/inner' path (default: last spatial)")
    parser.add_argument("--target", type=integer, default=None, help="class index (default: the predicted class)")
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
    parser.add_argument("--alpha", type=float, default=0.4, help="heatmap weight in the overlay (default 0.4)")
    parser.add_argument("--colormap", default="jet", help="OpenCV colormap name (default jet)")
    parser.add_argument("--out", default="cam_out", help="output folder (default: cam_out)")
    parser.add_argument("--save-raw", action="store_true",
                        help="also save each heatmap as a .npy array, beside its overlay")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default 16)")
    parser.add_argument("--unsafe", action="store_true",
                        help="load with safe_mode=False (allows Lambda layers' Python code: only for files "
                             "you trust)")


def _skip(path: str, reason: str) -> None:
    print(f"{PROG}: skipped {path}: {reason}", file=sys.stderr, flush=True)


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


def _read_images(paths: Sequence[str], size: Tuple[int, int], max_pixels: int) -> List[Tuple[int, object]]:
    """(position, picture) of the images that decode; the others are reported as skipped."""
    import cv2

    from keras_cam.visualize import ImageFileError, read_image

    pictures = []
    for i, path in enumerate(paths):
        # The decoders' own complaints (libpng, libjpeg) go to file descriptor 2: keep them off the terminal.
        with native_stderr_captured() as log:
            try:
                pictures.append((i, read_image(path, size, max_pixels=max_pixels)))
                continue
            except ImageFileError as e:
                reason = e.reason + (_native_detail(log) if "OpenCV" in e.reason else "")
            except (ValueError, OSError, MemoryError, cv2.error) as e:
                reason = one_line(e)
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


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from keras_cam import visualize
    from keras_cam.explainers import get_explainer
    from keras_cam.targets import output as output_target

    started = time.perf_counter()
    if args.size:  # before any work: a 100000 x 100000 resize asks for 30 GB
        check_pixels(args.size[0], args.size[1], args.max_pixels, "--size", "pass a smaller --size")
    candidates, skipped = _image_files(args.images, args.out)
    paths = _checked(candidates, args.max_pixels)  # before the model is loaded and anything is written
    skipped += len(candidates) - len(paths)
    explained = 0
    if paths:
        model = load_model(args.model, args.unsafe)
        size = input_size(model, args.size, args.max_pixels)
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
                result = explainer.compute(scale(pictures, args.scale), targets=targets)
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
