"""make_shapes: determinism, ranges, masks that mark the object, balance, no global random state."""
import numpy as np
import pytest

from keras_cam import datasets


def test_make_shapes_is_deterministic_and_well_formed():
    state = np.random.get_state()
    x, y, m = datasets.make_shapes(60, size=40, seed=5)
    x2, y2, m2 = datasets.make_shapes(60, size=40, seed=5)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # global generator untouched
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(m, m2)
    assert not np.array_equal(x, datasets.make_shapes(60, size=40, seed=6)[0])
    assert x.dtype == np.float32 and y.dtype == np.int64 and m.dtype == bool
    assert x.shape == (60, 40, 40, 3) and m.shape == (60, 40, 40)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [20, 20, 20]
    area = m.mean(axis=(1, 2))
    assert area.min() > 0.03 and area.max() < 0.3  # the pointing game's chance level stays low


def test_masks_mark_the_painted_object():
    x, y, m = datasets.make_shapes(30, size=48, seed=1)
    for img, mask in zip(x, m):
        inside, ring = img[mask], img[np.logical_xor(_dilate(mask, 3), mask)]
        # The object is one colour (low spread) that differs from what surrounds it.
        assert inside.std(axis=0).max() < 0.06
        assert np.abs(inside.mean(0) - ring.mean(0)).sum() > 0.3


def _dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_shape_classes_differ():
    _, y, m = datasets.make_shapes(120, size=48, seed=2, classes=datasets.SHAPES, clutter=0)
    fill = [m[y == k].mean(axis=(1, 2)).mean() for k in range(6)]
    # A ring covers less of its disc than a circle does, and both are present.
    assert fill[datasets.SHAPES.index("ring")] < fill[datasets.SHAPES.index("circle")]


def test_multilabel_masks_match_labels():
    x, labels, masks = datasets.make_multilabel_shapes(40, size=48, seed=0, max_objects=3)
    assert labels.dtype == np.float32 and masks.shape == (40, 3, 48, 48)
    np.testing.assert_array_equal(masks.any(axis=(2, 3)), labels.astype(bool))
    assert labels.sum(1).min() >= 1 and labels.sum(1).max() <= 3
    assert (labels.sum(1) > 1).mean() > 0.3
    assert masks.sum(axis=1).max() <= 1  # objects never overlap


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "`n`"), (dict(n=4, size=8), "`size`"), (dict(n=4, classes=("circle", "hexagon")), "hexagon"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.make_shapes(**kwargs)
