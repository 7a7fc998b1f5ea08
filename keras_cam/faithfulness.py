"""Kept for compatibility: the deletion and insertion scores live in `keras_cam.metrics.faithfulness`.

`import keras_cam.faithfulness` gives that very module (the same functions, also its private helpers), so code
written before the scores moved into `keras_cam.metrics` keeps working. New code: `kc.metrics.deletion_auc`.
"""
import sys

from keras_cam.metrics import faithfulness as _module

sys.modules[__name__] = _module
