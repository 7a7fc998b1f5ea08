"""Synthetic datasets with ground-truth masks: offline data on which class activation maps can be scored.

Every heatmap of a model trained on these can be scored against the truth (`keras_cam.metrics.pointing_game`,
which takes 1-D, 2-D and 3-D maps), and nothing needs to be downloaded.

- `make_shapes`, `make_multilabel_shapes`: 2-D shapes on cluttered images (softmax or multi-label), with
  optional bounding boxes.
- `make_signals`: 1-D signals with a class motif among noise and distractors.
- `make_volumes`: 3-D volumes with a solid among noise and small blobs.

Generation is deterministic for a seed (same arguments, bit-identical arrays) and uses its own
`numpy.random.Generator`; the global `numpy` and `random` states are never touched. Each object's size is
drawn independently of its class, so size is no shortcut, and it is small enough that a random point seldom
lands on it: the pointing game's chance level (`masks.mean()`) is about 0.13 for shapes, 0.125 for signals
and 0.06 for volumes.
"""
from keras_cam.datasets.shapes import SHAPES, make_multilabel_shapes, make_shapes
from keras_cam.datasets.signals import SIGNALS, make_signals
from keras_cam.datasets.volumes import SOLIDS, make_volumes

__all__ = ["SHAPES", "SIGNALS", "SOLIDS", "make_multilabel_shapes", "make_shapes", "make_signals",
           "make_volumes"]
