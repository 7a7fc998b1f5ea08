"""`keras-cam explain --box`: a detector's boxes explained one by one, each overlay with its box drawn."""
from __future__ import annotations

import argparse
from typing import Any, List, Sequence

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


def write_box_overlays(explainer: Any, args: argparse.Namespace, paths: Sequence[str], pictures: np.ndarray,
                       inputs: np.ndarray, stems: Sequence[str]) -> int:
    """One overlay per explained box of each image (`STEM_boxK.png`), its box, label and probability drawn;
    prints one line per box (or that an image has no such box). Returns how many images were explained."""
    from keras_cam import visualize

    target = box_target(args)
    maps = explainer(inputs, targets=target)  # (N, K, H, W), zero where an image has fewer boxes
    found = target.boxes(explainer.model, inputs)
    explained = 0
    for path, picture, image_maps, boxes, stem in zip(paths, pictures, maps, found, stems):
        ranks: List[int] = list(range(len(boxes["boxes"]))) if args.box == "all" else \
            [args.box] if args.box < len(boxes["boxes"]) else []
        if not ranks:
            print(f"{path}: no box {'' if args.box == 'all' else f'#{args.box} '}with probability >= "
                  f"{args.min_score} (lower --min-score)")
            continue
        for k in ranks:
            box, label = boxes["boxes"][k], int(boxes["labels"][k])
            probability = float(boxes["probabilities"][k])
            out = f"{stem}_box{k}"
            visualize.save_image(out + ".png", visualize.overlay(
                picture, image_maps[k], alpha=args.alpha, colormap=args.colormap, boxes=box[None],
                labels=[label], scores=[probability]))
            if args.save_raw:
                np.save(out + ".npy", image_maps[k])
            shown = ", ".join(f"{v:.1f}" for v in box)
            print(f"{path}: box {k} [{shown}] class {label} probability {probability:.3f} "
                  f"score {float(boxes['scores'][k]):.4f} -> {out}.png")
        explained += 1
    return explained

