"""Synthetic shapes on cluttered backgrounds, with ground-truth masks: an offline dataset for CAM work.

Every heatmap of a model trained on these can be scored against the truth (`kc.metrics.pointing_game`).
Generation is deterministic for a seed and uses its own `numpy.random.Generator`, never the global state.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

__all__ = ["SHAPES", "make_multilabel_shapes", "make_shapes"]

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring")


def _check(n: int, size: int, classes: Sequence[str]) -> Tuple[str, ...]:
    if int(n) < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    if int(size) < 16:
        raise ValueError(f"`size` must be >= 16 pixels, got {size}.")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"`classes` must be 2 or more distinct names from {', '.join(SHAPES)}; got {classes}.")
    return classes


def _polygon(center: np.ndarray, radius: float, angle: float, points: int, inner: float = 1.0) -> np.ndarray:
    """Vertices of a regular polygon (inner < 1 alternates radii: a star)."""
    k = points * (2 if inner != 1.0 else 1)
    t = angle + np.arange(k) * 2 * np.pi / k
    r = np.where(np.arange(k) % 2 == 1, radius * inner, radius) if inner != 1.0 else np.full(k, radius)
    return np.round(np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], -1)).astype(np.int32)


def _shape_mask(kind: str, size: int, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    c = tuple(int(v) for v in np.round(center))
    if kind == "circle":
        cv2.circle(mask, c, int(round(radius)), 1, -1)
    elif kind == "square":
        cv2.fillPoly(mask, [_polygon(center, radius * 1.1, angle, 4)], 1)
    elif kind == "triangle":
        cv2.fillPoly(mask, [_polygon(center, radius * 1.25, angle, 3)], 1)
    elif kind == "cross":
        arm = _polygon(np.zeros(2), radius * 1.15, angle, 2)  # two opposite points: one bar
        for rot in (0.0, np.pi / 2):
            rr = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
            p0, p1 = (arm @ rr.T) + center
            cv2.line(mask, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1,
                     max(2, int(round(radius * 0.45))))
    elif kind == "star":
        cv2.fillPoly(mask, [_polygon(center, radius * 1.25, angle, 5, inner=0.45)], 1)
    elif kind == "ring":
        cv2.circle(mask, c, int(round(radius)), 1, -1)
        cv2.circle(mask, c, int(round(radius * 0.55)), 0, -1)
    return mask.astype(bool)


def _background(rng: np.random.Generator, size: int, clutter: float) -> np.ndarray:
    """A smooth two-colour gradient, pixel noise and random thin lines and blobs (clutter)."""
    a, b = rng.random(3), rng.random(3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    angle = rng.random() * 2 * np.pi
    ramp = (np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None])
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    img = a[None, None] * (1 - ramp[..., None]) + b[None, None] * ramp[..., None]
    img = img.astype(np.float32)
    for _ in range(int(round(clutter * 6))):
        p0, p1 = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), tuple(float(v) for v in rng.random(3)), 1)
    img += rng.normal(0, 0.04 * clutter + 0.01, img.shape).astype(np.float32)
    return img


def _distractors(rng: np.random.Generator, img: np.ndarray, count: int, size: int) -> None:
    """Small ellipses, dots and short thick strokes: not of any shape family, but object-like in colour."""
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
    if np.abs(color - under).sum() < 0.9:
        color = np.where(under > 0.5, color * 0.35, 0.65 + color * 0.35).astype(np.float32)
    img[mask] = color + rng.normal(0, 0.03, (int(mask.sum()), 3)).astype(np.float32)


def make_shapes(
    n: int,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    clutter: float = 1.0,
    distractors: int = 4,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` images, each with one shape of a class on a cluttered background, and the shape's mask.

    Args:
        n: number of images.
        size: image height and width (>= 16).
        seed: the same seed gives bit-identical arrays.
        classes: shape names (label i = classes[i]) from `SHAPES`: circle, square, triangle, cross, star, ring.
        clutter: background clutter (lines, noise) strength; 0 gives a clean gradient.
        distractors: small non-shape blobs and strokes per image.

    Returns:
        `(images, labels, masks)`: float32 (n, size, size, 3) in [0, 1], int64 (n,) balanced over the
        classes, bool (n, size, size) marking the object's pixels.

    Example:

    ```python
    images, labels, masks = kc.datasets.make_shapes(512, size=48, seed=0)
    ```
    """
    classes = _check(n, size, classes)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(classes)).astype(np.int64)
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), bool)
    for i, label in enumerate(labels):
        img = _background(rng, size, clutter)
        _distractors(rng, img, distractors, size)
        radius = size * rng.uniform(0.15, 0.24)
        center = rng.uniform(radius * 1.3, size - radius * 1.3, 2)
        mask = _shape_mask(classes[label], size, center, radius, rng.random() * 2 * np.pi)
        _paint(rng, img, mask)
        images[i] = np.clip(img, 0.0, 1.0)
        masks[i] = mask
    return images, labels, masks


def make_multilabel_shapes(
    n: int,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    max_objects: int = 3,
    clutter: float = 1.0,
    distractors: int = 3,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with 1 to `max_objects` shapes of distinct classes, for sigmoid (multi-label) models.

    Returns:
        `(images, labels, masks)`: float32 (n, size, size, 3) in [0, 1], float32 multi-hot (n, C), and bool
        (n, C, size, size) with one mask per class (all False for absent classes). Objects do not overlap.
    """
    classes = _check(n, size, classes)
    if not 1 <= int(max_objects) <= len(classes):
        raise ValueError(f"`max_objects` must be in 1..{len(classes)}, got {max_objects}.")
    rng = np.random.default_rng(seed)
    c = len(classes)
    images = np.empty((n, size, size, 3), np.float32)
    labels = np.zeros((n, c), np.float32)
    masks = np.zeros((n, c, size, size), bool)
    for i in range(n):
        img = _background(rng, size, clutter)
        _distractors(rng, img, distractors, size)
        taken = np.zeros((size, size), bool)
        for label in rng.permutation(c)[: rng.integers(1, int(max_objects) + 1)]:
            for _ in range(30):  # rejection sampling for a free spot
                radius = size * rng.uniform(0.11, 0.17)
                center = rng.uniform(radius * 1.3, size - radius * 1.3, 2)
                mask = _shape_mask(classes[label], size, center, radius, rng.random() * 2 * np.pi)
                if not (cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & taken).any():
                    break
            else:
                continue
            _paint(rng, img, mask)
            taken |= mask
            labels[i, label] = 1.0
            masks[i, label] = mask
        if not labels[i].any():  # crowded: fall back to one object
            label = int(rng.integers(c))
            radius = size * 0.15
            mask = _shape_mask(classes[label], size, np.array([size / 2, size / 2]), radius, 0.0)
            _paint(rng, img, mask)
            labels[i, label], masks[i, label] = 1.0, mask
        images[i] = np.clip(img, 0.0, 1.0)
    return images, labels, masks
