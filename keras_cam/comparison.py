"""Every explainer on the same images, scored side by side: localization, faithfulness, sanity and speed.

`compare_methods` answers "which method should I use on this model?" with numbers: for each method, the
pointing game and energy pointing game against object masks (when given), faithfulness to the model
(deletion and insertion AUC, ROAD, average drop and increase in confidence), whether the maps depend on the
weights at all (the sanity check) and the time per image. The demo prints its table and saves it as
`methods.md`.
"""
from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam import faithfulness, metrics, road, sanity
from keras_cam._validation import as_image_batch, check_int, close_matches
from keras_cam.explainers import available_methods, get_explainer, lookup
from keras_cam.targets import resolve_targets

#: The name of the reference row of uniformly random heatmaps (what any method must beat).
RANDOM = "random (reference)"
#: Methods left out of the default list: references, not explanations (RandomCAM's random channel weights;
#: name it in `methods` to score it too).
REFERENCE_METHODS = ("randomcam",)
#: Every metric `compare_methods` can run, in table order.
METRICS = ("pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "road", "average_drop",
           "increase_in_confidence", "sanity")
#: What runs by default: the scores that cost a forward pass or a few per image (ROAD solves a sparse system
#: per image and percentage; the sanity check explains every image again on a randomized model).
DEFAULT_METRICS = ("pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "average_drop",
                   "increase_in_confidence")

# Table columns: (row key, header, digits), by the metric that fills them.
_COLUMNS = {
    "pointing_game": [("pointing_game", "pointing game ↑", 3)],
    "energy_pointing_game": [("energy_pointing_game", "energy pointing game ↑", 3)],
    "deletion_auc": [("deletion_auc", "deletion AUC ↓", 3)],
    "insertion_auc": [("insertion_auc", "insertion AUC ↑", 3)],
    "road": [("road_morf", "ROAD MoRF ↓", 3), ("road_lerf", "ROAD LeRF ↑", 3)],
    "average_drop": [("average_drop", "average drop % ↓", 1)],
    "increase_in_confidence": [("increase_in_confidence", "increase in confidence % ↑", 1)],
    "sanity": [("sanity_correlation", "sanity ρ ↓", 3)],
}
_TIMES = [("ms_per_image", "ms / image", 1), ("first_call_s", "first call s", 2)]


@dataclasses.dataclass
class MethodComparison:
    """What `compare_methods` measured.

    Attributes:
        rows: one dict per method, in order: `method`, `pointing_game`, `energy_pointing_game` (None without
            masks), `deletion_auc` (lower is better), `insertion_auc` (higher is better), `road_morf` (mean
            class score over ROAD's percentages with the most relevant pixels imputed, lower is better),
            `road_lerf` (least relevant first, higher is better), `average_drop` (%, lower is better),
            `increase_in_confidence` (%, higher is better), `sanity_correlation` (Spearman correlation of the
            maps before and after randomizing every layer's weights: lower means the map depends on the
            weights; the random reference, which ignores the model, scores 1), `ms_per_image`, `first_call_s`
            (the call that compiles; None for the random reference). Metrics that did not run are None.
        heatmaps: method -> (N, H, W) heatmaps that were scored.
        targets: the explained class per image.
        skipped: method -> why it does not apply to this model (e.g. CAM without a CAMHead).
        metrics: the metrics that ran, in table order.
    """

    rows: List[Dict[str, Any]]
    heatmaps: Dict[str, np.ndarray]
    targets: np.ndarray
    skipped: Dict[str, str]
    metrics: Sequence[str] = DEFAULT_METRICS

    def to_markdown(self) -> str:
        """The rows as a Markdown table, a column per metric that ran (the demo writes it to `methods.md`)."""
        columns = [c for m in METRICS if m in self.metrics for c in _COLUMNS[m]] + _TIMES
        lines = ["| method | " + " | ".join(h for _, h, _ in columns) + " |",
                 "|" + "---|" * (len(columns) + 1)]
        for row in self.rows:
            cells = [row["method"]] + [_cell(row.get(k), digits) for k, _, digits in columns]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [f"- {name}: skipped ({why})" for name, why in self.skipped.items()]
        return "\n".join(lines) + "\n"


def _check_metrics(selected: Optional[Sequence[str]]) -> tuple:
    if selected is None:
        return DEFAULT_METRICS
    names = [selected] if isinstance(selected, str) else list(selected)
    for name in names:
        if name not in METRICS:
            near = close_matches(str(name), METRICS)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"Unknown metric {name!r}{hint}. Available metrics: {', '.join(METRICS)}.")
    if not names:
        raise ValueError(f"`metrics` is empty; pass some of {', '.join(METRICS)}.")
    return tuple(m for m in METRICS if m in names)


def _explainer(name: str, model: keras.Model, layer: Any) -> Any:
    # Methods without a layer (input gradients) take no `layer` option.
    cls = lookup(name)
    takes_layer = cls is None or "layer" in inspect.signature(cls.__init__).parameters
    return get_explainer(name, model, **({} if layer is None or not takes_layer else {"layer": layer}))


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
    metrics: Optional[Sequence[str]] = None,
    sanity_images: int = 8,
) -> MethodComparison:
    """Runs each explainer on `images` and scores its heatmaps.

    Each method is called twice on the whole batch: the first call compiles (reported as `first_call_s`),
    the second is timed (`ms_per_image`) and scored. Deletion, insertion and ROAD use the model's own
    outputs for the explained class (probabilities for a softmax model), average drop and increase in
    confidence its class probabilities, all with the defaults of `kc.metrics`. The sanity column is the last
    step of `kc.metrics.sanity_check`'s cascade: every layer with weights randomized (one copy of the model,
    shared by all methods), on the first `sanity_images` images.

    Args:
        model: a classifier.
        images: (N, H, W, C) images as the model expects them.
        targets: None (predicted class), an int, or one int per image (e.g. the true labels); every method
            explains the same classes.
        masks: optional (N, H, W) bool object masks: adds the pointing game and energy pointing game.
        methods: explainer names (default: every available one but the `REFERENCE_METHODS`; those that do
            not apply to the model, such as CAM without a CAMHead, are skipped and listed in `skipped`).
            Named methods must apply.
        layer: the layer to explain (None: the last spatial layer; CAM always uses its CAMHead's input;
            methods without a layer ignore it).
        steps: deletion / insertion steps.
        batch_size: images per compiled call, for the explainers and the metrics.
        reference: add a row of uniformly random heatmaps (seeded), the score any useful method must beat.
        seed: seed of the random reference, of ROAD's noise and of the sanity check's weights.
        metrics: which metrics run, from `METRICS` ("pointing_game", "energy_pointing_game", "deletion_auc",
            "insertion_auc", "road", "average_drop", "increase_in_confidence", "sanity"); default
            `DEFAULT_METRICS` (all but ROAD and the sanity check). The pointing games need `masks`.
        sanity_images: images used by the sanity check (the first ones).

    Returns:
        A `MethodComparison` (`.rows`, `.heatmaps`, `.to_markdown()`).

    Example:

    ```python
    images, labels, masks = kc.datasets.make_shapes(64, size=48, seed=1)
    result = kc.compare_methods(model, images, targets=labels, masks=masks, metrics=kc.comparison.METRICS)
    print(result.to_markdown())
    ```
    """
    x = as_image_batch(images)
    selected = _check_metrics(metrics)
    named = methods is not None
    names = list(methods) if named else [n for n in available_methods() if n not in REFERENCE_METHODS]
    m, n_sanity = _check_arguments(x, names, masks, targets, steps, sanity_images)
    explainers, skipped = _build_explainers(names, model, layer, named)
    fixed = _fixed_targets(explainers, x, targets, batch_size)
    scorer = _Scorer(model, x, fixed, m, steps, batch_size, seed, selected, n_sanity, layer)

    rows, heatmaps = [], {}
    for name, explainer in explainers.items():
        try:
            maps, times = _timed_maps(explainer, x, fixed, batch_size)
        except ValueError as e:  # a method that refuses this model only when it runs
            if named:
                raise
            skipped[name] = str(e).split(". ")[0]
            continue
        heatmaps[name] = maps
        rows.append(scorer(maps, {"method": name, **times}, name))
    if reference:
        noise = np.random.default_rng(seed).random(x.shape[:3], dtype=np.float32)
        heatmaps[RANDOM] = noise
        rows.append(scorer(noise, {"method": RANDOM, "ms_per_image": None, "first_call_s": None}))
    return MethodComparison(rows, heatmaps, fixed, skipped, selected)


def _check_arguments(x: np.ndarray, names: List[str], masks: Optional[Any], targets: Any, steps: int,
                     sanity_images: int) -> Tuple[Optional[np.ndarray], int]:
    """Refuses what `compare_methods` cannot score; returns the masks as a bool copy (or None) and the number
    of images the sanity check explains."""
    if not names:
        raise ValueError("`methods` is empty; pass explainer names, e.g. ['gradcam', 'scorecam'].")
    if int(steps) < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    n_sanity = min(check_int("sanity_images", sanity_images, 1), len(x))
    m = None if masks is None else np.array(masks, dtype=bool, copy=True)
    if m is not None and m.shape != x.shape[:3]:
        raise ValueError(f"`masks` must have shape {x.shape[:3]} (one per image), got {m.shape}.")
    if callable(targets):
        raise ValueError("`targets` must be None, an int or one int per image here (deletion and insertion "
                         "score one class per image); a callable cannot be compared.")
    return m, n_sanity


def _build_explainers(names: List[str], model: keras.Model, layer: Any,
                      named: bool) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The explainers that apply to `model`, and why the others do not (a named method must apply)."""
    explainers, skipped = {}, {}
    for name in names:
        try:
            explainers[name] = _explainer(name, model, layer)
        except ValueError as e:
            if named or "Unknown method" in str(e):
                raise
            skipped[name] = str(e).split(". ")[0]
    if not explainers:
        raise ValueError(f"No method applies to this model: {skipped}.")
    return explainers, skipped


def _fixed_targets(explainers: Dict[str, Any], x: np.ndarray, targets: Any, batch_size: int) -> np.ndarray:
    """One set of classes for every method: None becomes the predicted class, found once."""
    first = next(iter(explainers.values()))
    fixed = resolve_targets(targets, len(x), first.num_classes)
    if targets is None:
        fixed = first.compute(x, None, batch_size=batch_size).targets
    return np.asarray(fixed, dtype=np.int64)


def _timed_maps(explainer: Any, x: np.ndarray, targets: np.ndarray,
                batch_size: int) -> Tuple[np.ndarray, Dict[str, float]]:
    """The maps of a second call, and the times of both: the first compiles, the second is per image."""
    start = time.perf_counter()
    explainer.explain(x, targets=targets, batch_size=batch_size)
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    maps = explainer.explain(x, targets=targets, batch_size=batch_size)
    per_image_ms = (time.perf_counter() - start) * 1e3 / len(x)
    return maps, {"ms_per_image": per_image_ms, "first_call_s": first_call}


class _Scorer:
    """Scores one method's maps with the selected metrics; the randomized copy is made once, when needed."""

    def __init__(self, model, x, targets, masks, steps, batch_size, seed, selected, n_sanity, layer) -> None:
        self.model, self.x, self.targets, self.masks = model, x, targets, masks
        self.steps, self.batch_size, self.seed, self.selected = steps, batch_size, seed, selected
        self.n_sanity = n_sanity
        self.layer = None if layer is None else sanity.on_copy({"layer": layer}, model)["layer"]
        self._twin = None

    def __call__(self, maps: np.ndarray, row: Dict[str, Any], method: Optional[str] = None) -> Dict[str, Any]:
        model, x, t, masks, on = self.model, self.x, self.targets, self.masks, self.selected
        kw = {"batch_size": self.batch_size}
        for key in [k for ms in _COLUMNS.values() for k, _, _ in ms]:
            row[key] = None
        if masks is not None and "pointing_game" in on:
            row["pointing_game"] = metrics.pointing_game(maps, masks)
        if masks is not None and "energy_pointing_game" in on:
            row["energy_pointing_game"] = metrics.energy_pointing_game(maps, masks)
        if "deletion_auc" in on:
            row["deletion_auc"] = faithfulness.deletion_auc(model, x, maps, t, steps=self.steps, **kw)
        if "insertion_auc" in on:
            row["insertion_auc"] = faithfulness.insertion_auc(model, x, maps, t, steps=self.steps, **kw)
        if "road" in on:
            result = road.road(model, x, maps, t, seed=self.seed, **kw)
            row["road_morf"], row["road_lerf"] = result.morf_score, result.lerf_score
        if "average_drop" in on or "increase_in_confidence" in on:
            y, o = road.confidence_scores(model, x, maps, t, **kw)
            if "average_drop" in on:
                row["average_drop"] = road.drop_percent(y, o)
            if "increase_in_confidence" in on:
                row["increase_in_confidence"] = road.increase_percent(y, o)
        if "sanity" in on:
            k = self.n_sanity
            if method is None:  # the random reference ignores the model: its maps are the same after
                randomized = maps[:k]
            else:
                if self._twin is None:
                    self._twin, _ = sanity.randomized_copy(model, None, self.seed)
                randomized = _explainer(method, self._twin, self.layer).explain(x[:k], t[:k], **kw)
            row["sanity_correlation"] = float(sanity.spearman(np.abs(maps[:k]), np.abs(randomized)).mean())
        return row


def _cell(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
