"""Kept for compatibility: the sanity check lives in `keras_cam.metrics.sanity`.

`import keras_cam.sanity` gives that very module, so code written before the scores moved into
`keras_cam.metrics` keeps working. New code: `kc.metrics.sanity_check`, `kc.metrics.spearman`.
"""
import sys

from keras_cam.metrics import sanity as _module

sys.modules[__name__] = _module
