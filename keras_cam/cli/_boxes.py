"""`keras-cam explain --box`: a detector's boxes explained one by one, each overlay with its box drawn."""
from __future__ import annotations

import argparse
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

#: How many boxes `--box all` explains per image at most.
MAX_BOXES = 20


def box_choice(text: str) -> Any:
    """--box: a box's rank (0 = the model's most confident box) or 'all'."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a box rank >= 0 or 'all', got {text!r}")
    return value


def box_target(args: argparse.Namespace) -> Any:
    """The detection target of --box and --min-score: the model's own boxes, most confident first."""
    from keras_cam.detection import detection

    count = MAX_BOXES if args.box == "all" else args.box + 1
    return detection(max_boxes=count, min_score=args.min_score)


class BoxSink:
    """`keras-cam explain --box` as a sink of the dataset pipeline (`keras_cam.streaming_sinks.Sink`): one
    overlay per explained box of each image (`STEM_boxK.png`, and `.npy` with --save-raw), its box, label
    and probability drawn, and one line per box (or that an image has no such box). `explained` counts the
    images with a box."""

    def __init__(self, explainer: Any, args: argparse.Namespace, stems: Dict[str, str],
                 report: bool = True) -> None:
        self.explainer, self.args, self.stems, self.report = explainer, args, stems, report
        self.target = box_target(args)
        self.explained = 0

    def take(self, explained: Any) -> Optional[Callable[[], None]]:
        batch = explained.batch
        if not explained.rows:
            return None
        # The boxes of the maps (N, K, H, W): the model's own, read on this thread (the model runs here).
        found = self.target.boxes(self.explainer.model, batch.x)
        return functools.partial(self._write, batch.paths, batch.pictures, explained.heatmaps, found)

    def finish(self) -> None:
        pass

    def _write(self, paths: Sequence[str], pictures: np.ndarray, maps: np.ndarray,
               found: Sequence[Dict[str, np.ndarray]]) -> None:
        from keras_cam import visualize
        from keras_cam.streaming_sources import printable

        args = self.args
        for path, picture, image_maps, boxes in zip(paths, pictures, maps, found):
            ranks: List[int] = list(range(len(boxes["boxes"]))) if args.box == "all" else \
                [args.box] if args.box < len(boxes["boxes"]) else []
            if not ranks:
                self._print(f"{printable(path)}: no box {'' if args.box == 'all' else f'#{args.box} '}with "
                            f"probability >= {args.min_score} (lower --min-score)")
                continue
            for k in ranks:
                box, label = boxes["boxes"][k], int(boxes["labels"][k])
                probability = float(boxes["probabilities"][k])
                out = f"{self.stems[path]}_box{k}"
                visualize.save_image(out + ".png", visualize.overlay(
                    picture, image_maps[k], alpha=args.alpha, colormap=args.colormap, boxes=box[None],
                    labels=[label], scores=[probability]))
                if args.save_raw:
                    np.save(out + ".npy", image_maps[k])
                shown = ", ".join(f"{v:.1f}" for v in box)
                self._print(f"{printable(path)}: box {k} [{shown}] class {label} "
                            f"probability {probability:.3f} score {float(boxes['scores'][k]):.4f} "
                            f"-> {printable(out)}.png")
            self.explained += 1

    def _print(self, line: str) -> None:
        if self.report:
            print(line, flush=True)
