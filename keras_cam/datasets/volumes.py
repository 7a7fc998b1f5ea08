"""Synthetic 3-D volumes with one solid each, and masks marking it: an offline dataset to score 3-D CAMs.

Each volume is a dim background with a smooth gradient and voxel noise, a few small bright blobs (distractors,
of no class) and one solid at a random position, filled with one brightness plus mild texture. The solid's
volume is drawn independently of its class, so size is no shortcut; blobs keep at least one voxel away from
it, so its mask is exactly the voxels that show the solid.

The solid, the background and the blobs come from three independent streams of the seed: changing
`clutter` or `distractors` leaves labels, masks and the solid's brightness as they are.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from keras_cam._validation import check_int
from keras_cam.datasets._common import balanced_labels, check_amount, check_classes, streams

__all__ = ["SOLIDS", "make_volumes"]

SOLIDS = ("ball", "cube", "torus", "cross")

# Object volume as a fraction of the volume; the pointing game's chance level is about its mean (0.045).
# In 3-D a small fraction is a large object (4.5 % of 32^3 is a ball 14 voxels wide), and larger ones
# cover the centre: at 5-10 % the centre voxel alone lay on 84 % of the solids (about 45 % at 3-6 %). At
# 2-4 %, CAMs of a small Conv3D network (1/4 resolution) missed more often: pointing game 0.82-0.95 against
# 0.99 here.
_FRACTION = (0.03, 0.06)
_MIN_SIZE = 16
_TORUS_RADIUS = 1.5  # the circle the tube follows, in tube radii: the hole is one tube radius wide
# Volume of each solid in units of s**3, s being its size parameter: ball radius s; cube half-side s; torus
# tube radius s; cross of three rods of half-length s and half-width 0.3s (3 * 2s * (0.6s)^2 - 2 * (0.6s)^3).
_UNIT_VOLUME = {"ball": 4 / 3 * np.pi, "cube": 8.0, "torus": 2 * np.pi ** 2 * _TORUS_RADIUS,
                "cross": 3 * 2 * 0.36 - 2 * 0.216}


def _solid(kind: str, grid: np.ndarray, center: np.ndarray, s: float, axis: int) -> np.ndarray:
    """The voxels (bool, like `grid[0]`) of one solid with size parameter `s`; `axis` orients the torus."""
    d = grid - center.reshape(3, 1, 1, 1)  # offsets of voxel centres, (3, S, S, S)
    if kind == "ball":
        return (d * d).sum(axis=0) <= s * s
    if kind == "cube":
        return np.abs(d).max(axis=0) <= s
    if kind == "torus":  # a tube of radius s around a circle of radius 1.5s, perpendicular to `axis`
        along = d[axis]
        ring = np.sqrt((d * d).sum(axis=0) - along * along) - _TORUS_RADIUS * s
        return ring * ring + along * along <= s * s
    a = np.abs(d)  # cross: three rods along the axes, each 2s long and 0.6s wide
    long, wide = a <= s, a <= 0.3 * s
    return (long[0] & wide[1] & wide[2]) | (wide[0] & long[1] & wide[2]) | (wide[0] & wide[1] & long[2])


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3x3 binary dilation without wrap-around (separable: one axis at a time)."""
    out = mask.copy()
    for axis in range(3):
        grown = out.copy()
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        grown[tuple(lo)] |= out[tuple(hi)]
        grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def _background(rng: np.random.Generator, size: int, clutter: float, grid: np.ndarray) -> np.ndarray:
    """A dim level (0.1-0.3), plus a linear gradient of up to 0.15 and voxel noise, both times `clutter`."""
    level = rng.uniform(0.1, 0.3)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    ramp = np.tensordot(direction, grid - (size - 1) / 2, axes=1) / size  # at most -0.87 .. 0.87
    noise = rng.normal(0.0, 0.05, grid.shape[1:])
    return level + clutter * (rng.uniform(0.0, 0.15) * ramp + noise)


def make_volumes(
    n: int,
    size: int = 32,
    seed: int = 0,
    classes: Sequence[str] = ("ball", "cube", "cross"),
    clutter: float = 1.0,
    distractors: int = 6,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates `n` cubic volumes, each with one solid of a class among clutter, and its mask.

    The solid fills 3-6 % of the volume whatever its class, so the pointing game's chance level is about
    0.045. Labels are balanced (counts differ by at most one) and shuffled. Solids stand axis-aligned (cube
    faces and cross rods along the axes); a torus lies perpendicular to a random axis. A torus is the hard
    case: its hole is not part of it, and coarse maps often peak there (a small `Conv3D` network's CAMs
    did so for about half of the tori), which is why it is not among the default classes.

    Args:
        n: number of volumes (>= 1).
        size: voxels along each side (>= 16; 32 suits a small `Conv3D` network).
        seed: non-negative integer; the same arguments give bit-identical arrays.
        classes: solid names, label `i` being `classes[i]`; 2 or more of `SOLIDS`:
            "ball", "cube", "torus", "cross".
        clutter: strength of the background gradient and voxel noise (and of the solid's texture);
            0 gives a uniform background and a uniform solid.
        distractors: small bright blobs per volume (radius 1-2.5 voxels, as bright as solids), never
            touching the solid.

    Returns:
        A tuple `(volumes, labels, masks)`: float32 `(n, size, size, size, 1)` in [0, 1] (one channel, for
        `Conv3D`), int64 `(n,)` class indices, and bool `(n, size, size, size)` marking the solid's voxels.

    Example:

    >>> from keras_cam.datasets import make_volumes
    >>> volumes, labels, masks = make_volumes(6, size=24, seed=0)
    >>> volumes.shape, labels.tolist().count(1), masks.shape
    ((6, 24, 24, 24, 1), 2, (6, 24, 24, 24))
    >>> bool(0.03 < masks.mean() < 0.06)  # the pointing game's chance level
    True
    """
    n = check_int("n", n, 1)
    size = check_int("size", size, _MIN_SIZE)
    check_int("seed", seed, 0)
    classes = check_classes(classes, SOLIDS, "solid")
    clutter = check_amount("clutter", clutter, "0 = uniform background, 1 = default")
    distractors = check_int("distractors", distractors, 0)

    solid_rng, clutter_rng, distractor_rng = streams(seed, 3)
    labels = balanced_labels(solid_rng, n, len(classes))
    grid = np.indices((size,) * 3, dtype=np.float64)
    volumes = np.empty((n, size, size, size), np.float32)
    masks = np.empty((n, size, size, size), bool)
    for i, label in enumerate(labels):
        kind = classes[label]
        s = (solid_rng.uniform(*_FRACTION) * size ** 3 / _UNIT_VOLUME[kind]) ** (1 / 3)
        axis = int(solid_rng.integers(3))
        reach = np.full(3, s)  # half-extent along each axis
        if kind == "torus":
            reach[np.arange(3) != axis] *= _TORUS_RADIUS + 1
        reach += 1.0  # one voxel of margin: the solid never touches a face
        center = solid_rng.uniform(reach, size - 1 - reach)
        mask = _solid(kind, grid, center, s, axis)
        brightness = solid_rng.uniform(0.6, 0.9)
        volume = _background(clutter_rng, size, clutter, grid)
        near = _dilate(mask)
        for _ in range(distractors):
            radius = distractor_rng.uniform(1.0, 2.5)
            blob = _solid("ball", grid, distractor_rng.uniform(0, size - 1, 3), radius, 0)
            if not (blob & near).any():  # a blob that would touch the solid is left out
                volume[blob] = distractor_rng.uniform(0.6, 0.9)
        texture = clutter_rng.normal(0.0, 0.03 * clutter, int(mask.sum()))
        volume[mask] = brightness + texture
        volumes[i] = np.clip(volume, 0.0, 1.0)
        masks[i] = mask
    return volumes[..., None], labels, masks
