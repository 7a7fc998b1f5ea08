"""Dataset audit: `kc.audit` throughput on a store of 20,000 maps, its peak memory, and how the spectral
clustering's cost grows with the number of maps.

Two measurements of what docs/architecture.md ("Dataset audit") promises, each in one run:

- **store** (`--parts store`): `--maps` synthetic 64x64 maps (three classes, objects anywhere, a planted
  corner shortcut on half of class 0) written into a float16 zarr store with the store API (outside the
  timing), then audited from the store by `kc.audit(path, masks=..., embedding=None)` in a fresh process
  (so that its peak RSS is the audit's alone). Reported: maps/s, peak RSS, and the peak RSS against the maps'
  size as one float32 array (what reading them whole would take). The planted shortcut's precision and
  recall are checked too. Target: peak RSS below the maps' float32 size (memory does not grow with N like
  the maps do).
- **scaling** (`--parts scaling`): the clustering of one class (`keras_cam.audit.clustering.spectral_clusters`
  on 32x32 small maps: PCA, sparse kNN graph, `eigsh`, k-means) for N = 1,000 to `--max-n` maps, doubling.
  Reported: seconds and seconds per 1,000 maps, and each step's cost ratio against a linear growth
  (time(2N) / (2 time(N))). Target: every ratio <= 1.5 (near linear; a dense N x N affinity would be 2).

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

store, masks, planted = sys.argv[1], np.load(sys.argv[2], mmap_mode="r"), np.load(sys.argv[3])
start = time.perf_counter()
report = kc.audit(store, masks=masks, embedding=None)
seconds = time.perf_counter() - start
top = report.findings[0]
picked = np.zeros(planted.size, bool); picked[top["images"]] = True
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(),
                  "precision": float(planted[picked].mean()), "recall": float(picked[planted].mean()),
                  "region": top["region"]}))
"""


def bench_store(args, log: Report) -> None:
    folder = tempfile.mkdtemp(prefix="bench_audit_")
    try:
        maps, labels, masks, planted = synthetic(args.maps)
        path = os.path.join(folder, "maps.zarr")
        write_store(path, maps, labels)
        np.save(os.path.join(folder, "masks.npy"), masks)
        np.save(os.path.join(folder, "planted.npy"), planted)
        dense_mb = args.maps * SIZE * SIZE * 4 / 2 ** 20
        del maps, masks
        # The same imports and one tiny audit (every module loaded), without the store: the fixed cost.
        tiny = _CHILD.split("store, masks")[0] + (
            "kc.audit(np.random.default_rng(0).random((60, 8, 8)), embedding=None)\nprint(peak_mb())\n")
        baseline = float(subprocess.run([sys.executable, "-c", tiny], capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])
        runs = []
        for r in range(args.repeats):
            done = subprocess.run([sys.executable, "-c", _CHILD, path, os.path.join(folder, "masks.npy"),
                                   os.path.join(folder, "planted.npy")], capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            log(f"    run {r + 1}: {runs[-1]['seconds']:.1f} s, peak RSS {runs[-1]['rss_mb']:.0f} MB")
        seconds = statistics.median(x["seconds"] for x in runs)
        rss = max(x["rss_mb"] for x in runs)
        log("", f"### Audit of a store of {args.maps:,} maps ({SIZE}x{SIZE}, float16 on disk)", "",
            "| maps/s | seconds | peak RSS | RSS after imports | audit's own | maps as float32 | own / float32 |"
            " planted: precision / recall | region |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {args.maps / seconds:,.0f} | {seconds:.1f} | {rss:.0f} MB | {baseline:.0f} MB | "
            f"{rss - baseline:.0f} MB | {dense_mb:.0f} MB | {(rss - baseline) / dense_mb:.2f} | "
            f"{runs[0]['precision']:.2f} / {runs[0]['recall']:.2f} | {runs[0]['region']} |", "",
            f"Target: the audit's own memory (peak RSS minus the imports') below the maps' float32 size: "
            f"{'PASS' if rss - baseline < dense_mb else 'MISS'}.")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_scaling(args, log: Report) -> None:
    from keras_cam.audit import clustering, statistics as stats

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
    previous, ratios = None, []
    for n in sizes:
        times, k = [], 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = clustering.spectral_clusters(features[:n].astype(np.float32))
            times.append(time.perf_counter() - start)
            k = int(result.labels.max()) + 1
        t = statistics.median(times)
        ratio = None if previous is None else t / (2 * previous)
        if ratio is not None:
            ratios.append(ratio)
        log(f"| {n:,} | {t:.2f} | {1000 * t / n:.3f} | {'–' if ratio is None else f'{ratio:.2f}'} | {k} |")
        previous = t
    log("", f"Target: every doubling costs <= 1.5x linear: {'PASS' if max(ratios) <= 1.5 else 'MISS'} "
            f"(worst {max(ratios):.2f}).")


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
