"""Dataset audit: `kc.audit` throughput on a store of 20,000 maps, its peak memory, and how the spectral
clustering's cost grows with the number of maps.

Two measurements of what docs/architecture.md ("Dataset audit") promises, each in one run:

- **store** (`--parts store`): `--maps` and a quarter as many synthetic 64x64 maps (three classes, objects
  anywhere, a planted corner shortcut on half of class 0) written into float16 zarr stores with the store
  API (outside the timing), then audited from the store by `kc.audit(path, boxes=..., embedding=None)` in a
  fresh process (so that its peak RSS, VmHWM, is the audit's alone). Reported: maps/s, peak RSS, the audit's
  own memory (peak minus a process that imported everything and audited 60 tiny maps), and how much memory
  each further map costs. The planted shortcut's precision and recall are checked too. Target: each map
  costs at most half of its float32 size (the maps are never held, only their small copies).
- **scaling** (`--parts scaling`): the clustering of one class (`keras_cam.auditing.clustering.spectral_clusters`
  on 32x32 small maps: PCA, sparse kNN graph, `eigsh`, k-means) for N = 1,000 to `--max-n` maps, doubling.
  Reported: seconds and seconds per 1,000 maps, each step's cost ratio against a linear growth
  (time(2N) / (2 time(N)), noisy on a shared machine) and the exponent b of a fit time ~ N^b over all sizes.
  Target: b <= 1.2 (near linear; a dense N x N affinity would be 2 or more).

Each timing is the median of `--repeats` runs. Prints Markdown (informational: exit code 0).

Usage:
    python benchmarks/bench_audit.py --save benchmarks/results/audit.md
    python benchmarks/bench_audit.py --maps 2000 --max-n 4000 --repeats 1    # a quick look
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_explainers import Report, env_prefix, load, save, versions  # noqa: E402

SIZE = 64


def synthetic(n: int, size: int = SIZE, seed: int = 0):
    """Maps peaked on an object anywhere (its mask given); half of class 0 peak in the top-left corner."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    planted = (labels == 0) & (rng.random(n) < 0.5)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    maps = np.empty((n, size, size), np.float16)
    masks = np.zeros((n, size, size), bool)
    for start in range(0, n, 1000):
        rows = np.arange(start, min(n, start + 1000))
        centre = rng.uniform(size // 4, 3 * size // 4 - 8, (rows.size, 2)).astype(np.float32)
        d2 = (yy[None] - centre[:, 0, None, None] - 4) ** 2 + (xx[None] - centre[:, 1, None, None] - 4) ** 2
        m = np.exp(-d2 / 40.0) + 0.05 * rng.random((rows.size, size, size), dtype=np.float32)
        corner = np.exp(-((yy - 3) ** 2 + (xx - 3) ** 2) / 8.0)
        m = np.where(planted[rows, None, None], 0.2 * m + corner, m)
        maps[rows] = m / m.max(axis=(1, 2), keepdims=True)
        for j, (cy, cx) in zip(rows, np.round(centre).astype(int)):
            masks[j, cy:cy + 8, cx:cx + 8] = True
    return maps, labels, masks, planted


def write_store(path: str, maps: np.ndarray, labels: np.ndarray, chunk: int = 256) -> None:
    from keras_cam.store import StoreWriter

    writer = StoreWriter(path, {"method": "benchmark"}, resume=False, dtype="float16")
    for start in range(0, len(maps), chunk):
        rows = slice(start, start + chunk)
        writer.write(maps[rows], labels[rows], np.zeros(len(maps[rows])), None, [], chunk=chunk)
    writer.finish()


_CHILD = r"""
import json, sys, time
import numpy as np
import keras_cam as kc

def peak_mb():
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak over (fork + exec).
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
store, boxes, planted = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
start = time.perf_counter()
report = kc.audit(store, boxes=boxes, embedding=None)
seconds = time.perf_counter() - start
top = report.findings[0]
picked = np.zeros(planted.size, bool); picked[top["images"]] = True
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(),
                  "precision": float(planted[picked].mean()), "recall": float(picked[planted].mean()),
                  "region": top["region"]}))
"""


def audit_store(n: int, folder: str, repeats: int, log: Report) -> dict:
    """Writes a store of n maps, audits it `repeats` times in fresh processes; the median time, peak RSS."""
    maps, labels, masks, planted = synthetic(n)
    path = os.path.join(folder, f"maps_{n}.zarr")
    write_store(path, maps, labels)
    rows, cols = masks.any(axis=2), masks.any(axis=1)  # the objects' boxes: (x0, y0, x1, y1)
    boxes = np.stack([cols.argmax(1), rows.argmax(1), SIZE - cols[:, ::-1].argmax(1),
                      SIZE - rows[:, ::-1].argmax(1)], axis=1)
    np.save(os.path.join(folder, "boxes.npy"), boxes)
    np.save(os.path.join(folder, "planted.npy"), planted)
    del maps, masks
    runs = []
    for r in range(repeats):
        done = subprocess.run([sys.executable, "-c", _CHILD, path, os.path.join(folder, "boxes.npy"),
                               os.path.join(folder, "planted.npy")], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        log(f"    {n:,} maps, run {r + 1}: {runs[-1]['seconds']:.1f} s, peak RSS {runs[-1]['rss_mb']:.0f} MB")
    shutil.rmtree(path, ignore_errors=True)
    return dict(runs[0], seconds=statistics.median(x["seconds"] for x in runs),
                rss_mb=max(x["rss_mb"] for x in runs))


def bench_store(args, log: Report) -> None:
    folder = tempfile.mkdtemp(prefix="bench_audit_")
    try:
        # The same imports and one tiny audit (every module loaded), without the store: the fixed cost.
        tiny = _CHILD.split("store, boxes")[0] + (
            "kc.audit(np.random.default_rng(0).random((60, 8, 8)), embedding=None)\nprint(peak_mb())\n")
        baseline = float(subprocess.run([sys.executable, "-c", tiny], capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])
        small, large = (audit_store(n, folder, args.repeats, log) for n in (args.maps // 4, args.maps))
        map_kb = SIZE * SIZE * 4 / 1024
        growth_kb = (large["rss_mb"] - small["rss_mb"]) * 1024 / (args.maps - args.maps // 4)
        log("", f"### Audit of a store of {SIZE}x{SIZE} maps (float16 on disk, boxes as the objects)", "",
            "| maps | maps/s | seconds | peak RSS | audit's own (peak - imports) | planted: precision / recall "
            "| region |", "|---:|---:|---:|---:|---:|---:|---|")
        for n, x in ((args.maps // 4, small), (args.maps, large)):
            log(f"| {n:,} | {n / x['seconds']:,.0f} | {x['seconds']:.1f} | {x['rss_mb']:.0f} MB | "
                f"{x['rss_mb'] - baseline:.0f} MB | {x['precision']:.2f} / {x['recall']:.2f} | {x['region']} |")
        log("", f"Imports and a tiny audit: {baseline:.0f} MB. Memory grows by {growth_kb:.1f} KB per map "
                f"(the float16 small copy is {32 * 32 * 2 / 1024:.0f} KB; a float32 map is {map_kb:.0f} KB). "
                f"Target: growth per map <= half a float32 map (the maps are never held): "
                f"{'PASS' if growth_kb <= map_kb / 2 else 'MISS'}.")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_scaling(args, log: Report) -> None:
    from keras_cam.auditing import clustering, statistics as stats

    sizes, n = [], 1000
    while n <= args.max_n:
        sizes.append(n)
        n *= 2
    maps, _, _, _ = synthetic(sizes[-1], seed=1)
    p = maps.astype(np.float32)
    p /= p.sum(axis=(1, 2), keepdims=True)
    features = stats.downsize(p, (32, 32)).reshape(len(p), -1).astype(np.float16)
    del maps, p
    log("", "### Spectral clustering of one class as N grows (32x32 small maps)", "",
        "| N | seconds | s per 1,000 maps | time(N) / (2 time(N/2)) | clusters |", "|---:|---:|---:|---:|---:|")
    previous, ratios, seconds = None, [], []
    for n in sizes:
        times, k = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = clustering.spectral_clusters(features[:n].astype(np.float32))
            times.append(time.perf_counter() - start)
            k = int(result.labels.max()) + 1
        t = statistics.median(times)
        seconds.append(t)
        ratio = None if previous is None else t / (2 * previous)
        if ratio is not None:
            ratios.append(ratio)
        log(f"| {n:,} | {t:.2f} | {1000 * t / n:.3f} | {'–' if ratio is None else f'{ratio:.2f}'} | {k} |")
        previous = t
    exponent = float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])
    log("", f"Fitted cost ~ N^{exponent:.2f} over {sizes[0]:,}-{sizes[-1]:,} maps (a dense N x N affinity would be "
            f"N^2 or worse). Target: exponent <= 1.2: {'PASS' if exponent <= 1.2 else 'MISS'}.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maps", type=int, default=20_000, help="maps in the store (default 20,000)")
    p.add_argument("--max-n", type=int, default=32_000, help="largest N of the scaling part (default 32,000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--parts", default="store,scaling")
    p.add_argument("--save", default=None, help="also write the printed report to this file (Markdown)")
    args = p.parse_args(argv)
    log = Report()
    log(f"## bench_audit ({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, load {load()})",
        "", f"`{env_prefix()}python benchmarks/bench_audit.py {' '.join(argv or sys.argv[1:])}`", "", versions())
    parts = args.parts.split(",")
    if "store" in parts:
        bench_store(args, log)
    if "scaling" in parts:
        bench_scaling(args, log)
    if args.save:
        save(args.save, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
