"""Filter pattern quality and speed: the Fourier parameterization with transforms against plain pixel ascent.

Issue #17: trained briefly on make_shapes, the demo CNN's pixel-ascent patterns are grey noise with faint
oriented texture. This script trains two small networks on `make_shapes` (48x48), the demo CNN
(`keras_cam.demo.build_demo_model`, 4 conv blocks) and a VGG16-style stack (3x3 conv-BN-ReLU, 2-2-3 convs,
16-32-64 filters), and for every conv layer compares, on the same filters with the same steps and seed:

- before: `param="pixel", transforms=()`, the previous default (the keras.io recipe with a 2-px roll);
- after: the new default, `param="fourier", transforms="default"`.

Measures (per layer, over the first `--filters` filters):

(a) high-frequency share: the share of spectral energy above half the Nyquist frequency (radial frequency
    > 0.25 cycles per pixel) of each pattern in grey (mean of its channels, mean removed), averaged over
    patterns; the same for held-out training images is the target (goal: within 0.1 of it).
(b) robustness: the filter's activation (mean over the layer's output less 2 pixels on each side, as the
    ascent scores it) on the pattern under a fresh random transform drawn from the default distribution
    (shift up to 1/16 of the size, zoom 0.9-1.1, turn +-10 degrees, with another seed than the ascent's),
    as a share of its activation on the pattern itself: sum over filters, mean over 8 draws (goal >= 0.8).
    The transforms are applied with OpenCV (`cv2.warpAffine`, bicubic, wrapping at the edges), an
    implementation independent of the library's; the share with bilinear resampling, which blurs
    fractional positions more, is reported beside it.
(c) activation reached: mean activation of the patterns, after / before.

Speed: wall time of `optimize(filters, steps)` with every filter of a layer in one batch, warm (compiled),
in interleaved rounds, for the previous implementation's default ascent (`FilterVisualizer` at the commit
`--previous`, read with `git show`), this one's pixel ascent and the new default; the tables give medians
and the ratios (goal: new default / previous <= 1.5).

It also draws docs/filters_before_after.png: for each conv layer of the demo CNN, a row of patterns before
and a row after, the same filters.

Usage (what benchmarks/results/filter_quality_*.md hold; about 6 minutes on TensorFlow):
    KERAS_BACKEND=tensorflow python benchmarks/bench_filter_quality.py --rounds 7 \
        --out benchmarks/results/filter_quality_tensorflow.md --picture docs/filters_before_after.png
    KERAS_BACKEND=jax python benchmarks/bench_filter_quality.py --no-quality \
        --out benchmarks/results/filter_quality_jax.md
    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 KERAS_BACKEND=torch \
        python benchmarks/bench_filter_quality.py --no-quality --rounds 3 \
        --out benchmarks/results/filter_quality_torch.md
Options: --filters 16 (per layer, quality), --steps 30, --n-train 3000, --epochs 4, --rounds 5, --no-speed,
--no-quality, --previous f5700a2 ('' to skip it), --out FILE.md, --picture FILE.png.
"""
import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import keras
import numpy as np

from keras_cam import datasets
from keras_cam.activation_maximization import FilterVisualizer
from keras_cam.activation_maximization.transforms import DEFAULT_TRANSFORMS, resample, sample_matrix
from keras_cam.demo import build_demo_model, train_demo_model
from keras_cam.feature_extraction import feature_maps
from keras_cam.visualize import image_grid, save_image

SIZE = 48
BORDER = 2
BEFORE = {"param": "pixel", "transforms": ()}
AFTER = {}  # the defaults: param="fourier", transforms="default"
DEMO_LAYERS = ["block1_conv", "block2_conv", "block3_conv", "features_conv"]


def vgg_style(input_shape=(SIZE, SIZE, 3), classes=3):
    """VGG16's pattern at a small scale: blocks of 3x3 convs (with BatchNormalization, which lets it train
    in a few epochs) and a 2x2 max pooling, then global average pooling and a softmax."""
    layers = [keras.Input(input_shape)]
    for block, (width, convs) in enumerate([(16, 2), (32, 2), (64, 3)], 1):
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            layers += [keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name),
                       keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{i}"),
                       keras.layers.ReLU(name=f"block{block}_relu{i}")]
        layers.append(keras.layers.MaxPooling2D(name=f"block{block}_pool"))
    layers += [keras.layers.GlobalAveragePooling2D(name="gap"),
               keras.layers.Dense(classes, activation="softmax", name="predictions")]
    return keras.Sequential(layers, name="vgg_style")


def high_frequency_share(images):
    """Mean over images of the share of grey spectral energy above 0.25 cycles per pixel."""
    grey = np.asarray(images, np.float64).mean(axis=-1)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    energy = np.abs(np.fft.fft2(grey)) ** 2
    fy = np.fft.fftfreq(grey.shape[1])[:, None]
    fx = np.fft.fftfreq(grey.shape[2])[None, :]
    high = np.sqrt(fy**2 + fx**2) > 0.25
    return float(np.mean((energy * high).sum(axis=(1, 2)) / np.maximum(energy.sum(axis=(1, 2)), 1e-30)))


def activations(model, layer, images, filters):
    maps = feature_maps(model, layer, images)
    return np.array([maps[i, BORDER:-BORDER, BORDER:-BORDER, f].mean() for i, f in enumerate(filters)])


def warp_cv2(images, matrix):
    """OpenCV bicubic resampling at matrix @ (y, x, 1), wrapping at the edges."""
    m = np.array([[matrix[1, 1], matrix[1, 0], matrix[1, 2]], [matrix[0, 1], matrix[0, 0], matrix[0, 2]]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    return np.stack([cv2.warpAffine(np.ascontiguousarray(x), m, (x.shape[1], x.shape[0]), flags=flags,
                                    borderMode=cv2.BORDER_WRAP) for x in images]).reshape(images.shape)


def robustness(model, layer, images, filters, draws=8, seed=12345):
    base = activations(model, layer, images, filters).sum()
    rng = np.random.default_rng(seed)
    cubic, linear = [], []
    for _ in range(draws):
        matrix = sample_matrix(DEFAULT_TRANSFORMS, rng, images.shape[1:3])
        cubic.append(activations(model, layer, warp_cv2(images, matrix), filters).sum())
        moved = keras.ops.convert_to_numpy(resample(images, matrix))
        linear.append(activations(model, layer, moved, filters).sum())
    return float(np.mean(cubic) / base), float(np.mean(linear) / base)


def quality(model, layers, filters, steps):
    rows = []
    for layer in layers:
        viz = FilterVisualizer(model, layer)
        chosen = list(range(min(filters, viz.num_filters())))
        row = {"layer": layer}
        for name, options in (("before", BEFORE), ("after", AFTER)):
            patterns = viz.optimize(filters=chosen, steps=steps, **options)
            row[f"hf_{name}"] = high_frequency_share(patterns)
            row[f"robust_{name}"], row[f"robust_linear_{name}"] = robustness(model, layer, patterns, chosen)
            row[f"act_{name}"] = float(activations(model, layer, patterns, chosen).mean())
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else str(v) for k, v in row.items()),
              flush=True)
    return rows


def previous_visualizer(commit):
    """`FilterVisualizer` as it was at `commit` (before the Fourier default), read with `git show`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "show", f"{commit}:keras_cam/activation_maximization.py"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    # A real file, so that tf.function's autograph can read the source of the step.
    path = os.path.join(tempfile.mkdtemp(prefix="previous-"), "previous_activation_maximization.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("previous_activation_maximization", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.FilterVisualizer


def speed(cases, steps, rounds, previous):
    """Median warm seconds of optimize(every filter): the previous implementation's pixel ascent, this
    one's pixel ascent (`param="pixel", transforms=()`), and the new default, in interleaved rounds."""
    out = []
    for label, model, layer in cases:
        viz = FilterVisualizer(model, layer)
        filters = range(viz.num_filters())
        runs = {"pixel": lambda s: viz.optimize(filters=filters, steps=s, **BEFORE),
                "fourier": lambda s: viz.optimize(filters=filters, steps=s, **AFTER)}
        if previous is not None:
            old = previous(model, layer)
            runs = {"previous": lambda s: old.optimize(filters=filters, steps=s), **runs}
        for run in runs.values():
            run(2)  # compile
        times = {name: [] for name in runs}
        for r in range(rounds):
            order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]  # who goes first rotates
            for name in order:
                start = time.perf_counter()
                runs[name](steps)
                times[name].append(time.perf_counter() - start)
        row = {"case": f"{label} `{layer}`, {len(filters)} filters", "times": times}
        row.update({name: statistics.median(t) for name, t in times.items()})
        out.append(row)
        print(row["case"], " ".join(f"{name} {row[name]:.2f}s" for name in runs), flush=True)
    return out


def picture(model, path, filters=8, steps=30, scale=2, margin=3):
    """Per conv layer of the demo CNN, a row of patterns before and a row after (the same filters), tiles
    enlarged `scale` times, with a caption column on the left."""
    rows, captions = [], []
    for layer in DEMO_LAYERS:
        viz = FilterVisualizer(model, layer)
        for name, options in (("before: pixel", BEFORE), ("after: fourier", AFTER)):
            tiles = viz.visualize(filters=range(filters), steps=steps, **options)
            rows.append(np.repeat(np.repeat(tiles, scale, axis=1), scale, axis=2))
            captions.append((layer, name))
    grid = image_grid(np.concatenate(rows), cols=filters, margin=margin)
    tile = rows[0].shape[1]
    panel = np.zeros((grid.shape[0], 120, 3), np.uint8)
    for i, (layer, name) in enumerate(captions):
        top = i * (tile + margin) + tile // 2
        for dy, text in ((-6, layer), (12, name)):
            cv2.putText(panel, text, (6, top + dy), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1,
                        cv2.LINE_AA)
    save_image(path, np.concatenate([panel, grid], axis=1))


def table(rows, reference):
    lines = ["| layer | (a) high-freq. share: before | after | (b) robustness: before | after "
             "| (b, bilinear): before / after | (c) activation: before | after | after / before |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        hf_ok = "PASS" if abs(r["hf_after"] - reference) <= 0.1 else "MISS"
        rb_ok = "PASS" if r["robust_after"] >= 0.8 else "MISS"
        lines.append(
            f"| `{r['layer']}` | {r['hf_before']:.2f} | {r['hf_after']:.2f} {hf_ok} "
            f"| {r['robust_before']:.2f} | {r['robust_after']:.2f} {rb_ok} "
            f"| {r['robust_linear_before']:.2f} / {r['robust_linear_after']:.2f} "
            f"| {r['act_before']:.3g} | {r['act_after']:.3g} | {r['act_after'] / r['act_before']:.2f} |")
    return lines


def report(args, backend, loads, reference, train, demo_rows, vgg_rows, timings):
    seconds, demo_acc, vgg_acc = train
    env = "".join(f"{k}={os.environ[k]} " for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
                  if k in os.environ)
    lines = [
        f"# Filter pattern quality and speed: {backend}",
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; Keras {keras.__version__}, "
        f"backend {backend}. Load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in loads[0])} before, "
        f"{', '.join(f'{v:.1f}' for v in loads[1])} after (the cores are shared with other jobs).",
        f"Command: `{env}KERAS_BACKEND={backend} python benchmarks/bench_filter_quality.py "
        f"{' '.join(args.argv)}`.",
        "",
        f"Both networks trained {args.epochs} epochs on {args.n_train} `make_shapes` images ({SIZE}x{SIZE}) "
        f"in {seconds:.0f} s; final training accuracy: demo CNN {demo_acc:.2f}, VGG-style {vgg_acc:.2f}. "
        "Before: `param=\"pixel\", transforms=()` (the previous default); after: the new default "
        f"(`param=\"fourier\", transforms=\"default\"`); both {args.steps} steps, seed 0.",
        "",
    ]
    if demo_rows:
        lines += [
            f"Quality over the first {args.filters} filters of each conv layer. (a) target: the held-out "
            f"training images' high-frequency share, **{reference:.2f}**, within 0.1. (b) target: >= 0.8 "
            "(OpenCV bicubic; the bilinear column is the ascent's own resampling). (c): the mean activation "
            "of the patterns. See the script's docstring for the definitions.",
            "",
            "### Demo CNN (`keras_cam.demo.build_demo_model`)",
            "",
            *table(demo_rows, reference),
            "",
            "### VGG-style CNN (3x3 conv-BN-ReLU, 2-2-3 convs of 16-32-64 filters)",
            "",
            *table(vgg_rows, reference),
            "",
        ]
    if timings:
        has_previous = "previous" in timings[0]
        lines += [
            f"### Speed: `optimize` with every filter of the layer in one batch, {args.steps} steps",
            "",
            f"Median of {args.rounds} warm rounds, interleaved (who goes first rotates). Previous: "
            f"`FilterVisualizer` at commit {args.previous} (read with `git show`), its default ascent; "
            "pixel: "
            "this one's `param=\"pixel\", transforms=()` (the same ascent, but penalties of weight 0 are no "
            "longer computed); fourier: the new default. Target: fourier / previous <= 1.5.",
            "",
            "| case | " + ("previous (ms/step) | " if has_previous else "") + "pixel (ms/step) "
            "| fourier (ms/step) | " + ("fourier / previous | " if has_previous else "")
            + "fourier / pixel |",
            "|---|" + "---:|" * (5 if has_previous else 3),
        ]
        for t in timings:
            cells = [t["case"]]
            cells += [f"{t['previous'] / args.steps * 1000:.1f}"] if has_previous else []
            cells += [f"{t['pixel'] / args.steps * 1000:.1f}", f"{t['fourier'] / args.steps * 1000:.1f}"]
            if has_previous:
                ratio = t["fourier"] / t["previous"]
                cells.append(f"{ratio:.2f} {'PASS' if ratio <= 1.5 else 'MISS'}")
            cells.append(f"{t['fourier'] / t['pixel']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Every round (seconds for the whole call):", ""]
        for t in timings:
            lines.append(f"- {t['case']}: " + "; ".join(
                f"{name} {', '.join(f'{v:.2f}' for v in values)}" for name, values in t["times"].items()))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=16, help="filters per layer for the quality measures")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median)")
    parser.add_argument("--no-speed", action="store_true", help="skip the timings")
    parser.add_argument("--no-quality", action="store_true", help="skip the quality measures")
    parser.add_argument("--previous", default="f5700a2",
                        help="git commit of the previous implementation, timed beside ('' to skip)")
    parser.add_argument("--out", default=None, help="write the results as Markdown here")
    parser.add_argument("--picture", default=None, help="write the before/after grid here")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    backend = keras.backend.backend()
    load_before = os.getloadavg()
    keras.utils.set_random_seed(0)
    x, y, _ = datasets.make_shapes(args.n_train, size=SIZE, seed=0)
    reference = high_frequency_share(datasets.make_shapes(64, size=SIZE, seed=10_000)[0])
    print(f"training images: high-frequency share {reference:.3f}", flush=True)

    start = time.perf_counter()
    demo = build_demo_model((SIZE, SIZE, 3), 3)
    demo_acc = train_demo_model(demo, x, y, epochs=args.epochs).history["accuracy"][-1]
    vgg = vgg_style()
    vgg_acc = train_demo_model(vgg, x, y, epochs=args.epochs).history["accuracy"][-1]
    train = (time.perf_counter() - start, demo_acc, vgg_acc)
    print(f"trained in {train[0]:.0f} s: demo accuracy {demo_acc:.2f}, VGG-style {vgg_acc:.2f}", flush=True)
    vgg_layers = [layer.name for layer in vgg.layers if isinstance(layer, keras.layers.Conv2D)]

    demo_rows = [] if args.no_quality else quality(demo, DEMO_LAYERS, args.filters, args.steps)
    vgg_rows = [] if args.no_quality else quality(vgg, vgg_layers, args.filters, args.steps)
    cases = [("demo CNN", demo, "block1_conv"), ("demo CNN", demo, "features_conv"),
             ("VGG-style", vgg, "block3_conv3")]
    previous = previous_visualizer(args.previous) if args.previous else None
    timings = [] if args.no_speed else speed(cases, args.steps, args.rounds, previous)
    if args.picture:
        picture(demo, args.picture, steps=args.steps)
    loads = (load_before, os.getloadavg())
    text = report(args, backend, loads, reference, train, demo_rows, vgg_rows, timings)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
