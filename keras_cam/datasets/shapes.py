"""Synthetic 2-D shapes on cluttered backgrounds, with ground-truth masks (and boxes).

- `make_shapes`: one labelled shape per image (softmax classification).
- `make_multilabel_shapes`: one to `max_objects` shapes of distinct classes per image (sigmoid, multi-label).

Each image is a smooth two-colour gradient with pixel noise, thin random lines and small distractors (dots,
small ellipses, short strokes: none of them looks like a class shape), and the object(s) painted on top in a
random colour that contrasts with what lies under them, at a random position. An object's area is drawn
independently of its class, so size is no shortcut: a classifier has to look at the outline. Shapes stand
upright by default (`rotation=0`); turning them freely makes the task much slower to learn. Masks are drawn
without anti-aliasing, so a mask is exactly the set of pixels painted with the object's colour.

The argument checks at the top are shared by the signal and volume generators of this package.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from keras_cam._validation import check_int
from keras_cam.datasets._common import balanced_labels, check_amount, check_classes

__all__ = ["SHAPES", "make_multilabel_shapes", "make_shapes"]

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")

# Pixels covered by each shape drawn with radius r, in units of r**2 (measured on a 1000 px canvas), and how
# far the shape reaches from its centre at the worst rotation, in units of r. Sizes are drawn as an area
# fraction and turned into a radius with the first table; the second keeps every object inside the image.
_UNIT_AREA = {"circle": 3.142, "square": 2.43, "triangle": 2.04, "cross": 2.20, "star": 2.09, "ring": 2.19}
_EXTENT = {"circle": 1.0, "square": 1.1, "triangle": 1.3, "cross": 1.4, "star": 1.3, "ring": 1.0}
# The angle at which each shape stands upright: square axis-aligned, triangle and star pointing up, cross a
# "+". `rotation` turns shapes away from this pose. Measured with a 4-layer CNN on 1,500 images at 48 px:
# upright shapes reach ~0.95 validation accuracy in 5 epochs; turns of +-20 degrees stay below 0.6, free turns
# near chance.
_UPRIGHT = {"circle": 0.0, "square": np.pi / 4, "triangle": -np.pi / 2, "cross": 0.0, "star": -np.pi / 2,
            "ring": 0.0}

# Object area as a fraction of the image: large enough to classify at 48 px, small enough that a random
# point lands on the object rarely (the pointing game's chance level is about the mean area).
_AREA_SINGLE = (0.08, 0.18)
_AREA_MULTI = (0.04, 0.08)  # per object; up to six of them must fit without overlapping


def _check(n: object, size: object, seed: object, classes: Sequence[str], clutter: object,
           distractors: object, rotation: object) -> Tuple[int, int, Tuple[str, ...]]:
    """Validates the arguments shared by both shape generators; returns `(n, size, classes)`."""
    n = check_int("n", n, 1)
    size = check_int("size", size, 16)
    check_int("seed", seed, 0)
    classes = check_classes(classes, SHAPES, "shape")
    check_amount("clutter", clutter, "0 = clean gradient, 1 = default")
    check_int("distractors", distractors, 0)
    if isinstance(rotation, bool) or not isinstance(rotation, (int, float, np.number)) \
            or not 0 <= rotation <= 180:
        raise ValueError("`rotation` must be a number of degrees in [0, 180] (0 = upright, 180 = any "
                         f"angle), got {rotation!r}.")
    return n, size, classes


_SHIFT = 4  # cv2 fixed-point bits: sub-pixel centres and radii, so areas vary smoothly with the radius
_ONE = 1 << _SHIFT


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _polygon(center: np.ndarray, radius: float, angle: float, points: int, inner: float = 1.0) -> np.ndarray:
    """Vertices of a regular polygon; `inner` < 1 alternates outer and inner radii (a star)."""
    k = points * (2 if inner != 1.0 else 1)
    t = angle + np.arange(k) * 2 * np.pi / k
    r = np.where(np.arange(k) % 2 == 1, radius * inner, radius) if inner != 1.0 else np.full(k, radius)
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], -1)


def _shape_mask(kind: str, size: int, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """The pixels of one shape turned by `angle` (radians) from upright, drawn without anti-aliasing (LINE_8),
    so the mask is exactly what is painted."""
    mask = np.zeros((size, size), np.uint8)
    angle = angle + _UPRIGHT[kind]
    c = tuple(int(v) for v in _fixed(center))
    if kind in ("circle", "ring"):
        cv2.circle(mask, c, int(_fixed(radius)), 1, -1, cv2.LINE_8, _SHIFT)
        if kind == "ring":
            cv2.circle(mask, c, int(_fixed(radius * 0.55)), 0, -1, cv2.LINE_8, _SHIFT)
    elif kind == "cross":
        arm = _polygon(np.zeros(2), radius * 1.15, angle, 2)  # two opposite points: one bar
        for rot in (0.0, np.pi / 2):
            rr = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
            p0, p1 = _fixed((arm @ rr.T) + center)
            cv2.line(mask, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1,
                     max(2, int(round(radius * 0.45))), cv2.LINE_8, _SHIFT)
    else:
        outline = {"square": (1.1, 4, 1.0), "triangle": (1.25, 3, 1.0), "star": (1.25, 5, 0.45)}[kind]
        cv2.fillPoly(mask, [_fixed(_polygon(center, radius * outline[0], angle, outline[1], outline[2]))], 1,
                     cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def _random_shape(rng: np.random.Generator, kind: str, size: int, area: Tuple[float, float],
                  rotation: float) -> np.ndarray:
    """The mask of a `kind` shape covering a random fraction `area` of the image, at a random place, turned
    by up to `rotation` degrees either way."""
    target = rng.uniform(*area) * size * size
    angle = np.deg2rad(rotation) * rng.uniform(-1.0, 1.0)
    radius = math.sqrt(target / _UNIT_AREA[kind])
    # Outlines add relatively more pixels to small shapes: measure once at the centre and correct the radius,
    # so the area, not the class, decides how big the object is.
    probe = _shape_mask(kind, size, np.full(2, size / 2), radius, angle)
    radius *= math.sqrt(target / max(int(probe.sum()), 1))
    # Pixel centres run from 0 to size - 1; half a pixel of rasterization and one of margin keep the object
    # off the border, so it is always whole.
    reach = radius * _EXTENT[kind] + 1.5
    center = rng.uniform(reach, size - 1 - reach, 2)
    return _shape_mask(kind, size, center, radius, angle)


def _background(rng: np.random.Generator, size: int, clutter: float) -> np.ndarray:
    """A smooth two-colour gradient, pixel noise and thin random lines."""
    a, b = rng.random(3), rng.random(3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    angle = rng.random() * 2 * np.pi
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = (a[None, None] * (1 - ramp[..., None]) + b[None, None] * ramp[..., None]).astype(np.float32)
    for _ in range(int(round(clutter * 6))):
        p0, p1 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        color = tuple(float(v) for v in rng.random(3))
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), color, 1)
    img += rng.normal(0, 0.04 * clutter + 0.01, img.shape).astype(np.float32)
    return img


def _distractors(rng: np.random.Generator, img: np.ndarray, count: int, size: int) -> None:
    """Small ellipses, dots and short thick strokes: object-like in colour, but of no shape family."""
    for _ in range(count):
        color = tuple(float(v) for v in rng.random(3))
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        kind = rng.integers(0, 3)
        if kind == 0:
            axes = (int(rng.integers(1, max(2, size // 14))), int(rng.integers(1, max(2, size // 24))))
            cv2.ellipse(img, c, axes, float(rng.random() * 180), 0, 360, color, -1)
        elif kind == 1:
            cv2.circle(img, c, int(rng.integers(1, max(2, size // 28) + 1)), color, -1)
        else:
            d = rng.integers(-size // 8, size // 8 + 1, 2)
            cv2.line(img, c, (c[0] + int(d[0]), c[1] + int(d[1])), color, max(1, size // 32))


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """Fills the object with a colour that contrasts with the background under it, plus mild texture."""
    under = img[mask].mean(axis=0)
    color = rng.random(3).astype(np.float32)
    if np.abs(color - under).sum() < 0.9:  # too close: push it to the other end of the range
        color = np.where(under > 0.5, color * 0.35, 0.65 + color * 0.35).astype(np.float32)
    img[mask] = color + rng.normal(0, 0.03, (int(mask.sum()), 3)).astype(np.float32)


def make_shapes(
    n: int,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    clutter: float = 1.0,
    distractors: int = 4,
    rotation: float = 0.0,
    return_boxes: bool = False,
    shortcut: Optional[Dict[str, Any]] = None,
) -> Tuple[np.ndarray, ...]:
    """Generates `n` images, each with one shape of a class on a cluttered background, and its mask.

    The object covers 8-18 % of the image whatever its class, so the pointing game's chance level is about
    0.13. Labels are balanced (counts differ by at most one) and shuffled. Asking for boxes changes nothing
    else: the first three arrays are the same with and without them.

    Args:
        n: number of images (>= 1).
        size: image height and width in pixels (>= 16; 48 or 64 suit a small CNN).
        seed: non-negative integer; the same arguments give bit-identical arrays.
        classes: shape names, label `i` being `classes[i]`; 2 or more of `SHAPES`:
            "circle", "square", "triangle", "cross", "star", "ring".
        clutter: strength of the background clutter (lines and noise); 0 gives a clean gradient.
        distractors: small dots, ellipses and strokes per image (not shaped like any class).
        rotation: the largest turn, in degrees either way, away from the upright pose (square axis-aligned,
            triangle and star pointing up, cross a "+"). 0 keeps shapes upright, which a small CNN learns
            in a few epochs; 180 allows any orientation, a much harder task.
        return_boxes: also return each object's bounding box, e.g. to score
            `keras_cam.metrics.localization_accuracy`.
        shortcut: plant a known shortcut, the ground truth of `kc.audit`: a dict
            `dict(class_index=0, share=0.8, corner="top-left", size=None)`. A small black-and-white
            checkerboard mark (`size` pixels a side, default `max(4, size // 10)`, 1 pixel from the edges)
            is painted in `corner` ("top-left", "top-right", "bottom-left", "bottom-right") on
            `round(share * count)` of the `count` images of class `class_index`, chosen at random; the
            other images carry no mark. Everything else is drawn as without it (the mark's choices use
            their own generator), except that mask pixels under the mark are cleared.

    Returns:
        A tuple `(images, labels, masks)`: float32 `(n, size, size, 3)` RGB in [0, 1], int64 `(n,)` class
        indices, and bool `(n, size, size)` marking the object's pixels. With `return_boxes=True`,
        `(images, labels, masks, boxes)`, boxes being int64 `(n, 4)` rows `(x0, y0, x1, y1)`, half-open and
        tight: `masks[i, y0:y1, x0:x1]` holds every pixel of object `i`, and each edge of the box touches it.
        With `shortcut`, one more array comes last: bool `(n,)` `marked`, the images that carry the mark.

    Example:

    >>> from keras_cam.datasets import make_shapes
    >>> images, labels, masks = make_shapes(6, size=48, seed=0)
    >>> images.shape, labels.tolist().count(0), masks.dtype
    ((6, 48, 48, 3), 2, dtype('bool'))
    >>> *_, boxes = make_shapes(6, size=48, seed=0, return_boxes=True)
    >>> x0, y0, x1, y1 = boxes[0]
    >>> int(masks[0, y0:y1, x0:x1].sum()) == int(masks[0].sum())
    True
    >>> images, labels, masks, marked = make_shapes(
    ...     30, size=48, seed=0, shortcut=dict(class_index=0, share=0.5))
    >>> int(marked.sum()), bool((labels[marked] == 0).all())
    (5, True)
    """
    n, size, classes = _check(n, size, seed, classes, clutter, distractors, rotation)
    if not isinstance(return_boxes, (bool, np.bool_)):
        raise ValueError(f"`return_boxes` must be True or False, got {return_boxes!r}.")
    mark = None if shortcut is None else _check_shortcut(shortcut, len(classes), size)
    rng = np.random.default_rng(seed)
    labels = balanced_labels(rng, n, len(classes))
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), bool)
    for i, label in enumerate(labels):
        img = _background(rng, size, clutter)
        _distractors(rng, img, distractors, size)
        mask = _random_shape(rng, classes[label], size, _AREA_SINGLE, rotation)
        _paint(rng, img, mask)  # painted last, so every mask pixel shows the object
        images[i] = np.clip(img, 0.0, 1.0)
        masks[i] = mask
    out = (images, labels, masks) + ((_mask_boxes(masks),) if return_boxes else ())
    if mark is None:
        return out
    return out + (_plant(images, labels, masks, seed, **mark),)


_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _check_shortcut(shortcut: object, num_classes: int, size: int) -> Dict[str, Any]:
    """`make_shapes`'s `shortcut` dict, validated, with its defaults filled in."""
    keys = ("class_index", "share", "corner", "size")
    if not isinstance(shortcut, dict) or set(shortcut) - set(keys):
        raise ValueError("`shortcut` must be a dict with keys among " + ", ".join(keys) + ", e.g. "
                         f"dict(class_index=0, share=0.8); got {shortcut!r}.")
    index = shortcut.get("class_index", 0)
    index = check_int("shortcut['class_index']", index, 0, num_classes - 1)
    share = shortcut.get("share", 0.8)
    if isinstance(share, bool) or not isinstance(share, (int, float, np.number)) or not 0 <= share <= 1:
        raise ValueError(f"`shortcut['share']` must be a number in [0, 1] (the share of class "
                         f"{index}'s images that carry the mark), got {share!r}.")
    corner = shortcut.get("corner", "top-left")
    if corner not in _CORNERS:
        raise ValueError(f"`shortcut['corner']` must be one of {', '.join(_CORNERS)}, got {corner!r}.")
    side = shortcut.get("size")
    side = max(4, size // 10) if side is None else side
    side = check_int("shortcut['size']", side, 2, size // 3)  # pixels
    return dict(class_index=int(index), share=float(share), corner=corner, side=int(side))


def _plant(images: np.ndarray, labels: np.ndarray, masks: np.ndarray, seed: int, class_index: int,
           share: float, corner: str, side: int) -> np.ndarray:
    """Paints the mark on a share of one class's images (in place, on the arrays just made); returns
    `marked`. Its own generator: the images are otherwise those drawn without a shortcut."""
    rng = np.random.default_rng([seed, 0x5C])
    members = np.flatnonzero(labels == class_index)
    chosen = rng.choice(members, size=int(round(share * members.size)), replace=False)
    size = images.shape[1]
    y0 = 1 if corner.startswith("top") else size - 1 - side
    x0 = 1 if corner.endswith("left") else size - 1 - side
    # A black-and-white checkerboard of side // 4 pixel cells: a pattern no background, distractor or
    # object has.
    cells = ((np.arange(side)[:, None] // max(1, side // 4)) + (np.arange(side)[None, :] // max(1, side // 4))) % 2
    images[chosen, y0:y0 + side, x0:x0 + side, :] = cells[None, :, :, None].astype(np.float32)
    masks[chosen, y0:y0 + side, x0:x0 + side] = False
    marked = np.zeros(len(labels), bool)
    marked[chosen] = True
    return marked


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """int64 (N, 4) half-open boxes `(x0, y0, x1, y1)` tight around non-empty (N, H, W) masks."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    y0, x0 = rows.argmax(axis=1), cols.argmax(axis=1)
    y1 = rows.shape[1] - rows[:, ::-1].argmax(axis=1)  # one past the last occupied row
    x1 = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)


def make_multilabel_shapes(
    n: int,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    max_objects: int = 3,
    clutter: float = 1.0,
    distractors: int = 3,
    rotation: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates images with 1 to `max_objects` shapes of distinct classes, for sigmoid (multi-label) models.

    Each object covers 4-8 % of the image, and objects never touch: each is at least one pixel away from the
    others (a shape that finds no free spot after 30 tries is left out, and its label stays 0).

    Args:
        n: number of images (>= 1).
        size: image height and width in pixels (>= 16).
        seed: non-negative integer; the same arguments give bit-identical arrays.
        classes: shape names, column `c` of the labels being `classes[c]`; 2 or more of `SHAPES`.
        max_objects: the most objects in one image, 1 to `len(classes)`; the count is uniform in
            1..`max_objects`, and the classes present are a random subset.
        clutter: strength of the background clutter; 0 gives a clean gradient.
        distractors: small dots, ellipses and strokes per image.
        rotation: the largest turn from the upright pose, in degrees (0 = upright, 180 = any orientation).

    Returns:
        A tuple `(images, labels, masks)`: float32 `(n, size, size, 3)` RGB in [0, 1], float32 multi-hot
        `(n, C)`, and bool `(n, C, size, size)` with one mask per class, all False for absent classes.

    Example:

    >>> from keras_cam.datasets import make_multilabel_shapes
    >>> images, labels, masks = make_multilabel_shapes(4, size=48, seed=0)
    >>> bool((masks.any(axis=(2, 3)) == labels.astype(bool)).all())
    True
    """
    n, size, classes = _check(n, size, seed, classes, clutter, distractors, rotation)
    max_objects = check_int("max_objects", max_objects, 1, len(classes))  # one object per class at most
    rng = np.random.default_rng(seed)
    c = len(classes)
    images = np.empty((n, size, size, 3), np.float32)
    labels = np.zeros((n, c), np.float32)
    masks = np.zeros((n, c, size, size), bool)
    gap = np.ones((3, 3), np.uint8)  # dilating by it keeps one free pixel between objects
    for i in range(n):
        img = _background(rng, size, clutter)
        _distractors(rng, img, distractors, size)
        taken = np.zeros((size, size), np.uint8)
        for label in rng.permutation(c)[: rng.integers(1, int(max_objects) + 1)]:
            for _ in range(30):  # rejection sampling for a free spot; the first object always finds one
                mask = _random_shape(rng, classes[label], size, _AREA_MULTI, rotation)
                if not (cv2.dilate(mask.astype(np.uint8), gap) & taken).any():
                    break
            else:
                continue
            _paint(rng, img, mask)
            taken[mask] = 1
            labels[i, label] = 1.0
            masks[i, label] = mask
        images[i] = np.clip(img, 0.0, 1.0)
    return images, labels, masks
