"""Compiled functions are shared and bounded: what a fresh explainer per call costs, and memory over time.

Measured on the active backend, each memory scenario in a fresh process:

1. 20 calls of a fresh `kc.GradCAM(model)` against 20 calls of one reused explainer (goal: <= 1.5x), after
   one warm-up call each; medians of interleaved rounds.
2. Resident memory growth (RSS, MB, after `gc.collect()`) over 1,000 fresh explainers, over batch sizes
   1..64 (three times), and over 100 new image sizes with the default cache (16 compiled functions) and with
   `kc.set_cache_size(8)`, printed every 25 sizes so the plateau shows (goal: flat, <= 50 MB). On
   TensorFlow also with oneDNN off: its kernels keep a per-shape primitive cache of their own (up to 1,024
   entries per thread, not clearable), which `--long` (500 sizes) shows levelling off.

Usage: KERAS_BACKEND=jax python benchmarks/bench_cache.py [--save] [--long]
(`--save` writes benchmarks/results/cache_<backend>.md.)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import keras
import numpy as np

import keras_cam as kc

SIZES = [(24 + 2 * (i % 40), 24 + 2 * (i // 40)) for i in range(510)]  # distinct (height, width)


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


def scenario(name: str) -> list:
    """RSS growth (MB) at checkpoints of one scenario, measured after a warm-up in this process."""
    net, rng = model(), np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3)).astype("float32")
    explainer = kc.GradCAM(net)
    if name.startswith("sizes"):
        kc.set_cache_size(int(name.split("-")[1]))
        count = int(name.split("-")[2]) if name.count("-") > 1 else 100
        steps = [lambda i: explainer(rng.random((2,) + SIZES[10 + i] + (3,)).astype("float32"))
                 for i in range(count)]
        warm = [lambda i: explainer(rng.random((2,) + SIZES[i] + (3,)).astype("float32")) for i in range(10)]
    elif name == "batches":
        batch = rng.random((64, 32, 32, 3)).astype("float32")
        steps = [lambda i: explainer(batch[: 1 + i % 64]) for i in range(192)]
        warm = steps[:64]
    else:
        steps = [lambda i: kc.GradCAM(net)(x) for i in range(1000)]
        warm = steps[:20]
    for i, step in enumerate(warm):
        step(i)
    gc.collect()
    before, marks = rss_mb(), []
    every = len(steps) // 4
    for i, step in enumerate(steps):
        step(i)
        if (i + 1) % every == 0:
            gc.collect()
            marks.append(round(rss_mb() - before, 1))
    return marks


def fresh_vs_reused(rounds: int) -> tuple:
    net = model()
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    reused = kc.GradCAM(net)
    reused(x)
    kc.GradCAM(net)(x)
    fresh_t, reused_t = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            kc.GradCAM(net)(x)
        fresh_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(20):
            reused(x)
        reused_t.append(time.perf_counter() - start)
    return statistics.median(fresh_t), statistics.median(reused_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--long", action="store_true", help="also 500 image sizes (minutes), to show where "
                        "memory levels off")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # internal: one scenario in this process
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario)))
        return
    backend = keras.backend.backend()
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    fresh, reused = fresh_vs_reused(args.rounds)
    rows = []
    scenarios = [("fresh", "1,000 fresh explainers (every 250)"),
                 ("batches", "batch sizes 1..64, three times (every 48 calls)"),
                 ("sizes-16", "100 new image sizes, default cache of 16 (every 25)"),
                 ("sizes-8", "100 new image sizes, `kc.set_cache_size(8)` (every 25)")]
    env = dict(os.environ)
    if backend == "tensorflow":
        # TensorFlow's oneDNN kernels keep their own per-shape primitive cache (up to 1,024 per thread).
        scenarios.append(("sizes-16", "100 new image sizes, oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`)",
                          dict(env, TF_ENABLE_ONEDNN_OPTS="0")))
    if args.long:
        scenarios.append(("sizes-16-500", "500 new image sizes, default cache (every 125)", env))
    for name, label, *extra in scenarios:
        out = subprocess.run([sys.executable, __file__, "--scenario", name], capture_output=True, text=True,
                             env=extra[0] if extra else env, check=True).stdout.strip().splitlines()[-1]
        rows.append((label, json.loads(out)))
    lines = [f"# Compiled-function cache, {backend}", "",
             f"- 20 fresh `kc.GradCAM(model)` calls / 20 calls on one explainer: **{fresh / reused:.2f}x** "
             f"(medians of {args.rounds} interleaved rounds: {fresh * 1e3:.0f} ms vs {reused * 1e3:.0f} ms; "
             "goal <= 1.5x)",
             f"- model: 2 conv layers, free input size; 8 images of 32x32 (2 per call for image sizes); load "
             f"average at start {load}", "",
             "| RSS growth (MB) over | at each quarter |", "|---|---|"]
    lines += [f"| {label} | {', '.join(str(v) for v in marks)} |" for label, marks in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.save:
        with open(os.path.join(os.path.dirname(__file__), "results", f"cache_{backend}.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
