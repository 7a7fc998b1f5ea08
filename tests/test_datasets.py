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
