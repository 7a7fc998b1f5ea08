"""Splitting a compiled call's rows over several devices: the backend-free part (docs/architecture.md,
"Several devices").

The seam (`keras_cam/backend/`) finds the devices (a `tf.distribute` strategy, a `keras.distribution`) and
places the work; the rows are padded, split and put back together here, in `keras.ops`, the same way on
every backend. Only calls whose arguments all have the same number of rows are split (the chunks of
`run_batched`); any other call (Score-CAM's masked passes take one image and a chunk of channels) runs
whole, as on one device.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import keras


def common_rows(args: Sequence[Any]) -> Optional[int]:
    """The number of rows every argument has, or None when they differ (or one has no rows)."""
    rows = {int(a.shape[0]) if len(a.shape) and a.shape[0] is not None else None for a in args}
    return rows.pop() if len(rows) == 1 and None not in rows else None


def padded_rows(rows: int, count: int) -> int:
    """`rows` rounded up to a multiple of `count` (every device gets as many)."""
    return -(-rows // count) * count


def pad(args: Sequence[Any], count: int) -> List[Any]:
    """Each argument padded to a multiple of `count` rows by repeating its last row, as `run_batched` pads."""
    rows = int(args[0].shape[0])
    extra = padded_rows(rows, count) - rows
    if not extra:
        return list(args)
    return [keras.ops.concatenate([a, keras.ops.repeat(a[-1:], extra, axis=0)], axis=0) for a in args]


def split(args: Sequence[Any], count: int, part: int) -> List[Any]:
    """Part `part` of `count` equal parts of every (padded) argument's rows."""
    size = int(args[0].shape[0]) // count
    return [a[part * size : (part + 1) * size] for a in args]


def cut(outputs: Any, rows: int) -> Any:
    """The first `rows` rows of every output (the padding removed)."""
    return keras.tree.map_structure(lambda o: o[:rows], outputs)


def gather(parts: Sequence[Any], rows: int) -> Any:
    """Per-device outputs (one structure per device, in device order) joined along rows, padding removed."""
    return keras.tree.map_structure(lambda *p: keras.ops.concatenate(p, axis=0)[:rows], *parts)
