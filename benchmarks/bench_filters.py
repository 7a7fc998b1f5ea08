"""Filter visualization speed: keras-cam's batched ascent vs its limit and vs the keras-io per-filter loop.

On VGG16 (weights=None: no download; speed does not depend on the weights), layer block3_conv1, 64x64
patterns, 30 steps, one run measures:
  1. keras-cam: `FilterVisualizer.visualize(filters=range(F))`, every filter in one batch, one compiled step.
  2. the limit: the truncated model's own forward + backward (a `keras.Model` up to the layer, gradient of
     a filter's mean activation w.r.t. the input, compiled, same batch): what one image-step cannot beat.
  3. the keras-io example's loop ("Visualizing what convnets learn"): one optimization per filter on a
     batch of one, its step compiled once per filter (keras-io retraces its `tf.function` for each Python
     `filter_index`), l2-normalized gradients, learning rate 10.

Times are wall-clock seconds on the current Keras backend, warm (compiled) and cold (including compilation).
The limit runs as many calls as there are steps; each call is a compiled forward + backward on the batch.

Usage: KERAS_BACKEND=tensorflow python benchmarks/bench_filters.py [--filters 16] [--steps 30] [--size 64]
       [--out benchmarks/results/filters_tensorflow.md]
"""
import argparse
import os
import platform
import time

import keras
import numpy as np

from keras_cam import backend as seam
from keras_cam.activation_maximization import FilterVisualizer
from keras_cam.visualize import deprocess_image

LAYER = "block3_conv1"


def limit_step(truncated, batch, size):
    """Compiled forward + backward of the truncated model: d mean(activation[..., 0]) / d input."""
    impl = seam.get()

    def step(x):
        def loss_fn(model, z):
            return keras.ops.mean(model(z, training=False)[..., 0], axis=(1, 2))

        return impl.input_grads(truncated, x, loss_fn)

    fn = impl.compile(step, truncated)
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random((batch, size, size, 3), np.float32) * 255)

    def run(n):
        for _ in range(n):
            out = fn(x)
        keras.ops.convert_to_numpy(out[1])

    return run


def keras_io_loop(truncated, filters, size, steps):
    """The keras-io example's per-filter loop, written with keras.ops so it runs on every backend."""
    impl = seam.get()
    ops = keras.ops

    def visualize_filter(filter_index):
        def compute_loss(model, img):
            activation = model(img, training=False)
            # keras-io: avoid border artifacts by only involving non-border pixels in the loss
            return ops.mean(activation[:, 2:-2, 2:-2, filter_index], axis=(1, 2))

        def gradient_ascent_step(img, learning_rate):
            loss, grads = impl.input_grads(truncated, img, compute_loss)
            grads = grads / ops.sqrt(ops.maximum(ops.sum(ops.square(grads)), 1e-12))  # tf.math.l2_normalize
            return loss, img + learning_rate * grads

        step = impl.compile(gradient_ascent_step, truncated)  # a fresh trace per filter, as in keras-io
        rng = np.random.default_rng(filter_index)
        img = ops.convert_to_tensor(((rng.random((1, size, size, 3)) - 0.5) * 0.25).astype(np.float32))
        lr = ops.convert_to_tensor(np.float32(10.0))
        for _ in range(steps):
            loss, img = step(img, lr)
        return deprocess_image(ops.convert_to_numpy(img)[0])

    def run():
        return [visualize_filter(f) for f in filters]

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved warm rounds (best of)")
    parser.add_argument("--out", default=None, help="write the results as Markdown here")
    args = parser.parse_args()
    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG16(weights=None, include_top=False)
    truncated = keras.Model(vgg.inputs, vgg.get_layer(LAYER).output)
    filters = list(range(args.filters))
    image_steps = args.filters * args.steps

    viz = FilterVisualizer(vgg, LAYER, value_range=(0, 255))
    load_before = os.getloadavg()[0]

    def run_kc():
        return viz.visualize(filters, size=args.size, steps=args.steps)

    start = time.perf_counter()
    run_kc()
    cold_kc = time.perf_counter() - start
    run_limit = limit_step(truncated, args.filters, args.size)
    run_limit(1)  # compile
    # Interleaved rounds, best of each: other processes on a shared machine slow both alike.
    warm_kc = limit = float("inf")
    for _ in range(args.rounds):
        start = time.perf_counter()
        run_kc()
        warm_kc = min(warm_kc, time.perf_counter() - start)
        start = time.perf_counter()
        run_limit(args.steps)
        limit = min(limit, time.perf_counter() - start)

    loop = keras_io_loop(truncated, filters, args.size, args.steps)
    start = time.perf_counter()
    loop()
    cold_loop = time.perf_counter() - start
    load_after = os.getloadavg()[0]

    kc_per, limit_per = warm_kc / image_steps, limit / image_steps
    rows = [
        ("keras-cam, all filters in one batch (warm)", warm_kc, kc_per),
        ("keras-cam, first call (with compilation)", cold_kc, cold_kc / image_steps),
        ("limit: truncated model forward + backward, same batch", limit, limit_per),
        ("keras-io loop, one filter at a time (with its per-filter compilation)", cold_loop,
         cold_loop / image_steps),
    ]
    lines = [
        f"# Filter visualization: {backend}",
        "",
        f"Date: 2026-11-23. Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; "
        f"Keras {keras.__version__}, backend {backend}. Load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other jobs shared the cores).",
        f"VGG16 (weights=None), layer {LAYER}, {args.filters} filters, {args.size}x{args.size}, "
        f"{args.steps} steps ({image_steps} image-steps); warm times are the best of {args.rounds} "
        "interleaved rounds.",
        "",
        "| run | seconds | ms per image-step |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {sec:.2f} | {per * 1000:.1f} |" for name, sec, per in rows]
    lines += [
        "",
        f"keras-cam per image-step / limit: {kc_per / limit_per:.2f}x (target <= 1.1x).",
        f"keras-io loop / keras-cam, both with compilation: {cold_loop / cold_kc:.2f}x; "
        f"keras-io loop / keras-cam warm: {cold_loop / warm_kc:.2f}x.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
