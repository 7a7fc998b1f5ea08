"""What checking resumes costs `kc.explain_dataset` with a store: the hash of every batch read, and the
check of a complete store (its data read again and hashed, the model not run).

Side by side in one run, on `keras.applications.MobileNetV2(weights=None)` and Grad-CAM at its automatic
layer, `--images` random float32 images of `--size` px in a numpy array, batch `--batch-size`:

- "compute alone": `explainer.compute` per batch (what the model costs, nothing read or written);
- "no store": `kc.explain_dataset(explainer, x, batch_size=B, verbose=0)` (no hashing);
- "store": the same into a fresh zarr store (every batch hashed in the reader thread, rows written);
- "hash alone": `keras_cam.store.batch_digest` of every batch, serially (what the reader thread adds);
- "complete store": the same call on a complete store (every batch read and hashed, compared, returned).

Every contender gets one warm-up call, then each round times every contender once, rotating who goes
first; medians are reported. Targets (informational): hash alone <= 0.05x compute alone; store <= 1.2x no
store; complete store <= 0.1x compute alone.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/bench_store_resume.py --save benchmarks/results/store_resume_tensorflow.md
    # a quick look:
    KERAS_BACKEND=jax python benchmarks/bench_store_resume.py --images 32 --repeats 2 --size 128
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_cam as kc  # noqa: E402
from bench_datasets import Contender, mobilenet, run_interleaved, verdict  # noqa: E402
from bench_explainers import BACKEND, Report, env_prefix, load, save, versions  # noqa: E402
from keras_cam.store import batch_digest  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None)
    args = p.parse_args(argv)
    log = Report()
    log(f"# keras-cam store resume checks — backend `{BACKEND}`", "",
        f"- date: {datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores, no GPU; {versions()}",
        f"- MobileNetV2 (weights=None) at {args.size}x{args.size}, Grad-CAM; {args.images} float32 images in "
        f"a numpy array, batch {args.batch_size}; {args.repeats} interleaved repeats after 1 warm-up each, "
        f"medians; load average at start {load()}",
        f"- command: {env_prefix()}python benchmarks/bench_store_resume.py {' '.join(sys.argv[1:])}", "")
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.images, args.size, args.size, 3), dtype=np.float32)
    explainer = kc.GradCAM(mobilenet(args.size, args.seed))
    b = args.batch_size
    batches = [x[i:i + b] for i in range(0, len(x), b)]
    root = tempfile.mkdtemp(prefix="kc-bench-store-")
    complete = os.path.join(root, "complete.zarr")
    kc.explain_dataset(explainer, x, store=complete, batch_size=b, verbose=0)
    fresh = os.path.join(root, "fresh.zarr")
    try:
        contenders = {
            "compute alone": Contender(lambda: [explainer.compute(v, batch_size=b) for v in batches]),
            "no store": Contender(lambda: kc.explain_dataset(explainer, x, batch_size=b, verbose=0)),
            "store": Contender(lambda: kc.explain_dataset(explainer, x, store=fresh, batch_size=b, verbose=0),
                               before=lambda: shutil.rmtree(fresh, ignore_errors=True)),
            "hash alone": Contender(lambda: [batch_digest(v) for v in batches]),
            "complete store": Contender(lambda: kc.explain_dataset(explainer, x, store=complete, batch_size=b,
                                                                   verbose=0)),
        }
        _, times, _ = run_interleaved(contenders, args.repeats, log)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    log("", "| contender | median s | ratio |", "|---|---|---|")
    base = {"compute alone": None, "no store": "compute alone", "store": "no store",
            "hash alone": "compute alone", "complete store": "compute alone"}
    for name, s in med.items():
        ratio = f"{s / med[base[name]]:.3f}x {base[name]}" if base[name] else ""
        log(f"| {name} | {s:.3f} | {ratio} |")
    log("", "## Targets (informational)", "",
        "- " + verdict(med["hash alone"] <= 0.05 * med["compute alone"],
                       f"hash alone {med['hash alone'] / med['compute alone']:.3f}x compute alone (<= 0.05x)"),
        "- " + verdict(med["store"] <= 1.2 * med["no store"],
                       f"store {med['store'] / med['no store']:.2f}x no store (<= 1.2x)"),
        "- " + verdict(med["complete store"] <= 0.1 * med["compute alone"],
                       f"complete store {med['complete store'] / med['compute alone']:.3f}x compute alone "
                       "(<= 0.1x)"),
        "", f"Load average at end {load()}.")
    if args.save:
        save(args.save, log)
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"(total {time.perf_counter() - start:.0f} s)")
    sys.exit(code)
