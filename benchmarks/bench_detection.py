"""Speed of explaining a detector's boxes: one box's Grad-CAM against the model's own forward + backward, and
K boxes in one pass against K passes.

The model: a keras-hub RetinaNet (random weights, built from a config, no download) on a small ResNet, input
128x128, batch 8. Contenders, each on the same numpy batch (converting it is part of every call):

- one box: `kc.GradCAM(model).explain(x, targets=kc.targets.detection(boxes, labels))`, one box per image,
  maps upsampled and normalized as a user gets them (decoding, IoU matching and the sum inside the
  compiled function);
- the limit: the model's own forward pass and the gradient, w.r.t. its input, of a fixed sum of the matched
  logits, compiled as keras-cam compiles (one `tf.function`, one `jax.jit`; PyTorch eager): what no box
  explainer can beat by much (it also has to reach the layer and read its activations);
- K boxes: `detection(max_boxes=K, min_score=0)` (the model's own K boxes, one pass, (N, K, H, W) maps)
  against K calls with one box each.

One warm-up call each (compilation), then interleaved rounds; medians. The helpers (`Report`,
`run_interleaved`, ...) are bench_explainers.py's.

Usage:
    PYTHONPATH=. KERAS_BACKEND=tensorflow python benchmarks/bench_detection.py --batch 4 \
        --save benchmarks/results/detection_tensorflow.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras_cam as kc  # noqa: E402
from bench_explainers import BACKEND, Report, env_prefix, fmt, load, run_interleaved, versions  # noqa: E402


def retinanet(size: int) -> keras.Model:
    import keras_hub

    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64, 128, 256],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(size, size, 3))
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=5, use_p5=False,
                                                  image_shape=(size, size, 3))
    return keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=4, pre_logits_num_conv_layers=2)


def limit(model, x: np.ndarray, weights: np.ndarray):
    """The model's own forward pass and the gradient, w.r.t. its input, of a fixed sum of class logits:
    compiled as keras-cam compiles (tf.function, jax.jit; PyTorch eager)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        w = tf.constant(weights)

        @tf.function
        def fwd_bwd(xx):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xx)
                score = tf.reduce_sum(model(xx, training=False)["cls_logits"] * w)
            return tape.gradient(score, xx)

        return lambda: fwd_bwd(tf.convert_to_tensor(x)).numpy()
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        w = jnp.asarray(weights)

        @jax.jit
        def fwd_bwd_jax(tv, ntv, xx):
            def score(xx):
                out, _ = model.stateless_call(tv, ntv, xx, training=False)
                return jnp.sum(out["cls_logits"] * w)

            return jax.grad(score)(xx)

        return lambda: np.asarray(fwd_bwd_jax(tv, ntv, jnp.asarray(x)))
    import torch

    w = torch.as_tensor(weights)

    def fwd_bwd_torch():
        xx = torch.as_tensor(x).clone().requires_grad_(True)
        (g,) = torch.autograd.grad((model(xx, training=False)["cls_logits"] * w).sum(), xx)
        return g.cpu().numpy()

    return fwd_bwd_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--boxes", type=int, default=4, help="K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    log = Report()
    model = retinanet(args.size)
    x = np.random.default_rng(0).random((args.batch, args.size, args.size, 3)).astype("float32")
    own = kc.targets.detection(max_boxes=args.boxes, min_score=0.0)
    found = own.boxes(model, x)
    boxes = np.stack([f["boxes"] for f in found])  # (N, K, 4)
    labels = np.stack([f["labels"] for f in found])
    explainer = kc.GradCAM(model)
    one = kc.targets.detection(boxes[:, 0], labels[:, 0])
    contenders = {
        "one box": lambda: explainer.explain(x, targets=one),
        f"{args.boxes} boxes, one pass": lambda: explainer.explain(x, targets=own),
        f"{args.boxes} boxes, {args.boxes} passes": lambda: [
            explainer.explain(x, targets=kc.targets.detection(boxes[:, k], labels[:, k])) for k in range(args.boxes)],
    }
    bound = one.bind_model(model, (args.size, args.size))
    outputs = model(x, training=False)
    pred, logits = (keras.ops.convert_to_numpy(t) for t in bound.decode(outputs))
    from keras_cam.detection import _pairwise_iou

    iou = keras.ops.convert_to_numpy(_pairwise_iou(keras.ops.convert_to_tensor(boxes[:, :1].astype("float32")),
                                                   keras.ops.convert_to_tensor(pred)))[:, 0]
    weights = np.zeros(logits.shape, np.float32)
    for i in range(len(x)):
        match = (iou[i] >= 0.5) & (logits[i].argmax(-1) == labels[i, 0])
        weights[i, match, labels[i, 0]] = 1.0
    contenders["limit: forward + backward"] = limit(model, x, weights)
    log(f"# Detection benchmark ({BACKEND})", "",
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, load {load()}, {versions()}",
        f"`{env_prefix()}python benchmarks/bench_detection.py --size {args.size} --batch {args.batch} "
        f"--boxes {args.boxes} --repeats {args.repeats}`", "",
        f"RetinaNet (keras-hub, random weights, ResNet 64-64-128-256, P3-P5), input {args.size}², batch "
        f"{args.batch}, layer `{explainer.layer_refs[0].path}`.", "")
    first, times, _ = run_interleaved(contenders, args.repeats, log)
    med = {name: statistics.median(t) for name, t in times.items()}
    log("", "| contender | first call (s) | median (ms) |", "|---|---:|---:|")
    for name in contenders:
        log(f"| {name} | {fmt(first[name], 2)} | {fmt(med[name] * 1e3)} |")
    log("")
    log(f"- one box / the model's forward + backward: {med['one box'] / med['limit: forward + backward']:.2f}x "
        "(goal <= 1.2x)")
    k = args.boxes
    log(f"- {k} boxes: {k} passes / one pass: "
        f"{med[f'{k} boxes, {k} passes'] / med[f'{k} boxes, one pass']:.2f}x")
    if args.save:
        with open(args.save, "w") as f:
            f.write(log.buffer.getvalue())


if __name__ == "__main__":
    main()
