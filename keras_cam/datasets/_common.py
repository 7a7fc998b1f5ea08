"""What the dataset generators share: argument checks and random streams (the int check is
`keras_cam._validation.check_int`, the package's one)."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

from keras_cam._validation import close_matches


def check_amount(name: str, value: object, meaning: str) -> float:
    """A finite number >= 0, such as a clutter or noise strength; `meaning` explains the scale."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a number >= 0 ({meaning}), got {value!r}.")
    return float(value)


def check_classes(classes: Sequence[str], names: Tuple[str, ...], what: str) -> Tuple[str, ...]:
    """2 or more distinct names from `names`; `what` names the family in messages ("shape", "motif")."""
    if isinstance(classes, str):
        raise ValueError(f"`classes` must be a sequence of {what} names, e.g. {names[:2]!r}, "
                         f"not the string {classes!r}.")
    classes = tuple(classes)
    for c in classes:
        if c not in names:
            near = close_matches(str(c), names)
            hint = f" Did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
            raise ValueError(f"Unknown {what} class {c!r} in `classes`; valid names: {', '.join(names)}."
                             + hint)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"`classes` must hold 2 or more distinct names from {', '.join(names)}; "
                         f"got {classes}.")
    return classes


def streams(seed: int, count: int) -> Tuple[np.random.Generator, ...]:
    """`count` independent generators for one seed, so that what one part of a sample draws does not shift
    the others (e.g. more distractors leave the objects as they are)."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count))


def balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Shuffled int64 labels in 0..k-1 whose counts differ by at most one."""
    return rng.permutation(np.arange(n) % k).astype(np.int64)
