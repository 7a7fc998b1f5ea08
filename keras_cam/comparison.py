"""Every explainer on the same images, scored side by side: localization, faithfulness and speed.

`compare_methods` answers "which method should I use on this model?" with numbers: for each method, the
pointing game and energy pointing game against object masks (when given), the deletion and insertion AUC
(faithfulness to the model) and the time per image. The demo prints its table and saves it as `methods.md`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np

from keras_cam import faithfulness, metrics
from keras_cam._validation import as_image_batch
from keras_cam.explainers import available_methods, get_explainer
from keras_cam.targets import resolve_targets

#: The name of the reference row of uniformly random heatmaps (what any method must beat).
RANDOM = "random (reference)"
#: Methods left out of the default list: references, not explanations (RandomCAM's random channel weights;
#: name it in `methods` to score it too).
REFERENCE_METHODS = ("randomcam",)


@dataclasses.dataclass
class MethodComparison:
    """What `compare_methods` measured.

    Attributes:
        rows: one dict per method, in order: `method`, `pointing_game`, `energy_pointing_game` (None without
            masks), `deletion_auc` (lower is better), `insertion_auc` (higher is better), `ms_per_image`,
            `first_call_s` (the call that compiles; None for the random reference) and `note`.
        heatmaps: method -> (N, H, W) heatmaps that were scored.
        targets: the explained class per image.
        skipped: method -> why it does not apply to this model (e.g. CAM without a CAMHead).
    """

    rows: List[Dict[str, Any]]
    heatmaps: Dict[str, np.ndarray]
    targets: np.ndarray
    skipped: Dict[str, str]

    def to_markdown(self) -> str:
        """The rows as a Markdown table (what the demo writes to `methods.md`)."""
        header = ["method", "pointing game ↑", "energy pointing game ↑", "deletion AUC ↓", "insertion AUC ↑",
                  "ms / image", "first call s"]
        keys = ["pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "ms_per_image",
                "first_call_s"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            cells = [row["method"]] + [_cell(row[k], 1 if k == "ms_per_image" else 2 if k == "first_call_s"
                                              else 3) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [f"- {name}: skipped ({why})" for name, why in self.skipped.items()]
        return "\n".join(lines) + "\n"


def compare_methods(
    model: keras.Model,
    images: Any,
    targets: Any = None,
    masks: Optional[Any] = None,
    methods: Optional[Sequence[str]] = None,
    layer: Any = None,
    steps: int = 20,
    batch_size: int = 32,
    reference: bool = True,
    seed: int = 0,
) -> MethodComparison:
    """Runs each explainer on `images` and scores its heatmaps.

    Each method is called twice on the whole batch: the first call compiles (reported as `first_call_s`),
    the second is timed (`ms_per_image`) and scored. Deletion and insertion use the model's own outputs for
    the explained class (probabilities for a softmax model), with the defaults of `kc.metrics`.

    Args:
        model: a classifier.
        images: (N, H, W, C) images as the model expects them.
        targets: None (predicted class), an int, or one int per image (e.g. the true labels); every method
            explains the same classes.
        masks: optional (N, H, W) bool object masks: adds the pointing game and energy pointing game.
        methods: explainer names (default: every available one but the `REFERENCE_METHODS`; those that do
            not apply to the model, such as CAM without a CAMHead, are skipped and listed in `skipped`).
            Named methods must apply.
        layer: the layer to explain (None: the last spatial layer; CAM always uses its CAMHead's input).
        steps: deletion / insertion steps.
        batch_size: images per compiled call, for the explainers and the metrics.
        reference: add a row of uniformly random heatmaps (seeded), the score any useful method must beat.
        seed: seed of the random reference.

    Returns:
        A `MethodComparison` (`.rows`, `.heatmaps`, `.to_markdown()`).

    Example:

    ```python
    images, labels, masks = kc.datasets.make_shapes(64, size=48, seed=1)
    result = kc.compare_methods(model, images, targets=labels, masks=masks)
    print(result.to_markdown())
    ```
    """
    x = as_image_batch(images)
    named = methods is not None
    names = list(methods) if named else [n for n in available_methods() if n not in REFERENCE_METHODS]
    if not names:
        raise ValueError("`methods` is empty; pass explainer names, e.g. ['gradcam', 'scorecam'].")
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    m = None if masks is None else np.array(masks, dtype=bool, copy=True)
    if m is not None and m.shape != x.shape[:3]:
        raise ValueError(f"`masks` must have shape {x.shape[:3]} (one per image), got {m.shape}.")

    explainers, skipped = {}, {}
    for name in names:
        try:
            explainers[name] = get_explainer(name, model, **({} if layer is None else {"layer": layer}))
        except ValueError as e:
            if named or "Unknown method" in str(e):
                raise
            skipped[name] = str(e).split(". ")[0]
    if not explainers:
        raise ValueError(f"No method applies to this model: {skipped}.")

    # One set of classes for every method: None becomes the predicted class, found once.
    if callable(targets):
        raise ValueError("`targets` must be None, an int or one int per image here (deletion and insertion "
                         "score one class per image); a callable cannot be compared.")
    first = next(iter(explainers.values()))
    fixed = resolve_targets(targets, len(x), first.num_classes)
    if targets is None:
        fixed = first.compute(x, None, batch_size=batch_size).targets
    fixed = np.asarray(fixed, dtype=np.int64)

    rows, heatmaps = [], {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        explainer.explain(x, targets=fixed, batch_size=batch_size)
        first_call = time.perf_counter() - start
        start = time.perf_counter()
        maps = explainer.explain(x, targets=fixed, batch_size=batch_size)
        per_image_ms = (time.perf_counter() - start) * 1e3 / len(x)
        heatmaps[name] = maps
        rows.append(_score(model, x, maps, fixed, m, steps, batch_size,
                           {"method": name, "ms_per_image": per_image_ms, "first_call_s": first_call}))
    if reference:
        noise = np.random.default_rng(seed).random(x.shape[:3], dtype=np.float32)
        heatmaps[RANDOM] = noise
        rows.append(_score(model, x, noise, fixed, m, steps, batch_size,
                           {"method": RANDOM, "ms_per_image": None, "first_call_s": None}))
    return MethodComparison(rows, heatmaps, fixed, skipped)


def _score(model, x, maps, targets, masks, steps, batch_size, row: Dict[str, Any]) -> Dict[str, Any]:
    row["pointing_game"] = None if masks is None else metrics.pointing_game(maps, masks)
    row["energy_pointing_game"] = None if masks is None else metrics.energy_pointing_game(maps, masks)
    row["deletion_auc"] = faithfulness.deletion_auc(model, x, maps, targets, steps=steps, batch_size=batch_size)
    row["insertion_auc"] = faithfulness.insertion_auc(model, x, maps, targets, steps=steps,
                                                      batch_size=batch_size)
    return row


def _cell(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
