"""Kept for compatibility: ROAD, average drop and increase in confidence live in `keras_cam.metrics`.

The names this module offered before the scores moved into `keras_cam.metrics` (`road`, `ROADResult`,
`PERCENTILES`, `noisy_linear_imputation` from `keras_cam.metrics.imputation`; `average_drop`,
`increase_in_confidence`, `confidence_scores`, `drop_percent`, `increase_percent` from
`keras_cam.metrics.confidence`) are re-exported here. New code: `kc.metrics.road`, `kc.metrics.average_drop`.
"""
from keras_cam.metrics.confidence import (average_drop, confidence_scores, drop_percent,
                                          increase_in_confidence, increase_percent)
from keras_cam.metrics.imputation import PERCENTILES, ROADResult, noisy_linear_imputation, road

__all__ = ["PERCENTILES", "ROADResult", "average_drop", "confidence_scores", "drop_percent",
           "increase_in_confidence", "increase_percent", "noisy_linear_imputation", "road"]
