"""Detection targets: one score per box, from a detector's raw (pre-NMS) outputs.

For each reference box of an image (given, or the model's own predictions), the score is the sum of the class
logits of the predicted boxes (anchors, queries) that match it: same predicted label, IoU >= `iou`. Decoding
and matching are `keras.ops` inside the compiled function, so every explainer that takes callable targets
explains "why this box", and K boxes per image are explained in one pass like K class targets
(docs/architecture.md, "Detectors and segmenters").

Raw outputs understood (the model's outputs as they come, before any non-max suppression):

- keras-hub `RetinaNetObjectDetector`: `{"bbox_regression": (N, A, 4), "cls_logits": (N, A, C)}`, deltas
  decoded on the model's anchors as its `decode_predictions` does (`center_xywh`, no variance);
- keras-hub `DFineObjectDetector`: `{"logits": (N, Q, C), "pred_boxes": (N, Q, 4)}`, boxes `(cx, cy, w, h)`
  relative to the image;
- any detector with `{"boxes": (N, A, 4), "logits": (N, A, C)}` (or a list `[boxes, logits]`), boxes
  `(x0, y0, x1, y1)` in input pixels.

Boxes given to and returned by this module are `(x0, y0, x1, y1)` in input pixels, as
`kc.datasets.make_shapes(..., return_boxes=True)` gives them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam._rows import RowsTarget

#: What a suppressed or empty candidate scores while the model's own boxes are picked.
_SUPPRESSED = -1e9


def _pairwise_iou(a: Any, b: Any) -> Any:
    """IoU of boxes a (N, K, 4) against b (N, A, 4), (x0, y0, x1, y1): (N, K, A)."""
    ops = keras.ops
    a, b = a[:, :, None, :], b[:, None, :, :]
    w = ops.relu(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]))
    h = ops.relu(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]))
    inter = w * h
    area = lambda x: ops.relu(x[..., 2] - x[..., 0]) * ops.relu(x[..., 3] - x[..., 1])  # noqa: E731
    return inter / ops.maximum(area(a) + area(b) - inter, 1e-9)


def _formats_message(outputs: Any) -> str:
    shown = ({k: tuple(getattr(v, "shape", ())) for k, v in outputs.items()} if isinstance(outputs, dict)
             else [tuple(getattr(v, "shape", ())) for v in outputs] if isinstance(outputs, (list, tuple))
             else tuple(getattr(outputs, "shape", ())))
    return (f"`kc.targets.detection` cannot read boxes and class logits from the model's outputs {shown}. It reads "
            "raw (pre-NMS) detector outputs: a keras-hub RetinaNet ({'bbox_regression', 'cls_logits'}), a "
            "keras-hub D-FINE ({'logits', 'pred_boxes'}), or {'boxes': (N, A, 4) x0, y0, x1, y1 in pixels, "
            "'logits': (N, A, C)} (or a list [boxes, logits]). Make the model output one of these.")


class DetectionTarget(RowsTarget):
    """Scores reference boxes on a detector's raw outputs (see `detection`).

    Given boxes travel into compiled functions as per-image rows `(N, K, 6)`: `x0, y0, x1, y1, label,
    valid` (label -1: the label the model predicts for the box; valid 0: padding of shorter box lists).
    Equal targets (same kind, K, options and bound input size) share compiled functions.
    """

    def __init__(self, boxes: Any = None, labels: Any = None, iou: float = 0.5, max_boxes: int = 10,
                 min_score: float = 0.5) -> None:
        if isinstance(iou, bool) or not isinstance(iou, (int, float, np.floating)) or not 0.0 < iou <= 1.0:
            raise ValueError(f"`iou` must be a number in (0, 1], got {iou!r}.")
        if isinstance(max_boxes, bool) or not isinstance(max_boxes, (int, np.integer)) or max_boxes < 1:
            raise ValueError(f"`max_boxes` must be an integer >= 1, got {max_boxes!r}.")
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float, np.floating)) \
                or not 0.0 <= min_score < 1.0:
            raise ValueError(f"`min_score` must be a probability in [0, 1), got {min_score!r}.")
        self.iou, self.max_boxes, self.min_score = float(iou), int(max_boxes), float(min_score)
        self._given: Optional[np.ndarray] = None if boxes is None else _as_rows(boxes, labels)
        if boxes is None and labels is not None:
            raise ValueError("`labels` without `boxes`: pass the boxes they label, or neither (the model's own "
                             "predicted boxes and labels).")
        self.kind = "predicted" if boxes is None else "given"
        # One box per image given as (N, 4): maps (N, H, W); otherwise K per image: (N, K, H, W).
        self.several = not (boxes is not None and not isinstance(boxes, (list, tuple)) and np.ndim(boxes) == 2)
        self._rows: Optional[np.ndarray] = None
        self._anchors: Optional[np.ndarray] = None  # (A, 4) xyxy, for RetinaNet's deltas
        self._size: Optional[Tuple[int, int]] = None  # the input's (height, width)

    # -- identity (compiled functions are shared by equal targets) ----------------------------------------

    @property
    def _key(self) -> tuple:
        k = self.max_boxes if self._given is None else self._given.shape[1]
        return (self.kind, k, self.several, self.iou, self.min_score, self._size)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, DetectionTarget) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("detection",) + self._key)

    def __repr__(self) -> str:
        k = self.max_boxes if self._given is None else self._given.shape[1]
        return f"detection({self.kind}, {k} per image, iou={self.iou})"

    # -- one call -------------------------------------------------------------------------------------------

    def bind_model(self, model: Any, size: Sequence[int]) -> "DetectionTarget":
        """This target told the model and its input's (height, width): what decoding needs (RetinaNet's
        anchors, D-FINE's image size). Explainers call it; call it yourself to score outputs by hand."""
        bound = DetectionTarget.__new__(DetectionTarget)
        bound.__dict__.update(self.__dict__)
        bound._size = (int(size[0]), int(size[1]))
        bound._anchors = _anchors(model, bound._size)
        return bound

    def resolve(self, n: int) -> "DetectionTarget":
        if self._given is None:
            return self
        if self._given.shape[0] != n:
            raise ValueError(f"`boxes` holds boxes for {self._given.shape[0]} images but there are {n} images; "
                             "give one box list per image.")
        call = DetectionTarget.__new__(DetectionTarget)
        call.__dict__.update(self.__dict__)
        call._rows = self._given
        return call

    # -- scores ----------------------------------------------------------------------------------------------

    def decode(self, outputs: Any) -> Tuple[Any, Any]:
        """(boxes (N, A, 4) x0, y0, x1, y1 in input pixels, class logits (N, A, C)) from raw outputs."""
        ops = keras.ops
        if isinstance(outputs, dict) and {"bbox_regression", "cls_logits"} <= set(outputs):
            if self._anchors is None:
                raise ValueError("RetinaNet's box deltas are decoded on the model's anchors: explain through an "
                                 "explainer, or call `target.bind_model(model, (height, width))` first.")
            deltas, logits = outputs["bbox_regression"], outputs["cls_logits"]
            if int(deltas.shape[1]) != len(self._anchors):
                raise ValueError(f"The model predicts {deltas.shape[1]} boxes but has {len(self._anchors)} "
                                 f"anchors for inputs of size {self._size}; bind the target to this input size.")
            a = ops.convert_to_tensor(self._anchors)
            wh = a[:, 2:] - a[:, :2]
            centre = ops.cast(deltas[..., :2], "float32") * wh + (a[:, :2] + a[:, 2:]) / 2
            half = ops.exp(ops.cast(deltas[..., 2:], "float32")) * wh / 2
            return ops.concatenate([centre - half, centre + half], axis=-1), ops.cast(logits, "float32")
        if isinstance(outputs, dict) and {"logits", "pred_boxes"} <= set(outputs):
            if self._size is None:
                raise ValueError("D-FINE's boxes are relative to the image: explain through an explainer, or "
                                 "call `target.bind_model(model, (height, width))` first.")
            rel = ops.cast(outputs["pred_boxes"], "float32")
            scale = ops.convert_to_tensor(np.array([self._size[1], self._size[0]] * 2, np.float32))
            box = ops.concatenate([rel[..., :2] - rel[..., 2:] / 2, rel[..., :2] + rel[..., 2:] / 2], -1) * scale
            return box, ops.cast(outputs["logits"], "float32")
        if isinstance(outputs, dict) and {"boxes", "logits"} <= set(outputs):
            boxes, logits = outputs["boxes"], outputs["logits"]
        elif isinstance(outputs, (list, tuple)) and len(outputs) == 2:
            boxes, logits = outputs
        else:
            raise ValueError(_formats_message(outputs))
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4 or len(logits.shape) != 3 \
                or boxes.shape[1] != logits.shape[1]:
            raise ValueError(_formats_message(outputs))
        return ops.cast(boxes, "float32"), ops.cast(logits, "float32")

    def references(self, boxes: Any, logits: Any, rows: Any = None) -> Tuple[Any, Any, Any, Any]:
        """The reference boxes (N, K, 4), labels (N, K) int32, validity (N, K) float32 and logits (N, K) of one
        batch: the given rows (logits: the best-overlapping prediction's), or the model's own top `max_boxes`
        boxes (greedy class-wise suppression at `iou`, kept when their probability sigmoid(logit) >=
        `min_score`), never differentiated."""
        ops = keras.ops
        boxes, logits = ops.stop_gradient(boxes), ops.stop_gradient(logits)
        predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")  # (N, A)
        if rows is not None:
            ref, labels, valid = rows[..., :4], ops.cast(rows[..., 4], "int32"), rows[..., 5]
            # A box given without a label takes the label the model predicts for its best-overlapping box.
            best = ops.cast(ops.argmax(_pairwise_iou(ref, boxes), axis=-1), "int32")  # (N, K)
            own = ops.take_along_axis(predicted, best, axis=1)
            return ref, ops.where(labels < 0, own, labels), valid, \
                ops.take_along_axis(ops.max(logits, axis=-1), best, axis=1)
        confidence = ops.max(logits, axis=-1)  # (N, A)
        count = int(boxes.shape[1])
        threshold = float(np.log(self.min_score / (1 - self.min_score))) if self.min_score > 0 else -np.inf
        picked, labels, valid, confidences = [], [], [], []
        for _ in range(self.max_boxes):
            pick = ops.one_hot(ops.argmax(confidence, axis=-1), count)  # (N, A)
            best = ops.sum(confidence * pick, axis=-1)
            box = ops.einsum("na,nad->nd", pick, boxes)
            label = ops.cast(ops.sum(ops.cast(predicted, "float32") * pick, axis=-1), "int32")
            picked.append(box)
            confidences.append(best)
            labels.append(label)
            valid.append(ops.cast((best > threshold) & (best > _SUPPRESSED / 2), "float32"))
            overlap = _pairwise_iou(box[:, None, :], boxes)[:, 0, :]
            same = (overlap >= self.iou) & (predicted == label[:, None])
            confidence = ops.where(same | (pick > 0), _SUPPRESSED, confidence)
        return (ops.stack(picked, axis=1), ops.stack(labels, axis=1), ops.stack(valid, axis=1),
                ops.stack(confidences, axis=1))

    def score(self, outputs: Any, index: Any = None) -> Any:
        """(N, K) scores (N, for one given box per image) of raw `outputs`; `index` holds the given rows
        inside explainers."""
        ops = keras.ops
        boxes, logits = self.decode(outputs)
        rows = None
        if self.kind == "given":
            if index is not None and len(index.shape) == 3:
                rows = ops.cast(index, "float32")  # this chunk's rows
            elif index is None and self._given is not None \
                    and (logits.shape[0] is None or logits.shape[0] == len(self._given)):
                rows = ops.convert_to_tensor(self._given)  # called by hand on the whole batch
            else:
                # Inside an explainer without this chunk's rows: perturbed copies (Score-CAM, AblationCAM)
                # whose images are unknown here; never the whole batch's boxes on rows that are not its images.
                raise ValueError("Given boxes follow the images into an explainer's compiled calls; called by hand, "
                                 "this target scores the outputs of the images it was given boxes for (one box "
                                 "list per image), or pass kc.targets.detection(max_boxes=K) for the model's own.")
        ref, labels, valid, _ = self.references(boxes, logits, rows)
        num_classes = int(logits.shape[-1])
        predicted = ops.cast(ops.argmax(logits, axis=-1), "int32")
        match = (_pairwise_iou(ref, ops.stop_gradient(boxes)) >= self.iou) \
            & (predicted[:, None, :] == labels[:, :, None]) & (valid[:, :, None] > 0)
        z = ops.einsum("nkc,nac->nka", ops.one_hot(labels, num_classes), logits)  # each box's class logit
        scores = ops.sum(ops.where(match, z, 0.0), axis=-1)  # (N, K)
        return scores if self.several else scores[:, 0]

    def boxes(self, model: Any, images: Any) -> List[Dict[str, np.ndarray]]:
        """The reference boxes this target explains, per image: `{"boxes": (K_i, 4), "labels": (K_i,),
        "scores": (K_i,), "probabilities": (K_i,)}` in the order of the maps (scores: the summed logits of
        each box, as explained; probabilities: sigmoid of the box's own logit, or of the best-overlapping
        prediction's for given boxes).

        Example:

        ```python
        target = kc.targets.detection(max_boxes=3)
        heatmaps = kc.GradCAM(detector)(images, targets=target)   # (N, 3, H, W)
        found = target.boxes(detector, images)                     # the boxes of those maps
        ```
        """
        x = np.asarray(images, np.float32)
        bound = self.bind_model(model, x.shape[1:3]).resolve(len(x))
        outputs = model(x, training=False)
        boxes, logits = bound.decode(outputs)
        rows = None if bound._rows is None else keras.ops.convert_to_tensor(bound._rows)
        ref, labels, valid, best = (keras.ops.convert_to_numpy(t) for t in bound.references(boxes, logits, rows))
        probabilities = 1 / (1 + np.exp(-best.astype(np.float64)))
        scores = keras.ops.convert_to_numpy(bound.score(outputs, rows)).reshape(len(x), -1)
        keep = valid > 0
        return [{"boxes": ref[i][keep[i]], "labels": labels[i][keep[i]].astype(np.int64),
                 "scores": scores[i][keep[i]], "probabilities": probabilities[i][keep[i]].astype(np.float32)}
                for i in range(len(x))]


def _anchors(model: Any, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """A keras-hub RetinaNet's anchors for inputs of `size`, (A, 4) x0, y0, x1, y1 float32; None for models
    without an anchor generator."""
    generator = getattr(model, "anchor_generator", None)
    if generator is None:
        return None
    anchors = generator(np.zeros((1,) + tuple(size) + (3,), np.float32))
    anchors = keras.ops.concatenate(list(anchors.values()) if isinstance(anchors, dict) else [anchors], axis=0)
    xyxy = keras.utils.bounding_boxes.convert_format(anchors, source=generator.bounding_box_format,
                                                     target="xyxy", height=size[0], width=size[1])
    return np.asarray(keras.ops.convert_to_numpy(xyxy), np.float32)


def _as_rows(boxes: Any, labels: Any) -> np.ndarray:
    """Given boxes and labels as per-image rows (N, K, 6) float32, shorter lists padded (valid = 0)."""
    if isinstance(boxes, (list, tuple)):
        per_image = [np.asarray(b, np.float64).reshape(-1, 4) if np.size(b) else np.zeros((0, 4))
                     for b in boxes]
        if labels is None:
            per_label = [np.full(len(b), -1) for b in per_image]
        elif isinstance(labels, (list, tuple)) and len(labels) == len(per_image):
            per_label = [np.asarray(l).reshape(-1) for l in labels]
        else:
            raise ValueError("With `boxes` as one list of boxes per image, pass `labels` as one list of labels per "
                             "image (or None).")
    else:
        arr = np.asarray(boxes)
        if arr.ndim not in (2, 3) or arr.shape[-1] != 4 or arr.dtype.kind not in "iuf":
            raise ValueError(
                "`boxes` must be None (the model's own boxes), an (N, 4) array (one box per image), an (N, K, 4) "
                "array (K per image), or a list with one (K_i, 4) array per image; rows x0, y0, x1, y1 in input "
                f"pixels. Got {type(boxes).__name__} with shape {np.shape(boxes)}.")
        per_image = list(arr.reshape(arr.shape[0], -1, 4).astype(np.float64))
        if labels is None:
            per_label = [np.full(len(b), -1) for b in per_image]
        else:
            lab = np.asarray(labels)
            if lab.shape != arr.shape[:-1]:
                raise ValueError(f"`labels` has shape {lab.shape} but `boxes` has {arr.shape}: pass one label per "
                                 f"box, shape {arr.shape[:-1]}.")
            per_label = list(lab.reshape(arr.shape[0], -1))
    k = max([len(b) for b in per_image] + [1])
    rows = np.zeros((len(per_image), k, 6), np.float32)
    for i, (b, lab) in enumerate(zip(per_image, per_label)):
        if len(lab) != len(b):
            raise ValueError(f"Image {i} has {len(b)} boxes but {len(lab)} labels; pass one label per box.")
        if labels is not None and lab.size and (lab.dtype.kind not in "iuf" or np.any(lab != np.round(lab))
                                                or np.any(lab < 0)):
            raise ValueError(f"`labels` must be integer class indices >= 0; image {i} has {lab.tolist()}.")
        if b.size and (not np.all(np.isfinite(b)) or np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1])):
            raise ValueError(f"Image {i} has a box that is not x0, y0, x1, y1 with x1 > x0 and y1 > y0 (finite): "
                             f"{b.tolist()}. Boxes are (x0, y0, x1, y1) in input pixels.")
        rows[i, :len(b), :4] = b
        rows[i, :len(b), 4] = lab
        rows[i, :len(b), 5] = 1.0
    return rows


def detection(boxes: Any = None, labels: Any = None, iou: float = 0.5, max_boxes: int = 10,
              min_score: float = 0.5) -> DetectionTarget:
    """A target for the boxes of an object detector: Grad-CAM and the others explain "why this box".

    Each reference box scores the sum of the class logits of the predicted boxes (anchors of RetinaNet,
    queries of D-FINE) that match it: predicted label equal to the box's label and IoU >= `iou`, on the
    detector's raw (pre-NMS) outputs, decoded with `keras.ops` in the compiled function (module docstring:
    the outputs understood). pytorch-grad-cam's `FasterRCNNBoxScoreTarget` adds the score of the single
    best-overlapping box of the post-NMS outputs instead; summing every match is what the model computed for
    that box before its suppression step, and stays differentiable where NMS is not.

    Args:
        boxes: None (the model's own boxes: its `max_boxes` most confident ones after greedy class-wise
            suppression at `iou`, kept when their probability sigmoid(logit) >= `min_score`), an (N, 4) array
            (one box per image: maps (N, H, W)), an (N, K, 4) array, or a list with one (K_i, 4) array per
            image (maps (N, K, H, W), K = the longest list; padding maps are zero). Rows are
            (x0, y0, x1, y1) in input pixels.
        labels: the class of each given box, shaped like `boxes` without its last axis (a list of lists for
            a list of boxes); None: the label the model predicts for the best-overlapping predicted box.
        iou: the IoU from which a predicted box matches a reference box.
        max_boxes: with `boxes=None`, how many of the model's boxes each image explains (K).
        min_score: with `boxes=None`, the probability under which a picked box is left out (its map is zero).

    Returns:
        A target to pass as `targets=` to any explainer that takes callables; `target.boxes(model, images)`
        lists the boxes its maps explain. In Score-CAM's and AblationCAM's perturbed copies, given boxes are
        each image's own; with `boxes=None` each copy is scored on its own most confident boxes
        (pytorch-grad-cam keeps the clean image's boxes).

    Example:

    ```python
    import keras, numpy as np, keras_cam as kc
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(inputs)
    x = keras.layers.Reshape((32 * 32, 8))(x)
    model = keras.Model(inputs, {"boxes": keras.layers.Dense(4, name="boxes")(x),
                                 "logits": keras.layers.Dense(2, name="logits")(x)})
    boxes = np.array([[4, 4, 12, 12], [10, 8, 30, 20]])
    target = kc.targets.detection(boxes, labels=[0, 1], iou=0.1)
    heatmaps = kc.GradCAM(model, layer="features")(np.random.rand(2, 32, 32, 3), targets=target)  # (2, 32, 32)
    ```
    """
    return DetectionTarget(boxes, labels, iou, max_boxes, min_score)
