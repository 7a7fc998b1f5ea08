"""Cost of the input-gradient attributions against their own limits, side by side in one run.

Each method's limit is what it cannot avoid: compiled forward + backward passes to the input.

- Saliency and Guided Backprop: one compiled forward + backward to the input of the batch (N rows).
- SmoothGrad(n): the same over n noisy copies of each image (n x N rows, in one call).
- Integrated Gradients(steps): the same over `steps` points per image (steps x N rows, in one call).
- Guided Grad-CAM: Guided Backprop's limit (its Grad-CAM part, a backward to the layer only, comes on top).
- FullGrad: the same limit (the one pass is also differentiated at every conv and BatchNorm output).

Ours is `kc.get_explainer(method, model).explain(x, targets=t, batch_size=N)` (numpy heatmaps, normalized;
all of a batch's rows in one compiled call, plus the image itself as a reference row for SmoothGrad and IG).
The limits differentiate the logits (the Dense pre-activation) in a `tf.function` under `GradientTape`
(TensorFlow), a `jax.jit` of `jax.grad` through `stateless_call` (JAX) or eager autograd (PyTorch). Each
contender gets one warm-up call (reported as "first call"), then rounds that time every contender once, in
turn (interleaved, so machine noise hits all alike); medians are reported.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/bench_attributions.py --size 96 --batch 4
    KERAS_BACKEND=jax python benchmarks/bench_attributions.py --save benchmarks/results/attributions_jax.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict

import keras
import numpy as np

import keras_cam as kc
from bench_explainers import (BACKEND, Report, _logits_model, env_prefix, load, run_interleaved, save,
                              versions)


def input_gradient(model) -> Callable[[np.ndarray, np.ndarray], object]:
    """A compiled d logit_t / d x for (x, t): the limit of every input-gradient method."""
    logit_model, to_logits = _logits_model(model)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function
        def grad(xx, tt):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xx)
                score = tf.gather(to_logits(logit_model(xx, training=False)), tt, batch_dims=1)
            return tape.gradient(score, xx)

        return lambda x, t: grad(tf.constant(x), tf.constant(t)).numpy()
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        tv = [v.value for v in logit_model.trainable_variables]
        ntv = [v.value for v in logit_model.non_trainable_variables]

        @jax.jit
        def grad(tv, ntv, xx, tt):
            def score(xx):
                out, _ = logit_model.stateless_call(tv, ntv, xx, training=False)
                return jnp.take_along_axis(to_logits(out), tt[:, None], axis=1).sum()

            return jax.grad(score)(xx)

        return lambda x, t: np.asarray(grad(tv, ntv, jnp.asarray(x), jnp.asarray(t)))
    import torch

    def grad_torch(x, t):
        xx = torch.as_tensor(x).requires_grad_(True)
        z = to_logits(logit_model(xx, training=False))
        (g,) = torch.autograd.grad(z.gather(1, torch.as_tensor(t, dtype=torch.long)[:, None]).sum(), xx)
        return g.cpu().numpy()

    return grad_torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="MobileNetV2", help="a keras.applications model (weights=None)")
    p.add_argument("--size", type=int, default=96, help="image height and width")
    p.add_argument("--batch", type=int, default=4, help="images per explained batch")
    p.add_argument("--samples", type=int, default=8, help="SmoothGrad's noisy copies per image")
    p.add_argument("--steps", type=int, default=8, help="Integrated Gradients' points per image")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="also write the printed report to this file (Markdown)")
    args = p.parse_args(argv)

    log = Report()
    keras.utils.set_random_seed(args.seed)
    model = getattr(keras.applications, args.model)(weights=None, input_shape=(args.size, args.size, 3))
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-1.0, 1.0, (args.batch, args.size, args.size, 3)).astype(np.float32)
    t = rng.integers(0, model.output_shape[-1], args.batch).astype(np.int32)
    grad = input_gradient(model)

    def limit(copies: int) -> Callable[[], object]:
        rows, tt = np.repeat(x, copies, axis=0), np.repeat(t, copies)
        return lambda: grad(rows, tt)

    methods = {  # label -> (explainer, limit label)
        "saliency": (kc.get_explainer("saliency", model), "fwd+bwd x1"),
        "guided-backprop": (kc.get_explainer("guided-backprop", model), "fwd+bwd x1"),
        "guided-gradcam": (kc.get_explainer("guided-gradcam", model), "fwd+bwd x1"),
        # FullGrad: the same one pass, also differentiated at every conv and BatchNorm output.
        "fullgrad": (kc.get_explainer("fullgrad", model), "fwd+bwd x1"),
        f"smoothgrad (samples={args.samples})": (kc.get_explainer("smoothgrad", model, samples=args.samples),
                                                  f"fwd+bwd x{args.samples}"),
        f"integrated-gradients (steps={args.steps})": (
            kc.get_explainer("integrated-gradients", model, steps=args.steps), f"fwd+bwd x{args.steps}"),
    }
    contenders: Dict[str, Callable[[], object]] = {}
    for copies in sorted({1, args.samples, args.steps}):
        contenders[f"fwd+bwd x{copies}"] = limit(copies)
    for label, (explainer, _) in methods.items():
        contenders[label] = (lambda e: lambda: e.explain(x, targets=t, batch_size=args.batch))(explainer)

    log(f"# keras-cam attribution benchmark — backend `{BACKEND}`", "",
        f"- date: {datetime.date.today().isoformat()}; machine: {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), no GPU; python {platform.python_version()}",
        f"- {versions()}, keras-cam {kc.__version__}",
        f"- settings: {args.model} (weights=None), {args.size}x{args.size}, batch {args.batch}, random images "
        f"(seed {args.seed}), fixed random int targets {t.tolist()}; SmoothGrad samples {args.samples}, IG steps "
        f"{args.steps}; {args.repeats} interleaved repeats after 1 warm-up call each, medians; load average "
        f"at start {load()}",
        f"- command: {env_prefix()}python benchmarks/bench_attributions.py {' '.join(sys.argv[1:])}", "")
    total = time.perf_counter()
    first, times, _ = run_interleaved(contenders, args.repeats, log)
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}

    header = ["method", "ours ms", "limit", "limit ms", "ours/limit", "first call s (ours / limit)"]
    log("", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|")
    for label, (_, lim) in methods.items():
        log(f"| {label} | {med[label]:.1f} | {lim} | {med[lim]:.1f} | {med[label] / med[lim]:.2f}x | "
            f"{first[label]:.2f} / {first[lim]:.2f} |")
    log("", "Times are medians over the rounds (each round is in the log above). `fwd+bwd xk`: one compiled "
        f"forward + backward to the input of k x {args.batch} rows (the images repeated k times). SmoothGrad "
        "and IG differentiate one more row per image than their limit (the image itself: it fixes the "
        "predicted class and gives the score); Guided Grad-CAM adds a Grad-CAM pass on top of Guided Backprop.",
        "", f"Total benchmark time: {time.perf_counter() - total:.0f} s; load average at end {load()}")
    if args.save:
        save(args.save, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
