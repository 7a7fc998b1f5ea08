"""make_shapes / make_multilabel_shapes: determinism, ranges, masks that mark the object, balance, no global
random state, and one clear error per bad argument."""
import random

import numpy as np
import pytest

from keras_cam import datasets


def _dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_same_seed_same_arrays_and_global_random_state_untouched():
    np_state, py_state = np.random.get_state(), random.getstate()
    first = datasets.make_shapes(30, size=40, seed=5)
    second = datasets.make_shapes(30, size=40, seed=5)
    multi = datasets.make_multilabel_shapes(10, size=40, seed=5)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert random.getstate() == py_state
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()  # bit-identical, not merely close
    for a, b in zip(multi, datasets.make_multilabel_shapes(10, size=40, seed=5)):
        assert a.tobytes() == b.tobytes()
    other = datasets.make_shapes(30, size=40, seed=6)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[2], other[2])
    # A prefix of a larger request is not promised; the seed alone fixes each call's output.
    assert np.array_equal(datasets.make_shapes(30, size=40, seed=np.int64(5))[0], first[0])


def test_dtypes_shapes_ranges_and_balance():
    x, y, m = datasets.make_shapes(61, size=48, seed=0, classes=("circle", "square", "triangle", "star"))
    assert x.dtype == np.float32 and y.dtype == np.int64 and m.dtype == bool
    assert x.shape == (61, 48, 48, 3) and y.shape == (61,) and m.shape == (61, 48, 48)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.bincount(y, minlength=4).tolist() == [16, 15, 15, 15]  # balanced: counts differ by at most 1
    assert y[:8].tolist() != sorted(y[:8].tolist())  # shuffled, not in blocks


def test_object_area_is_in_range_and_independent_of_class():
    _, y, m = datasets.make_shapes(240, size=48, seed=2, classes=datasets.SHAPES)
    area = m.mean(axis=(1, 2))
    assert area.min() > 0.07 and area.max() < 0.21  # 8-18 % of the image, up to rounding
    assert 0.11 < area.mean() < 0.15  # the pointing game's chance level
    per_class = np.array([area[y == k].mean() for k in range(len(datasets.SHAPES))])
    assert per_class.max() - per_class.min() < 0.025  # size is no shortcut for the class
    # Every object lies inside the image: no mask touches the border.
    assert not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any())


def test_masks_are_exactly_the_painted_object():
    x, _, m = datasets.make_shapes(30, size=48, seed=1)
    for img, mask in zip(x, m):
        inside, around = img[mask], img[_dilate(mask, 2) & ~mask]
        # One colour with mild texture inside, clearly different from what surrounds it.
        assert inside.std(axis=0).max() < 0.06
        assert np.abs(inside.mean(0) - around.mean(0)).sum() > 0.3
        # The object is one connected blob (no stray mask pixels elsewhere).
        assert _dilate(mask, 1).sum() < mask.sum() * 2.2


def test_shape_classes_have_their_geometry():
    _, y, m = datasets.make_shapes(60, size=64, seed=3, classes=("circle", "ring", "square"), clutter=0)
    for mask, label in zip(m, y):
        ys, xs = np.nonzero(mask)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        if label == 1:
            assert not mask[cy, cx]  # a ring has a hole in the middle
        else:
            assert mask[cy - 1 : cy + 2, cx - 1 : cx + 2].all()
        if label == 0:  # a disc fills ~pi/4 of its bounding box, a square up to all of it
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            assert 0.7 < mask.sum() / box < 0.85


def _box_fill(mask):
    ys, xs = np.nonzero(mask)
    return mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))


def test_rotation_turns_shapes_away_from_upright():
    classes = ("square", "triangle")
    _, y, upright = datasets.make_shapes(20, size=48, seed=7, classes=classes)
    for mask, label in zip(upright, y):
        if label == 0:
            assert _box_fill(mask) == 1.0  # an axis-aligned square fills its bounding box
        else:
            rows = mask.sum(axis=1)[mask.any(axis=1)]
            assert rows[0] < rows[-1] / 3  # a triangle pointing up: narrow top, wide base
    _, y, turned = datasets.make_shapes(20, size=48, seed=7, classes=classes, rotation=180)
    assert np.mean([_box_fill(m) < 0.95 for m in turned[y == 0]]) > 0.7


def test_clutter_zero_gives_a_smooth_background():
    x, _, m = datasets.make_shapes(8, size=48, seed=4, clutter=0, distractors=0)
    noisy, _, _ = datasets.make_shapes(8, size=48, seed=4)
    bg = ~_dilate(m, 1)
    rough = lambda imgs: np.abs(np.diff(imgs, axis=2))[bg[:, :, 1:]].mean()  # noqa: E731
    assert rough(x) < 0.02 < rough(noisy)


def test_multilabel_masks_match_labels():
    np_state = np.random.get_state()
    x, labels, masks = datasets.make_multilabel_shapes(40, size=48, seed=0, classes=datasets.SHAPES[:4],
                                                       max_objects=3)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert x.dtype == np.float32 and labels.dtype == np.float32 and masks.dtype == bool
    assert x.shape == (40, 48, 48, 3) and labels.shape == (40, 4) and masks.shape == (40, 4, 48, 48)
    assert set(np.unique(labels).tolist()) == {0.0, 1.0}
    # A class's mask is empty exactly when the class is absent.
    np.testing.assert_array_equal(masks.any(axis=(2, 3)), labels.astype(bool))
    counts = labels.sum(1)
    assert counts.min() >= 1 and counts.max() <= 3 and (counts > 1).mean() > 0.4
    assert masks.sum(axis=1).max() <= 1  # objects never overlap
    for img, image_masks in zip(x, masks):
        for mask in image_masks[image_masks.any(axis=(1, 2))]:
            assert img[mask].std(axis=0).max() < 0.06  # each mask is one painted object
    single = datasets.make_multilabel_shapes(10, size=32, seed=1, max_objects=1)[1]
    assert single.sum(1).tolist() == [1.0] * 10


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "`n` must be an integer >= 1"),
    (dict(n=2.5), "`n` must be an integer"),
    (dict(n=4, size=8), "`size` must be an integer >= 16"),
    (dict(n=4, seed=-1), "`seed`"),
    (dict(n=4, classes=("circle", "hexagon")), "'hexagon'.*valid names: circle, square, triangle, cross, star, ring"),
    (dict(n=4, classes=("circle", "sqare")), "Did you mean 'square'"),
    (dict(n=4, classes="circle"), "not the string"),
    (dict(n=4, classes=("circle",)), "2 or more distinct"),
    (dict(n=4, classes=("circle", "circle")), "2 or more distinct"),
    (dict(n=4, clutter=-1), "`clutter`"),
    (dict(n=4, clutter=float("nan")), "`clutter`"),
    (dict(n=4, distractors=-2), "`distractors`"),
    (dict(n=4, rotation=270), r"`rotation` must be a number of degrees in \[0, 180\]"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.make_shapes(**kwargs)


def test_bad_max_objects():
    with pytest.raises(ValueError, match=r"`max_objects` must be an integer in 1\.\.3"):
        datasets.make_multilabel_shapes(4, max_objects=4)
    with pytest.raises(ValueError, match="`max_objects`"):
        datasets.make_multilabel_shapes(4, max_objects=0)


# --- make_shapes(..., return_boxes=True) -------------------------------------------------------------------

def test_boxes_leave_the_other_outputs_unchanged_and_are_tight():
    plain = datasets.make_shapes(40, size=40, seed=9, classes=datasets.SHAPES)
    *same, boxes = datasets.make_shapes(40, size=40, seed=9, classes=datasets.SHAPES, return_boxes=True)
    for a, b in zip(plain, same):
        assert a.tobytes() == b.tobytes() and a.dtype == b.dtype
    assert boxes.dtype == np.int64 and boxes.shape == (40, 4)
    for mask, (x0, y0, x1, y1) in zip(plain[2], boxes):
        assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 40
        assert mask[y0:y1, x0:x1].sum() == mask.sum()  # holds every pixel of the object...
        # ...and is tight: the object touches each of its four edges (x1, y1 are one past the last pixel).
        assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
        assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()


def test_boxes_of_a_hand_made_mask():
    masks = np.zeros((2, 6, 9), bool)
    masks[0, 1:4, 2:7] = True
    masks[1, 5, 0] = masks[1, 2, 8] = True
    assert datasets.shapes._mask_boxes(masks).tolist() == [[2, 1, 7, 4], [0, 2, 9, 6]]


def test_bad_return_boxes():
    with pytest.raises(ValueError, match="`return_boxes` must be True or False"):
        datasets.make_shapes(4, return_boxes="yes")


# --- make_signals ------------------------------------------------------------------------------------------

def _runs(mask):
    """(start, stop) of each run of True values."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def test_signals_are_deterministic_and_leave_global_random_state_alone():
    np_state, py_state = np.random.get_state(), random.getstate()
    first = datasets.make_signals(40, length=128, seed=3)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    for a, b in zip(first, datasets.make_signals(40, length=128, seed=np.int64(3))):
        assert a.tobytes() == b.tobytes()
    other = datasets.make_signals(40, length=128, seed=4)
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[2], other[2])


def test_signal_dtypes_shapes_balance_and_motif_length():
    x, y, m = datasets.make_signals(301, length=200, seed=0)
    assert x.dtype == np.float32 and y.dtype == np.int64 and m.dtype == bool
    assert x.shape == (301, 200, 1) and y.shape == (301,) and m.shape == (301, 200)
    assert np.bincount(y).tolist() == [101, 100, 100]
    assert y[:8].tolist() != sorted(y[:8].tolist())
    assert all(len(_runs(mask)) == 1 for mask in m)  # one motif: one run of samples
    length = m.sum(axis=1)
    assert length.min() >= 20 and length.max() <= 30  # 10-15 % of 200 samples
    assert 0.115 < m.mean() < 0.135  # the pointing game's chance level
    per_class = np.array([length[y == k].mean() for k in range(3)])
    assert per_class.max() - per_class.min() < 1.5  # length is no shortcut for the class
    starts = np.array([_runs(mask)[0][0] for mask in m])
    assert starts.min() < 20 and starts.max() > 150  # motifs anywhere, not in a fixed place


def test_signal_masks_are_exactly_the_motif():
    kwargs = dict(n=60, length=160, seed=7)
    clean, y, m = datasets.make_signals(**kwargs, noise=0, distractors=0)
    clean = clean[..., 0]
    # Without background and distractors only the motif is left, and it has no zero sample.
    assert (clean[~m] == 0).all() and (clean[m] != 0).all()
    # Labels, masks and motifs do not depend on the background or the distractors...
    plain, y2, m2 = datasets.make_signals(**kwargs, distractors=0)
    busy, y3, m3 = datasets.make_signals(**kwargs)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(y, y3)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(m, m3)
    # ...and distractors never come within 4 samples of the motif, though they are there.
    near = m.copy()
    for shift in range(1, 5):
        near[:, shift:] |= m[:, :-shift]
        near[:, :-shift] |= m[:, shift:]
    added = busy[..., 0] - plain[..., 0]
    assert (added[near] == 0).all()
    assert ((added != 0).sum(axis=1) > 0).mean() > 0.95
    alone, _, _ = datasets.make_signals(**kwargs, noise=0)
    assert (alone[..., 0][m] == clean[m]).all()


def test_signal_motifs_are_their_class():
    classes = ("sine", "square", "chirp")
    x, y, m = datasets.make_signals(60, length=800, seed=1, classes=classes, noise=0, distractors=0)
    for signal, label, mask in zip(x[..., 0], y, m):
        motif = signal[mask]
        crossings = np.mean(np.sign(motif[1:]) != np.sign(motif[:-1]))  # twice the frequency
        if classes[label] == "sine":
            assert 0.24 < crossings < 0.40  # 0.14-0.18 cycles per sample
        elif classes[label] == "square":
            assert 0.16 < crossings < 0.28  # 0.10-0.12 cycles per sample
            assert np.unique(np.abs(motif)).size == 1  # two levels, +a and -a
        else:
            assert 0.06 < crossings < 0.16  # a sweep from 0.03 to 0.09 cycles per sample
            half = len(motif) // 2  # the frequency rises: more crossings in the second half (~7 vs ~4)
            assert np.sum(np.diff(np.sign(motif[half:])) != 0) > np.sum(np.diff(np.sign(motif[:half])) != 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "`n` must be an integer >= 1"),
    (dict(n=4, length=32), "`length` must be an integer >= 64"),
    (dict(n=4, length=100.0), "`length` must be an integer"),
    (dict(n=4, seed=-1), "`seed`"),
    (dict(n=4, classes=("sine", "sqare")), "Unknown motif class 'sqare'.*valid names: sine, square, chirp.*"
                                            "Did you mean 'square'"),
    (dict(n=4, classes="sine"), r"sequence of motif names, e.g. \('sine', 'square'\), not the string"),
    (dict(n=4, classes=("sine", "sine")), "2 or more distinct"),
    (dict(n=4, noise=-0.1), r"`noise` must be a number >= 0 \(0 = no background"),
    (dict(n=4, noise=float("inf")), "`noise`"),
    (dict(n=4, distractors=-1), "`distractors` must be an integer >= 0"),
])
def test_bad_signal_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.make_signals(**kwargs)


# --- make_volumes ------------------------------------------------------------------------------------------

def test_volumes_are_deterministic_and_leave_global_random_state_alone():
    np_state, py_state = np.random.get_state(), random.getstate()
    first = datasets.make_volumes(8, size=20, seed=3)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist() and random.getstate() == py_state
    for a, b in zip(first, datasets.make_volumes(8, size=20, seed=3)):
        assert a.tobytes() == b.tobytes()
    assert not np.array_equal(first[0], datasets.make_volumes(8, size=20, seed=4)[0])


def test_volume_dtypes_ranges_balance_and_size():
    x, y, m = datasets.make_volumes(161, size=32, seed=0, classes=datasets.SOLIDS)
    assert x.dtype == np.float32 and y.dtype == np.int64 and m.dtype == bool
    assert x.shape == (161, 32, 32, 32, 1) and y.shape == (161,) and m.shape == (161, 32, 32, 32)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.bincount(y).tolist() == [41, 40, 40, 40]
    assert y[:8].tolist() != sorted(y[:8].tolist())
    fraction = m.mean(axis=(1, 2, 3))
    assert fraction.min() > 0.025 and fraction.max() < 0.07  # 3-6 % of the volume, up to voxel rounding
    assert 0.04 < m.mean() < 0.05  # the pointing game's chance level
    per_class = np.array([fraction[y == k].mean() for k in range(4)])
    assert per_class.max() - per_class.min() < 0.006  # size is no shortcut for the class
    for axis in (1, 2, 3):  # every solid lies inside the volume, off its faces
        assert not (np.take(m, 0, axis=axis).any() or np.take(m, -1, axis=axis).any())


def test_volume_masks_are_exactly_the_solid():
    kwargs = dict(n=12, size=20, seed=5)
    clean, y, m = datasets.make_volumes(**kwargs, clutter=0, distractors=0)
    for volume, mask in zip(clean[..., 0], m):
        # Uniform background, uniform solid: two values, the brighter one exactly on the mask.
        values = np.unique(volume)
        assert values.size == 2
        np.testing.assert_array_equal(volume == values[1], mask)
    plain, y2, m2 = datasets.make_volumes(**kwargs, distractors=0)
    busy, y3, m3 = datasets.make_volumes(**kwargs)
    np.testing.assert_array_equal(y, y3)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(m, m3)
    near = m.copy()  # the solid and the voxels around it (Chebyshev distance 1)
    for axis in (1, 2, 3):
        grown = near.copy()
        grown[(slice(None),) * axis + (slice(1, None),)] |= near[(slice(None),) * axis + (slice(None, -1),)]
        grown[(slice(None),) * axis + (slice(None, -1),)] |= near[(slice(None),) * axis + (slice(1, None),)]
        near = grown
    changed = busy[..., 0] != plain[..., 0]
    assert not changed[near].any()  # blobs keep a voxel away from the solid...
    assert changed.any(axis=(1, 2, 3)).mean() > 0.9  # ...but they are there
    # The solid's brightness does not depend on the clutter either.
    for c, b, mask in zip(clean[..., 0], busy[..., 0], m):
        assert abs(c[mask].mean() - b[mask].mean()) < 0.02


def test_solids_have_their_geometry():
    _, y, m = datasets.make_volumes(40, size=32, seed=2, classes=datasets.SOLIDS, clutter=0, distractors=0)
    for mask, label in zip(m, y):
        pts = np.argwhere(mask)
        lo, hi = pts.min(0), pts.max(0) + 1
        fill = mask.sum() / np.prod(hi - lo)
        center = tuple((lo + hi - 1) // 2)
        kind = datasets.SOLIDS[label]
        if kind == "cube":
            assert fill == 1.0
        elif kind == "ball":
            assert 0.45 < fill < 0.6 and mask[center]  # pi / 6 of its box
        elif kind == "torus":
            assert not mask[center]  # a hole in the middle
            assert sorted(hi - lo)[0] < 0.6 * sorted(hi - lo)[-1]  # flat
        else:
            assert mask[center] and fill < 0.3  # three thin rods through the centre


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "`n` must be an integer >= 1"),
    (dict(n=2, size=8), "`size` must be an integer >= 16"),
    (dict(n=2, seed=1.5), "`seed`"),
    (dict(n=2, classes=("ball", "sphere")), "Unknown solid class 'sphere'.*names: ball, cube, torus, cross"),
    (dict(n=2, classes=("ball",)), "2 or more distinct"),
    (dict(n=2, clutter=-1), r"`clutter` must be a number >= 0 \(0 = uniform background"),
    (dict(n=2, distractors=1.5), "`distractors` must be an integer >= 0"),
])
def test_bad_volume_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.make_volumes(**kwargs)


def test_package_exports():
    import keras_cam as kc

    assert kc.datasets.SHAPES == ("circle", "square", "triangle", "cross", "star", "ring")
    assert kc.datasets.SIGNALS == ("sine", "square", "chirp")
    assert kc.datasets.SOLIDS == ("ball", "cube", "torus", "cross")
    assert set(kc.datasets.__all__) == {"SHAPES", "SIGNALS", "SOLIDS", "make_multilabel_shapes",
                                        "make_shapes", "make_signals", "make_volumes"}
