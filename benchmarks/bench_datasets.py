"""Whole datasets: how much of `kc.explain_dataset`'s decoding and writing the model hides, and K targets in one pass.

Two measurements of what docs/architecture.md ("Whole datasets", "Compile once") promises, each side by side
in one run, on `keras.applications.MobileNetV2(weights=None)` (random weights) and Grad-CAM at its
automatic layer:

- **overlap** (`--parts overlap`): `--images` JPEG files of `--size` px (`kc.datasets.make_shapes`, written with
  `cv2.imwrite` into a temporary folder, outside every timing) explained end to end by
  `kc.explain_dataset(explainer, folder, batch_size=B, verbose=0)`:
  * without a store (heatmaps kept in memory), with a zarr store (a fresh folder each round), with
    `overlays_dir` (one PNG per image, written by the writer thread), and with both;
  * against `explainer.compute(x_batch, batch_size=B)` per batch on the same images already decoded in
    memory ("compute alone": what the model costs, nothing read or written);
  * and the parts that the threads are meant to hide, timed alone: "decode only" (`kc.visualize.read_image`
    per file at the model's size and `np.stack` per batch: what the reader thread does) and "overlays only"
    (`kc.overlay` + `kc.save_image` of every image's map, serially: what the writer thread does).
  The serial cost would be decode + compute (+ overlays); the report gives how much of the decode (and
  overlay) time each end-to-end run hid. Target: end to end <= 1.2x compute alone, for every variant.
  The heatmaps of each end-to-end variant are checked against compute alone (outside the timing).
- **targets** (`--parts targets`): a batch of 8 random images (`--batch-size`), Grad-CAM with 10 targets per
  image (`targets` an (8, 10) int array: one forward pass and a vectorized backward) against one target
  (`targets` (8,)), against the naive way (10 calls with one target each) and, on TensorFlow,
  tf-keras-vis' `Gradcam` (`ReplaceToLinear()`, `CategoricalScore`, `penultimate_layer` the same layer)
  called 10 times, as peers must. Target: 10 targets <= 2x one target. The 10-target maps are checked against
  the 10 single-target calls (outside the timing).

Every contender gets one warm-up call (tracing/compilation, excluded from the timings and reported as "first
call"); then each round times every contender once, in turn, rotating who goes first (interleaved, so the
load of a shared machine falls on all alike); medians are reported, each round is in the log. Prints
Markdown and the targets with PASS/MISS (informational: the exit code is 0).

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/bench_datasets.py --save benchmarks/results/datasets_tensorflow.md
    KERAS_BACKEND=jax python benchmarks/bench_datasets.py --save benchmarks/results/datasets_jax.md
    # a quick look (about a minute):
    KERAS_BACKEND=tensorflow python benchmarks/bench_datasets.py --images 32 --repeats 2 --size 128

Options: `--images 128`, `--batch-size 16` (the overlap part's batches; the targets part uses 8 unless
given), `--repeats 5`, `--size 224`, `--targets 10`, `--parts overlap,targets`, `--seed 0`, `--save FILE`,
`--compute-threads N` (TensorFlow, PyTorch: the model computes on N threads; on a CPU-only machine whose
cores the model keeps busy, the reader and writer threads have nothing to overlap on, and a free core shows
what they hide where the model runs on an accelerator).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np

import keras_cam as kc
from bench_explainers import BACKEND, Report, env_prefix, load, save, versions
LAYER = "out_relu"  # MobileNetV2's last feature map (its automatic layer); named so every contender agrees
PARTS = ("overlap", "targets")


class Contender:
    """A zero-argument function timed per round, with an optional untimed `before` (e.g. a fresh folder)."""

    def __init__(self, fn: Callable[[], object], before: Optional[Callable[[], None]] = None) -> None:
        self.fn, self.before = fn, before

    def __call__(self) -> Tuple[float, object]:
        if self.before is not None:
            self.before()
        start = time.perf_counter()
        out = self.fn()
        return time.perf_counter() - start, out


def run_interleaved(contenders: Dict[str, Contender], repeats: int, log: Report, unit: str = "ms"):
    """One warm-up call each, then `repeats` rounds timing each contender once, rotating who goes first.

    Returns (first-call seconds, list of timed seconds, warm-up outputs) per contender.
    """
    scale = 1e3 if unit == "ms" else 1.0
    first, outputs = {}, {}
    for name, c in contenders.items():
        first[name], outputs[name] = c()
        log(f"    warm-up {name:<40s} {first[name]:8.2f} s")
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(contenders[name]()[0])
        rounds = ", ".join(f"{n} {times[n][-1] * scale:.{0 if unit == 'ms' else 2}f}" for n in names)
        log(f"    round {r + 1}/{repeats} ({unit}): {rounds}")
    return first, times, outputs


def verdict(ok: bool, text: str) -> str:
    return f"[{'PASS' if ok else 'MISS'}] {text}"


def mobilenet(size: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3))


# ---------------------------------------------------------------------------------------------------------
# 1. Overlap


def write_jpegs(folder: str, n: int, size: int, seed: int) -> List[str]:
    import cv2

    images, _, _ = kc.datasets.make_shapes(n, size=size, seed=seed)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(folder, f"img_{i:05d}.jpg")
        bgr = cv2.cvtColor(np.round(image * 255.0).astype(np.uint8), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise SystemExit(f"could not write {path}")
        paths.append(path)
    return paths


def bench_overlap(args, log: Report) -> List[str]:
    from keras_cam.visualize import read_image

    b, size = args.batch_size, args.size
    work = tempfile.mkdtemp(prefix="kc-bench-datasets-")
    try:
        folder = os.path.join(work, "images")
        os.makedirs(folder)
        paths = write_jpegs(folder, args.images, size, args.seed)
        mb = sum(os.path.getsize(p) for p in paths) / 1e6
        batches = [paths[i:i + b] for i in range(0, len(paths), b)]
        model = mobilenet(size, args.seed)
        explainer = kc.GradCAM(model, layer=LAYER)
        log("", f"## Overlap — `kc.explain_dataset` on {len(paths)} JPEG files of {size}x{size} "
                f"({mb:.1f} MB), batch {b} ({len(batches)} batches)", "",
            f"    MobileNetV2 (weights=None), Grad-CAM at `{LAYER}`, targets=None (the predicted class)")

        def decode():
            return [np.stack([read_image(p, (size, size)) for p in chunk]) for chunk in batches]

        decoded = decode()  # the in-memory copy compute alone runs on (decoded outside its timing)

        def compute():
            return [explainer.compute(x, batch_size=b) for x in decoded]

        # The maps overlays-only encodes (from compute alone, outside the timing).
        maps = np.concatenate([r.heatmaps for r in compute()])
        pictures = np.concatenate(decoded)
        names = [os.path.join(work, "overlays-only", f"{i:05d}.png") for i in range(len(paths))]

        def overlays_only():
            for name, picture, heatmap in zip(names, pictures, maps):
                kc.save_image(name, kc.overlay(picture, heatmap))

        counter = [0]

        def fresh(kind: str) -> Callable[[], None]:
            def before():  # a new folder per call (outside the timing); the previous one is removed
                counter[0] += 1
                for old in [d for d in os.listdir(work) if d.startswith(kind + "-")]:
                    shutil.rmtree(os.path.join(work, old), ignore_errors=True)
                slots[kind] = os.path.join(work, f"{kind}-{counter[0]}")
            return before

        slots: Dict[str, str] = {}

        def e2e(store: bool, overlays: bool) -> Callable[[], object]:
            def run():
                out = kc.explain_dataset(explainer, folder, batch_size=b, verbose=0,
                                         store=os.path.join(slots["run"], "maps.zarr") if store else None,
                                         overlays_dir=os.path.join(slots["run"], "png") if overlays else None)
                return out["heatmaps"][:] if store else out.heatmaps
            return run

        contenders = {
            "decode only": Contender(decode),
            "compute alone": Contender(lambda: np.concatenate([r.heatmaps for r in compute()])),
            "overlays only": Contender(overlays_only),
            "end to end, no store": Contender(e2e(False, False), fresh("run")),
        }
        has_zarr = importlib.util.find_spec("zarr") is not None
        if has_zarr:
            contenders["end to end, zarr store"] = Contender(e2e(True, False), fresh("run"))
        contenders["end to end, overlays"] = Contender(e2e(False, True), fresh("run"))
        if has_zarr:
            contenders["end to end, store + overlays"] = Contender(e2e(True, True), fresh("run"))
        first, times, outputs = run_interleaved(contenders, args.repeats, log, unit="s")
        med = {k: statistics.median(v) for k, v in times.items()}

        stored = {"end to end, zarr store", "end to end, store + overlays"}
        notes = []
        reference = outputs["compute alone"]
        for name in contenders:
            if name.startswith("end to end"):
                got = np.asarray(outputs[name], np.float32)
                diff = float(np.max(np.abs(got - reference))) if got.shape == reference.shape else float("inf")
                notes.append(f"    {name}: heatmaps {got.shape}, max |difference| from compute alone "
                             f"{diff:.1e}" + (" (the store keeps float16)" if name in stored else ""))
        log(*notes)
        if not has_zarr:
            log("    zarr is not installed: the store rows are left out (pip install \"keras-cam[zarr]\")")

        n, dec, comp, ovl = len(paths), med["decode only"], med["compute alone"], med["overlays only"]
        header = ["contender", "median s", "images/s", "vs compute alone", "over compute alone s",
                  "decode (+ overlays) alone s", "first call s"]
        rows = []
        for name in contenders:
            t = med[name]
            over, extra = "–", "–"
            if name.startswith("end to end"):
                over = f"{t - comp:+.2f}"
                extra = f"{dec + (ovl if 'overlays' in name else 0.0):.2f}"
            rows.append([name, f"{t:.2f}", f"{n / t:.1f}", f"{t / comp:.2f}x", over, extra,
                         f"{first[name]:.2f}"])
        log("", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            log("| " + " | ".join(row) + " |")
        log("", f"\"decode only\": `read_image` of every file at {size}x{size} and one `np.stack` per batch (the "
                "reader thread's work); \"overlays only\": `kc.overlay` + `kc.save_image` of every map, "
                "serially (the writer thread's work). Run serially, an end-to-end run would cost compute alone "
                "plus the last column (plus, with a store, its writes and the model fingerprint it checks "
                "resumes against); \"over compute alone\" is what it did cost on top. "
                "Times are medians over the rounds.", "")
        verdicts = []
        for name in contenders:
            if name.startswith("end to end"):
                r = med[name] / comp
                verdicts.append(verdict(r <= 1.2, f"overlap: {name} <= 1.2x compute alone: {r:.2f}x"))
        return verdicts
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# 2. K targets in one pass


def tf_keras_vis_gradcam(model, x: np.ndarray, t: np.ndarray):
    """tf-keras-vis Gradcam called once per target column, or None when it cannot run here."""
    if BACKEND != "tensorflow":
        return None
    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
        from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError:
        return None
    # clone=True: ReplaceToLinear would otherwise rewrite the softmax of the model ours uses (same cost).
    peer = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    scores = [CategoricalScore([int(v) for v in t[:, k]]) for k in range(t.shape[1])]

    def run():
        return np.stack([peer(s, x, penultimate_layer=LAYER, seek_penultimate_conv_layer=False)
                         for s in scores], axis=1)

    return run


def bench_targets(args, log: Report) -> List[str]:
    b, k, size = args.targets_batch, args.targets, args.size
    model = mobilenet(size, args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-1.0, 1.0, (b, size, size, 3)).astype(np.float32)
    classes = model.output_shape[-1]
    t_many = np.stack([rng.choice(classes, k, replace=False) for _ in range(b)]).astype(np.int32)  # (b, k)
    t_one = t_many[:, 0].copy()
    explainer = kc.GradCAM(model, layer=LAYER)
    log("", f"## {k} targets in one pass — MobileNetV2 (weights=None), Grad-CAM at `{LAYER}`, "
            f"{size}x{size}, batch {b}", "",
        f"    targets (first image): {t_many[0].tolist()}")

    contenders = {
        "1 target (N,)": Contender(lambda: explainer.explain(x, targets=t_one)),
        f"{k} targets (N, {k}), one call": Contender(lambda: explainer.explain(x, targets=t_many)),
        f"{k} calls of 1 target (naive)": Contender(
            lambda: np.stack([explainer.explain(x, targets=t_many[:, j]) for j in range(k)], axis=1)),
    }
    peer = tf_keras_vis_gradcam(model, x, t_many)
    if peer is not None:
        contenders[f"tf-keras-vis Gradcam x {k}"] = Contender(peer)
    first, times, outputs = run_interleaved(contenders, args.repeats, log)
    med = {n: statistics.median(v) * 1e3 for n, v in times.items()}

    names = list(contenders)
    many, naive = outputs[names[1]], outputs[names[2]]
    log(f"    {names[1]}: maps {many.shape}; max |difference| from the {k} single-target calls "
        f"{float(np.max(np.abs(many - naive))):.1e}")
    if peer is not None:
        ours, theirs = many.ravel().astype(np.float64), np.asarray(outputs[names[3]]).ravel().astype(np.float64)
        r = float(np.corrcoef(ours, theirs)[0, 1]) if ours.std() and theirs.std() else float("nan")
        log(f"    agreement with tf-keras-vis Gradcam (normalized heatmaps, all {b * k} maps): Pearson r = {r:.3f}")

    one = med[names[0]]
    header = ["contender", "maps", "median ms", "ms per map", "vs 1 target", f"vs {k} targets in one call",
              "first call s"]
    log("", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|")
    for i, name in enumerate(names):
        count = b if i == 0 else b * k
        log("| " + " | ".join([name, str(count), f"{med[name]:.1f}", f"{med[name] / count:.2f}",
                               f"{med[name] / one:.2f}x", f"{med[name] / med[names[1]]:.2f}x",
                               f"{first[name]:.2f}"]) + " |")
    log("", "Times are medians over the rounds (each round is in the log above).", "")
    out = [verdict(med[names[1]] <= 2 * one, f"targets: {k} targets in one call <= 2x one target: "
                                             f"{med[names[1]] / one:.2f}x")]
    out.append(f"[info] targets: {k} separate calls cost {med[names[2]] / med[names[1]]:.1f}x the one call")
    if peer is not None:
        out.append(f"[info] targets: tf-keras-vis Gradcam x {k} costs {med[names[3]] / med[names[1]]:.1f}x "
                   "the one call")
    return out


# ---------------------------------------------------------------------------------------------------------


def limit_compute_threads(n: int) -> None:
    """The backend's compute on `n` threads (before its first op): on a CPU-only machine whose cores the
    model keeps busy, the reader and writer threads have no core to overlap on; a free core shows what they
    hide where the model runs on an accelerator."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    elif BACKEND == "torch":
        import torch

        torch.set_num_threads(n)
    else:
        raise SystemExit("--compute-threads: JAX's CPU threads are set by XLA_FLAGS before it starts")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated from {list(PARTS)}")
    p.add_argument("--images", type=int, default=128, help="JPEG files written for the overlap part")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default: 16 for the overlap part, 8 for the targets part)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (median reported)")
    p.add_argument("--size", type=int, default=224, help="image height and width (files and model input)")
    p.add_argument("--targets", type=int, default=10, help="targets per image in the targets part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="also write the printed report to this file (Markdown)")
    p.add_argument("--compute-threads", type=int, default=None,
                   help="threads the backend computes with (TensorFlow, PyTorch), leaving the other cores to "
                        "the reader and writer threads, as an accelerator would")
    args = p.parse_args(argv)
    if args.compute_threads is not None:
        limit_compute_threads(args.compute_threads)
    args.parts = [s.strip().lower() for s in args.parts.split(",") if s.strip()]
    for part in args.parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}; choose from {list(PARTS)}")
    if args.images < 1 or args.repeats < 1 or args.targets < 1 or args.size < 32:
        p.error("--images, --repeats and --targets must be >= 1, --size >= 32")
    args.targets_batch = args.batch_size or 8
    args.batch_size = args.batch_size or 16

    log = Report()
    header = versions()
    import cv2

    header += f", opencv {cv2.__version__}"
    try:
        import zarr

        header += f", zarr {zarr.__version__}"
    except ImportError:
        header += ", zarr not installed"
    log(f"# keras-cam dataset benchmark — backend `{BACKEND}`", "",
        f"- date: {datetime.date.today().isoformat()}; machine: {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), no GPU; python {platform.python_version()}",
        f"- {header}, keras-cam {kc.__version__}",
        f"- settings: parts {args.parts}; MobileNetV2 (weights=None) at {args.size}x{args.size}; overlap: "
        f"{args.images} JPEGs, batch {args.batch_size}; targets: batch {args.targets_batch}, "
        f"{args.targets} targets per image; compute threads {args.compute_threads or 'all'}; "
        f"{args.repeats} interleaved repeats after 1 warm-up call each, "
        f"medians; load average at start {load()}",
        f"- command: {env_prefix()}python benchmarks/bench_datasets.py {' '.join(sys.argv[1:])}")
    verdicts: List[str] = []
    total = time.perf_counter()
    for part in args.parts:
        verdicts += bench_overlap(args, log) if part == "overlap" else bench_targets(args, log)
        if args.save:  # after each part too, so an interrupted run keeps what it measured
            save(args.save, log)
    log("## Targets (informational)", "")
    log(*[f"- {v}" for v in verdicts])
    log("", f"Total benchmark time: {time.perf_counter() - total:.0f} s; load average at end {load()} "
        f"(other processes on this {os.cpu_count()}-core machine add noise; the interleaving spreads it "
        "evenly)")
    if args.save:
        save(args.save, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
