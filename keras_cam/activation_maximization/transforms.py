"""Random transforms applied to a pattern before the model sees it, so the pattern must survive them.

Patterns found by plain gradient ascent exploit exact pixel positions: shifted by a pixel, scaled or turned
a little, they lose most of their activation. Asking each step's image to work after a random jitter, scale
and rotation (transformation robustness, Olah et al., "Feature Visualization", Distill 2017) leaves
patterns that a model responds to wherever and however they appear, which are also the readable ones.

Every transform here is an affine map of pixel coordinates. The transforms of a list are multiplied into
one matrix per step, drawn in numpy from the seed alone (the same for every image of a batch, so a pattern
does not depend on the other patterns it shares a batch with), and applied in one bilinear resampling built
from a gather in `keras.ops`, inside the compiled step. Coordinates wrap around: a Fourier pattern is
periodic, so its resampled image has no seam, and a shift by whole pixels is exactly `roll`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam._validation import check_int, check_number

__all__ = ["Jitter", "Rotate", "Scale", "Transform", "DEFAULT_TRANSFORMS", "resample", "resolve_transforms",
           "sample_matrix"]


class Transform:
    """Base class: a random affine transform of a pattern.

    Subclasses implement `matrix(rng, hw)`: a 3x3 matrix that maps an output pixel's homogeneous
    coordinates `(y, x, 1)` to the input coordinates it samples (the inverse of the transform's action on
    the image).
    """

    name = ""

    def matrix(self, rng: np.random.Generator, hw: Tuple[int, int]) -> np.ndarray:
        raise NotImplementedError


def _about_centre(linear: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """The 3x3 matrix applying the 2x2 `linear` map about the image's centre."""
    centre = np.array([(hw[0] - 1) / 2.0, (hw[1] - 1) / 2.0])
    out = np.eye(3)
    out[:2, :2] = linear
    out[:2, 2] = centre - linear @ centre
    return out


@dataclasses.dataclass(frozen=True)
class Jitter(Transform):
    """A random shift by whole pixels, up to `pixels` in y and x (uniform, both ends included).

    Args:
        pixels: the largest shift; `None`: 1/16 of the image's shorter side (3 px at 48x48, 4 at 64x64).
    """

    pixels: Optional[int] = None
    name = "jitter"

    def __post_init__(self) -> None:
        if self.pixels is not None:
            object.__setattr__(self, "pixels", check_int("jitter pixels", self.pixels, 0))

    def matrix(self, rng: np.random.Generator, hw: Tuple[int, int]) -> np.ndarray:
        limit = max(1, round(min(hw) / 16)) if self.pixels is None else self.pixels
        dy, dx = rng.integers(-limit, limit + 1, 2)
        out = np.eye(3)
        out[:2, 2] = (-dy, -dx)  # the pixel at p shows the input at p - shift
        return out


@dataclasses.dataclass(frozen=True)
class Scale(Transform):
    """A random zoom about the centre by a factor drawn log-uniformly from [`low`, `high`].

    Args:
        low, high: the smallest and largest factors (> 0); > 1 enlarges the pattern.
    """

    low: float = 0.9
    high: float = 1.1
    name = "scale"

    def __post_init__(self) -> None:
        low = check_number("scale low", self.low, 0.0, strict=True)
        high = check_number("scale high", self.high, 0.0, strict=True)
        if high < low:
            raise ValueError(f"Scale needs low <= high, got low={self.low!r}, high={self.high!r}.")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def matrix(self, rng: np.random.Generator, hw: Tuple[int, int]) -> np.ndarray:
        factor = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return _about_centre(np.eye(2) / factor, hw)


@dataclasses.dataclass(frozen=True)
class Rotate(Transform):
    """A random rotation about the centre by up to `degrees` either way (uniform).

    Args:
        degrees: the largest angle.
    """

    degrees: float = 10.0
    name = "rotate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "degrees", check_number("rotate degrees", self.degrees, 0.0))

    def matrix(self, rng: np.random.Generator, hw: Tuple[int, int]) -> np.ndarray:
        angle = math.radians(rng.uniform(-self.degrees, self.degrees))
        cos, sin = math.cos(angle), math.sin(angle)
        return _about_centre(np.array([[cos, sin], [-sin, cos]]), hw)  # the inverse rotation samples


_NAMED = {cls.name: cls for cls in (Jitter, Scale, Rotate)}
#: `transforms="default"`: a shift by 1/16 of the size, a zoom of +-10 % and a turn of +-10 degrees.
DEFAULT_TRANSFORMS: Tuple[Transform, ...] = (Jitter(), Scale(0.9, 1.1), Rotate(10.0))


def resolve_transforms(spec: Any) -> Tuple[Transform, ...]:
    """`transforms=` as a tuple of `Transform` objects, or one clear `ValueError`.

    Accepts `"default"`; `None`, `"none"` or `()` (no transforms, as the CLI's `--transforms none`); a name (`"jitter"`, `"scale"`, `"rotate"`); or a
    sequence whose items are `Transform` objects, names, or `(name, *args)` / `(name, {kwargs})` tuples,
    e.g. `["jitter", ("scale", 0.8, 1.2), ("rotate", 20)]`. They apply in order, first to last.
    """
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return ()
    if isinstance(spec, str):
        return DEFAULT_TRANSFORMS if spec == "default" else (_named(spec, ()),)
    if isinstance(spec, Transform):
        return (spec,)
    try:
        items = list(spec)
    except TypeError:
        items = None
    if items is None:
        raise ValueError(f"`transforms` must be 'default', None, or a sequence of transforms, got {spec!r}.")
    out = []
    for item in items:
        if isinstance(item, Transform):
            out.append(item)
        elif isinstance(item, str):
            out.append(_named(item, ()))
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], str):
            out.append(_named(item[0], tuple(item[1:])))
        else:
            raise ValueError(f"Each transform must be a Transform, a name or a (name, *args) tuple; "
                             f"got {item!r}.")
    return tuple(out)


def _named(name: str, args: Tuple[Any, ...]) -> Transform:
    cls = _NAMED.get(name)
    if cls is None:
        raise ValueError(f"Unknown transform {name!r}; the transforms are {', '.join(_NAMED)} "
                         "(or 'default').")
    try:
        if len(args) == 1 and isinstance(args[0], dict):
            return cls(**args[0])
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            return cls(*args[0])
        return cls(*args)
    except TypeError as e:
        raise ValueError(f"Bad arguments {args!r} for transform {name!r}: {e}.") from None


def sample_matrix(transforms: Sequence[Transform], rng: np.random.Generator, hw: Tuple[int, int],
                  shift: Sequence[int] = (0, 0)) -> np.ndarray:
    """One draw of `transforms` (applied first to last, after a roll by `shift`) as one matrix.

    Args:
        transforms: `Transform` objects, e.g. `resolve_transforms("default")`.
        rng: the numpy Generator each transform draws from, in order.
        hw: the image size `(H, W)`; rotations and zooms turn about its centre.
        shift: a whole-pixel roll `(dy, dx)` applied first (the `jitter` option).

    Returns:
        float32 (2, 3): output pixel `(y, x)` samples the input at `matrix @ (y, x, 1)`.
    """
    out = np.eye(3)
    out[:2, 2] = (-shift[0], -shift[1])
    for transform in transforms:
        out = out @ transform.matrix(rng, hw)
    return out[:2].astype(np.float32)


def resample(images: Any, matrix: Any) -> Any:
    """Images resampled at `matrix @ (y, x, 1)`, bilinear, with wrap-around coordinates.

    Built from gathers of whole pixel rows and a weighted sum, in `keras.ops`: differentiable, compiled
    with the step on every backend, and for a shift by whole pixels exactly `roll`.

    Args:
        images: (N, H, W, C) tensor or array.
        matrix: (2, 3) tensor or array, shared by every image (see `sample_matrix`).

    Returns:
        (N, H, W, C) float32.

    Example:

    >>> import numpy as np
    >>> x = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
    >>> roll = sample_matrix((), np.random.default_rng(0), (3, 4), shift=(1, 2))  # samples (y - 1, x - 2)
    >>> bool(np.array_equal(keras.ops.convert_to_numpy(resample(x, roll)), np.roll(x, (1, 2), axis=(1, 2))))
    True
    """
    ops = keras.ops
    _, h, w, c = images.shape
    m = ops.cast(matrix, "float32")
    ys = ops.repeat(ops.arange(h, dtype="float32"), w)
    xs = ops.tile(ops.arange(w, dtype="float32"), h)
    sy = m[0, 0] * ys + m[0, 1] * xs + m[0, 2]
    sx = m[1, 0] * ys + m[1, 1] * xs + m[1, 2]
    y0, x0 = ops.floor(sy), ops.floor(sx)
    wy, wx = sy - y0, sx - x0
    # `mod` is a floor modulo on every backend, so negative coordinates wrap too.
    y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
    rows = (ops.mod(y0, h) * w, ops.mod(y0 + 1, h) * w)
    cols = (ops.mod(x0, w), ops.mod(x0 + 1, w))
    wy, wx = ops.expand_dims(wy, -1), ops.expand_dims(wx, -1)
    # Pixels as rows (H * W, N * C): every image samples the same positions, so gathers of whole rows serve
    # the batch (2-20x faster, forward and backward, than gathering inside each image). Four gathers, not
    # one of the four corners concatenated: that one costs 1.6x the whole step on JAX.
    pixels = ops.reshape(ops.transpose(ops.reshape(images, (-1, h * w, c)), (1, 0, 2)), (h * w, -1))

    def at(row: Any, col: Any) -> Any:
        return ops.take(pixels, row + col, axis=0)

    top = (1.0 - wx) * at(rows[0], cols[0]) + wx * at(rows[0], cols[1])
    bottom = (1.0 - wx) * at(rows[1], cols[0]) + wx * at(rows[1], cols[1])
    out = (1.0 - wy) * top + wy * bottom
    return ops.transpose(ops.reshape(out, (h, w, -1, c)), (2, 0, 1, 3))
