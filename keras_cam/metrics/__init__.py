"""Scores for heatmaps, one module per kind of evidence.

- `masks`: `pointing_game`, `pointing_game_per_image`, `energy_pointing_game` (does the map point at the
  object's mask?) and `boxes_from_heatmaps`, `box_iou`, `localization_accuracy` (does its box match the
  object's?). Pure numpy and OpenCV: importing `keras_cam.metrics` loads neither Keras nor a backend.
- `faithfulness`: `deletion_auc`, `insertion_auc` and their curves (does the map rank first the pixels the
  model relies on?).
- `imputation`: `road` (Remove And Debias) and the `noisy_linear_imputation` it removes pixels with.
- `confidence`: `average_drop`, `increase_in_confidence`, `confidence_scores` (the class probability on
  `image * heatmap` against that on the image).
- `sanity`: `sanity_check`, `spearman` (does the map change when the model's weights are randomized?).
- `scoring`: what the model-based scores share (inputs channels last, the compiled forward pass, class
  scores read as the explainers read them).

The scores that run the model are imported on first use (PEP 562), so that scoring heatmaps against masks
does not import Keras and a backend. Every explainer compared with all of these: `kc.compare_methods` (in
`keras_cam.comparison`).
"""
from __future__ import annotations

import importlib
from typing import Any

from keras_cam.metrics.masks import (box_iou, boxes_from_heatmaps, energy_pointing_game,
                                     localization_accuracy, pointing_game, pointing_game_per_image)

# Scores that run the model, name -> module: resolved on first use.
_MODEL_SCORES = {
    **dict.fromkeys(("deletion_auc", "deletion_curve", "insertion_auc", "insertion_curve"),
                    "keras_cam.metrics.faithfulness"),
    "road": "keras_cam.metrics.imputation",
    **dict.fromkeys(("average_drop", "increase_in_confidence", "confidence_scores"),
                    "keras_cam.metrics.confidence"),
    **dict.fromkeys(("sanity_check", "spearman"), "keras_cam.metrics.sanity"),
}

__all__ = ["box_iou", "boxes_from_heatmaps", "energy_pointing_game", "localization_accuracy", "pointing_game",
           "pointing_game_per_image", *_MODEL_SCORES]


def __getattr__(name: str) -> Any:
    if name in _MODEL_SCORES:
        value = getattr(importlib.import_module(_MODEL_SCORES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
