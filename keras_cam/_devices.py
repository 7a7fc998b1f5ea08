"""Splitting a compiled call's rows over several devices: the backend-free part (docs/architecture.md,
"Several devices").

The seam (`keras_cam/backend/`) finds the devices (a `tf.distribute` strategy, a `keras.distribution`) and
places the work; the rows are padded, split and put back together here, in `keras.ops`, the same way on
every backend. A call is split when its arguments have the same number of rows (the chunks of
`run_batched`), or that number and one row: an argument with a single row is the same for every part and
goes whole to each device (Score-CAM's masked passes: one image, a chunk of channels to mask it with). Any
other call runs whole, as on one device.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import keras


def _rows(a: Any) -> Optional[int]:
    return int(a.shape[0]) if len(a.shape) and a.shape[0] is not None else None


def common_rows(args: Sequence[Any]) -> Optional[int]:
    """The rows a call is split by: the number every argument has, or, when some have one row (shared by
    every part) and the others the same larger number, that number. None otherwise (or an argument has no
    rows)."""
    rows = {_rows(a) for a in args}
    if None in rows:
        return None
    if len(rows) == 2 and 1 in rows:
        rows.discard(1)
    return rows.pop() if len(rows) == 1 else None


def _splits(a: Any, rows: int) -> bool:
    """Whether argument `a` of a call split by `rows` rows is split (else it goes whole to every part)."""
    return _rows(a) == rows


def padded_rows(rows: int, count: int) -> int:
    """`rows` rounded up to a multiple of `count` (every device gets as many)."""
    return -(-rows // count) * count


def pad(args: Sequence[Any], count: int) -> List[Any]:
    """Each split argument (see `common_rows`) padded to a multiple of `count` rows by repeating its last
    row, as `run_batched` pads; shared ones unchanged."""
    rows = common_rows(args)
    extra = padded_rows(rows, count) - rows
    if not extra:
        return list(args)
    return [keras.ops.concatenate([a, keras.ops.repeat(a[-1:], extra, axis=0)], axis=0) if _splits(a, rows)
            else a for a in args]


def split(args: Sequence[Any], count: int, part: int) -> List[Any]:
    """Part `part` of `count` equal parts of every split (padded) argument's rows; shared ones whole."""
    rows = common_rows(args)
    size = rows // count
    return [a[part * size : (part + 1) * size] if _splits(a, rows) else a for a in args]


def split_mask(args: Sequence[Any]) -> List[bool]:
    """Which arguments a call split by `common_rows(args)` rows splits (the others go whole to each part)."""
    rows = common_rows(args)
    return [_splits(a, rows) for a in args]


def cut(outputs: Any, rows: int) -> Any:
    """The first `rows` rows of every output (the padding removed)."""
    return keras.tree.map_structure(lambda o: o[:rows], outputs)


def gather(parts: Sequence[Any], rows: int) -> Any:
    """Per-device outputs (one structure per device, in device order) joined along rows, padding removed."""
    return keras.tree.map_structure(lambda *p: keras.ops.concatenate(p, axis=0)[:rows], *parts)
