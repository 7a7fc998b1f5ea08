"""The shortcut demo: plant a "Clever Hans" shortcut, train on it, and check that `kc.audit` finds it.

`make_shapes(shortcut=...)` paints a small checkerboard mark in a corner on a share of one class's training
images. The shapes demo's CNN learns to use it; on held-out images where half of that class's images carry
the mark, the maps of the marked ones put their energy in the corner, and the audit names that corner and the
cluster of those images, scored here by precision and recall against the planted images
(`keras-cam demo --data shortcut`).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Sequence

import keras
import numpy as np

from keras_cam import datasets
from keras_cam.auditing import audit
from keras_cam.demo.shapes import CLASSES, DEFAULT_EPOCHS, build_demo_model, check_demo_args, train_demo_model, \
    write_summary
from keras_cam.explainers import CAM


def run_shortcut_demo(
    out_dir: str = "demo_shortcut",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    n_train: int = 2400,
    n_val: int = 450,
    size: int = 48,
    class_index: int = 0,
    share: float = 0.8,
    corner: str = "top-left",
    batch_size: int = 32,
    verbose: int = 1,
    classes: Sequence[str] = CLASSES,
) -> Dict[str, Any]:
    """Trains the shapes demo's CNN with a planted shortcut, explains held-out images, audits the maps.

    The mark is on `share` of class `class_index`'s training images and on half of its held-out images
    (other classes never carry it). The held-out maps (CAM, for the true class) go through
    `kc.explain_dataset` into a store when zarr is installed (else they stay in memory), then through
    `kc.audit`; the first finding about the class names a cluster, scored against the planted images.

    Writes to `out_dir`: `report/` (the audit's `index.html`, PNGs, `maps.csv`), `maps.zarr` (with zarr) and
    `summary.json` (accuracy on marked and clean images, the finding's text, its region, `precision` and
    `recall` of its cluster against the marked images).

    Args:
        out_dir: output folder (created if needed).
        epochs: training epochs.
        seed: seed of the data and of the training.
        n_train: training images.
        n_val: held-out images (a third of them of class `class_index`, half of those marked).
        size: image side.
        class_index: the class whose images carry the mark.
        share: the share of that class's training images that carry it.
        corner: where the mark is ("top-left", "top-right", "bottom-left", "bottom-right").
        batch_size: training batch size.
        verbose: 0 silent, 1 progress bar and results, 2 one line per epoch and results.
        classes: shape classes.

    Returns:
        The summary dict written to `summary.json`.

    Example:

    ```python
    from keras_cam.demo import run_shortcut_demo
    summary = run_shortcut_demo("demo_shortcut")   # a few minutes on 2 CPU cores
    print(summary["finding"], summary["precision"], summary["recall"])
    ```
    """
    check_demo_args(epochs=epochs, seed=seed, n_train=n_train, n_val=n_val, batch_size=batch_size,
                    size=(size, 32))
    start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    classes = tuple(classes)
    mark = dict(class_index=class_index, corner=corner)
    x_train, y_train, _, marked_train = datasets.make_shapes(n_train, size=size, seed=seed, classes=classes,
                                                             shortcut=dict(mark, share=share))
    x_val, y_val, m_val, marked = datasets.make_shapes(n_val, size=size, seed=seed + 10_000, classes=classes,
                                                       shortcut=dict(mark, share=0.5))
    model = build_demo_model((size, size, 3), len(classes))
    name = classes[class_index]
    say(f"Training the demo CNN on {n_train} shapes; {int(marked_train.sum())} of the {name} images carry a "
        f"{corner} mark, no other image does ({epochs} epochs, {keras.backend.backend()} backend).")
    train_demo_model(model, x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)

    accuracy = _accuracies(model, x_val, y_val, marked, class_index, name, say)
    maps = _explain(model, x_val, y_val, out_dir)
    report = audit(maps, labels=y_val, masks=m_val, classes=classes, images=x_val, seed=seed,
                   out=os.path.join(out_dir, "report"))
    about = [f for f in report.findings if f["class_index"] == class_index]
    summary: Dict[str, Any] = {"accuracy": {k: round(v, 4) for k, v in accuracy.items()},
                               "marked_held_out": int(marked.sum()), "findings": len(report.findings)}
    summary.update(_score_finding(about, marked, corner, name, say))
    files = ["report/index.html"] + (["maps.zarr"] if isinstance(maps, str) else [])
    return write_summary(out_dir, summary, files, start, say, epochs=epochs, seed=seed, n_train=n_train,
                         n_val=n_val, size=size, classes=list(classes), class_index=class_index, share=share,
                         corner=corner)


def _accuracies(model: keras.Model, x_val: np.ndarray, y_val: np.ndarray, marked: np.ndarray,
                class_index: int, name: str, say: Any) -> Dict[str, float]:
    """Held-out accuracy on all images, on the marked ones and on the marked class's clean ones (printed)."""
    pred = keras.ops.convert_to_numpy(model.predict(x_val, batch_size=128, verbose=0)).argmax(axis=-1)
    right = pred == y_val
    clean = (y_val == class_index) & ~marked
    accuracy = {"all": float(right.mean()), "marked": float(right[marked].mean()),
                f"clean {name}": float(right[clean].mean()) if clean.any() else float("nan")}
    say("held-out accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()))
    return accuracy


def _score_finding(about: List[Dict[str, Any]], marked: np.ndarray, corner: str, name: str,
                   say: Any) -> Dict[str, Any]:
    """The first finding about the marked class, its cluster scored against the planted images (printed)."""
    if not about:
        say(f"no finding about class '{name}': the model did not pick up the mark (train longer, or a larger "
            "share)")
        return dict(finding=None, region=None, corner_named=False, precision=0.0, recall=0.0)
    top = about[0]
    named = np.zeros(len(marked), bool)
    named[top["images"]] = True
    precision, recall = float(marked[named].mean()), float(named[marked].mean())
    say(f"finding: {top['text']}")
    say(f"the named cluster against the planted images: precision {precision:.2f}, recall {recall:.2f}; "
        f"corner named: {top['region'] == corner}")
    return dict(finding=top["text"], region=top["region"], corner_named=top["region"] == corner,
                precision=round(precision, 4), recall=round(recall, 4))


def _explain(model: keras.Model, images: np.ndarray, labels: np.ndarray, out_dir: str) -> Any:
    """The held-out maps (CAM for the true class): a store path with zarr, else an array."""
    try:
        import zarr  # noqa: F401
    except ImportError:
        return CAM(model)(images, targets=labels)
    from keras_cam.streaming import explain_dataset

    path = os.path.join(out_dir, "maps.zarr")
    explain_dataset(CAM(model), images, targets=labels, store=path, resume=False, verbose=0)
    return path
