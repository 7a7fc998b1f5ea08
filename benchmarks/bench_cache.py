"""Compiled functions are shared and bounded: what a fresh explainer per call costs, and memory over time.

Measured side by side in one run, on the active backend:

1. 20 calls of a fresh `kc.GradCAM(model)` against 20 calls of one reused explainer (goal: <= 1.5x), after
   one warm-up call each; medians of interleaved rounds.
2. Resident memory growth (RSS, MB) over 1,000 fresh explainers, over batch sizes 1..64, and over 100 image
   sizes, each after a warm-up (goal: <= 50 MB each), with the default cache size and with `--cache-size`.

Usage: KERAS_BACKEND=jax python benchmarks/bench_cache.py [--save]
(`--save` writes benchmarks/results/cache_<backend>.md.)
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import keras
import numpy as np

import keras_cam as kc
from keras_cam import _batching


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="features"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),
    ])


def growth(step, count: int) -> float:
    gc.collect()
    before = rss_mb()
    for i in range(count):
        step(i)
    gc.collect()
    return rss_mb() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    net = model()
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3)).astype("float32")
    reused = kc.GradCAM(net)
    reused(x)
    kc.GradCAM(net)(x)

    def fresh(_):
        kc.GradCAM(net)(x)

    def again(_):
        reused(x)

    fresh_t, reused_t = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for i in range(20):
            fresh(i)
        fresh_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(20):
            again(i)
        reused_t.append(time.perf_counter() - start)
    ratio = statistics.median(fresh_t) / statistics.median(reused_t)

    batches = rng.random((64, 32, 32, 3)).astype("float32")
    sizes = [(24 + 2 * (i % 50), 24 + 2 * (i // 50) + 2 * (i % 7)) for i in range(100)]
    images = {s: rng.random((2, s[0], s[1], 3)).astype("float32") for s in sizes}

    def by_batch(i):
        reused(batches[: 1 + i % 64])

    def by_size(i):
        reused(images[sizes[i % 100]])

    for i in range(64):  # warm-up: every bucket of batch sizes compiled once
        by_batch(i)
    rows = [("1,000 fresh explainers", growth(fresh, 1000)),
            ("batch sizes 1..64 (x3)", growth(by_batch, 192))]
    rows.append((f"100 image sizes (cache {_batching.CACHE.maxsize})", growth(by_size, 200)))
    previous = kc.set_cache_size(8)
    rows.append(("100 image sizes (cache 8)", growth(by_size, 200)))
    kc.set_cache_size(previous)

    backend = keras.backend.backend()
    lines = [f"# Compiled-function cache, {backend}", "",
             f"- 20 fresh `kc.GradCAM(model)` calls / 20 calls on one explainer: **{ratio:.2f}x** "
             f"(medians of {args.rounds} interleaved rounds: {statistics.median(fresh_t) * 1e3:.0f} ms vs "
             f"{statistics.median(reused_t) * 1e3:.0f} ms; goal <= 1.5x)",
             f"- model: 2 conv layers, 8 images of 32x32; load average at start "
             f"{'/'.join(f'{v:.1f}' for v in os.getloadavg())}", "",
             "| RSS growth over | MB (goal <= 50) |", "|---|---|"]
    lines += [f"| {name} | {mb:.1f} |" for name, mb in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        path = os.path.join(os.path.dirname(__file__), "results", f"cache_{backend}.md")
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
