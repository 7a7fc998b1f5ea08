"""Speed of keras-cam's explainers against the model's own compiled pass and against tf-keras-vis.

Everything is measured side by side in one run, on the same model, batch and targets:

- ours: `kc.get_explainer(method, model, layer=L).explain(x, targets=t)` (numpy heatmaps at 224x224,
  normalized, as a user gets them).
- the limit: what no Grad-CAM implementation can beat.
  * TensorFlow: `keras.Model(model.input, [layer.output, <logits>])` in a `tf.function` under
    `tf.GradientTape`, returning the layer's activations and the gradient of the target logit w.r.t. them
    (the logits are the final Dense's pre-activation, computed from its input).
  * JAX / PyTorch: splitting a model at a layer is not generic there, so two bounds are reported: the
    compiled forward pass alone (lower bound) and a full forward + backward to the input (upper bound).
  * Score-CAM: its own masked forward passes: the compiled model forward over 8 x K masked images in the
    same chunk size as ours (the masks themselves are prepared outside the timing).
- Every contender takes the same numpy arrays: converting them to tensors is part of each call (as for a
  user), for the limits too.
- tf-keras-vis (TensorFlow only): Gradcam, GradcamPlusPlus, Layercam, Scorecam(max_N=K) with
  `ReplaceToLinear()` and `CategoricalScore(targets)`, `penultimate_layer=L` (constructed once, outside the
  timing).

Each contender gets one warm-up call (compilation; reported as "first call"), then every repeat times every
contender once, in turn (interleaved, so machine noise hits all alike); medians are reported. Prints one
table per model, as Markdown, and the issue's targets with PASS/MISS (informational: the exit code is 0).

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/bench_explainers.py
    KERAS_BACKEND=tensorflow python benchmarks/bench_explainers.py --models conv1d,conv3d   # 1-D and 3-D rows
    KERAS_BACKEND=jax python benchmarks/bench_explainers.py --models mobilenetv2 --size 96 --repeats 3
    ... --methods gradcam,scorecam --max-channels 32 --save benchmarks/results/tensorflow.md

PyTorch on the CPU: glibc returns torch's large buffers to the system after every call, and the page faults
that follow make each forward pass about 1.6x slower and very noisy (measured here on MobileNetV2: about
200 ms, with peaks of 340 ms, instead of 120 ms). `MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000` keeps them; it applies to
every contender alike, and the header records it.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import keras
import numpy as np

import keras_cam as kc

MODELS = {
    "mobilenetv2": ("MobileNetV2", "out_relu"),
    "resnet50": ("ResNet50", "conv5_block3_out"),
    "conv1d": ("Conv1D classifier", "features"),
    "conv3d": ("Conv3D classifier", "features"),
}


def _conv_classifier(rank: int, shape, widths, classes: int = 5) -> keras.Model:
    """conv-BN-ReLU blocks (pooling between them) -> GAP -> Dense + softmax, as 1-D / 3-D users build them."""
    conv = {1: keras.layers.Conv1D, 3: keras.layers.Conv3D}[rank]
    pool = {1: keras.layers.MaxPooling1D, 3: keras.layers.MaxPooling3D}[rank]
    gap = {1: keras.layers.GlobalAveragePooling1D, 3: keras.layers.GlobalAveragePooling3D}[rank]
    x = inputs = keras.Input(shape)
    for i, width in enumerate(widths):
        x = conv(width, 7 if rank == 1 else 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(name="features" if i == len(widths) - 1 else None)(x)
        if i < len(widths) - 1:
            x = pool(2)(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(gap()(x)))


#: The 1-D and 3-D rows: the keras-io time-series classifier's shape, deeper, on 4096-sample signals with 3
#: channels, and a small 3-D CNN on 64^3 volumes.
BUILDERS = {
    "conv1d": lambda: _conv_classifier(1, (4096, 3), (32, 64, 128, 128)),
    "conv3d": lambda: _conv_classifier(3, (64, 64, 64, 1), (16, 32, 64)),
}
GRADIENT_METHODS = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam"]
ALL_METHODS = GRADIENT_METHODS + ["scorecam"]
#: Methods whose cost is masked (or ablated) forward passes: measured against Score-CAM's limit, the compiled
#: forward over 8 x K perturbed images. Every other CAM method is measured against the gradient limit.
PERTURBATION_METHODS = ("scorecam", "ablationcam")
#: Input attributions have their own benchmark (bench_attributions.py, limit: forward + backward to the input).
ATTRIBUTIONS = ("saliency", "smoothgrad", "integrated-gradients", "guided-backprop", "guided-gradcam",
                "fullgrad")
TF_KERAS_VIS = {  # method -> (module, class)
    "gradcam": ("tf_keras_vis.gradcam", "Gradcam"),
    "gradcam++": ("tf_keras_vis.gradcam_plus_plus", "GradcamPlusPlus"),
    "layercam": ("tf_keras_vis.layercam", "Layercam"),
    "scorecam": ("tf_keras_vis.scorecam", "Scorecam"),
}
BACKEND = keras.backend.backend()


class Report:
    """Prints and keeps what is printed (for --save)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def __call__(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.buffer.write(line + "\n")


# ---------------------------------------------------------------------------------------------------------
# Contenders: name -> a zero-argument function that does the work and returns numpy (so nothing is pending).


def ours(method: str, model, layer: str, x: np.ndarray, t: np.ndarray, args) -> Callable[[], np.ndarray]:
    kwargs = {}
    if method in PERTURBATION_METHODS:
        kwargs = {"max_channels": args.max_channels, "batch_size": args.score_batch}
    explainer = kc.get_explainer(method, model, layer=layer, **kwargs)
    return lambda: explainer.explain(x, targets=t)


def _logits_head(model):
    """(input of the last Dense, its kernel, its bias) when the model ends in Dense+softmax, else None."""
    head = model.layers[-1]
    activation = getattr(getattr(head, "activation", None), "__name__", "")
    if isinstance(head, keras.layers.Dense) and activation in ("softmax", "sigmoid"):
        return head.input, head.kernel, head.bias
    return None


def _logits_model(model):
    """A model x -> logits (the Dense pre-activation), sharing the model's layers."""
    head = _logits_head(model)
    if head is None:
        return model, lambda y: y
    features, kernel, bias = head
    sub = keras.Model(model.input, features)
    return sub, lambda f: keras.ops.matmul(f, kernel) + bias


def limits(model, layer_name: str, x: np.ndarray, t: np.ndarray) -> Dict[str, Callable[[], object]]:
    """The gradient methods' limit(s) for this backend: {label: fn}."""
    layer = model.get_layer(layer_name)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        head = _logits_head(model)
        outputs = [layer.output, head[0] if head else model.output]
        sub = keras.Model(model.input, outputs)

        @tf.function
        def fwd_bwd_to_layer(xx, tt):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                # Watching the input records the forward; inside tf.function the gradient graph keeps only
                # the ops between the score and the layer's output (the keras-io / tf-keras-vis recipe).
                tape.watch(xx)
                a, out = sub(xx, training=False)
                logits = tf.matmul(out, head[1]) + head[2] if head else out
                score = tf.gather(logits, tt, batch_dims=1)
            return a, tape.gradient(score, a)

        convert = tf.convert_to_tensor
        return {"limit": lambda: [v.numpy() for v in fwd_bwd_to_layer(convert(x), convert(t))]}

    logit_model, to_logits = _logits_model(model)
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        tv = [v.value for v in logit_model.trainable_variables]
        ntv = [v.value for v in logit_model.non_trainable_variables]

        def logits(tv, ntv, xx):
            out, _ = logit_model.stateless_call(tv, ntv, xx, training=False)
            return to_logits(out)

        @jax.jit
        def forward(tv, ntv, xx, tt):
            return jnp.take_along_axis(logits(tv, ntv, xx), tt[:, None], axis=1)[:, 0]

        @jax.jit
        def fwd_bwd_to_input(tv, ntv, xx, tt):
            def score(xx):
                return jnp.take_along_axis(logits(tv, ntv, xx), tt[:, None], axis=1).sum()

            return jax.grad(score)(xx)

        return {
            "forward (lower)": lambda: np.asarray(forward(tv, ntv, jnp.asarray(x), jnp.asarray(t))),
            "fwd+bwd to input (upper)": lambda: np.asarray(fwd_bwd_to_input(tv, ntv, jnp.asarray(x),
                                                                              jnp.asarray(t))),
        }
    if BACKEND == "torch":
        import torch

        def forward():
            xt, tt = torch.as_tensor(x), torch.as_tensor(t, dtype=torch.long)
            with torch.no_grad():
                z = to_logits(logit_model(xt, training=False))
                return z.gather(1, tt[:, None])[:, 0].cpu().numpy()

        def fwd_bwd_to_input():
            xx, tt = torch.as_tensor(x).clone().requires_grad_(True), torch.as_tensor(t, dtype=torch.long)
            z = to_logits(logit_model(xx, training=False))
            (g,) = torch.autograd.grad(z.gather(1, tt[:, None]).sum(), xx)
            return g.cpu().numpy()

        return {"forward (lower)": forward, "fwd+bwd to input (upper)": fwd_bwd_to_input}
    raise SystemExit(f"Unsupported backend {BACKEND}")


def scorecam_limit(model, x: np.ndarray, t: np.ndarray, k: int, chunk: int) -> Callable[[], np.ndarray]:
    """The compiled forward over n * k masked images in chunks of `chunk` (masks prepared outside timing)."""
    n = x.shape[0]
    per_image = -(-k // chunk)  # ours pads each image's last chunk with empty masks
    calls = n * per_image
    rng = np.random.default_rng(1)
    masks = rng.random((chunk,) + x.shape[1:-1] + (1,), dtype=np.float32)
    chunks = [x[i // per_image : i // per_image + 1] * masks for i in range(calls)]
    index = [np.full((chunk,), t[i // per_image], np.int32) for i in range(calls)]
    logit_model, to_logits = _logits_model(model)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function
        def forward(xx, tt):
            return tf.gather(to_logits(logit_model(xx, training=False)), tt, batch_dims=1)

        convert = tf.convert_to_tensor
    elif BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        tv = [v.value for v in logit_model.trainable_variables]
        ntv = [v.value for v in logit_model.non_trainable_variables]

        @jax.jit
        def jitted(tv, ntv, xx, tt):
            out, _ = logit_model.stateless_call(tv, ntv, xx, training=False)
            return jnp.take_along_axis(to_logits(out), tt[:, None], axis=1)[:, 0]

        def forward(xx, tt):
            return jitted(tv, ntv, xx, tt)

        convert = jnp.asarray
    else:
        import torch

        def forward(xx, tt):
            with torch.no_grad():
                return to_logits(logit_model(xx, training=False)).gather(1, tt.long()[:, None])[:, 0]

        convert = torch.as_tensor

    def run():
        # Conversion of each chunk to a tensor is part of the work (ours does it too).
        return np.concatenate([keras.ops.convert_to_numpy(forward(convert(c), convert(i)))
                               for c, i in zip(chunks, index)])

    return run


def tf_keras_vis(method: str, model, layer: str, x: np.ndarray, t: np.ndarray, args):
    """(fn, peer, call kwargs) for tf-keras-vis' implementation of `method`, or None."""
    if BACKEND != "tensorflow" or method not in TF_KERAS_VIS:
        return None
    import importlib

    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    module, cls = TF_KERAS_VIS[method]
    # clone=True: ReplaceToLinear would otherwise rewrite the softmax of the model ours and the limit use.
    # The clone is structurally identical, so the per-call cost is the same either way (only construction
    # differs, and it is outside the timing).
    peer = getattr(importlib.import_module(module), cls)(model, model_modifier=ReplaceToLinear(), clone=True)
    score = CategoricalScore([int(v) for v in t])
    # seek_penultimate_conv_layer=False: otherwise tf-keras-vis moves from an activation layer such as
    # out_relu back to the nearest Conv (Conv_1), a different layer than the one asked for.
    kwargs = dict(penultimate_layer=layer, seek_penultimate_conv_layer=False)
    if method == "scorecam":
        kwargs.update(max_N=args.max_channels, batch_size=args.score_batch)

    def run():
        # Its Scorecam calls model.predict, whose progress bar would flood the report.
        with contextlib.redirect_stdout(io.StringIO()):
            return peer(score, x, **kwargs)

    return run, peer, score, kwargs


# ---------------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_interleaved(contenders: Dict[str, Callable[[], object]], repeats: int, log: Report):
    """One warm-up call each, then `repeats` rounds timing each contender once, in turn.

    Returns (first-call seconds, list of timed seconds, warm-up outputs) per contender.
    """
    first, outputs = {}, {}
    for name, fn in contenders.items():
        start = time.perf_counter()
        outputs[name] = fn()
        first[name] = time.perf_counter() - start
        log(f"    warm-up {name:<34s} {first[name]:8.2f} s")
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(timed(contenders[name]))
        rounds = ", ".join(f"{n} {times[n][-1] * 1e3:.0f}" for n in names)
        log(f"    round {r + 1}/{repeats}: {rounds} ms")
    return first, times, outputs


def agreement(ours_fn, peer_fn) -> float:
    """Pearson correlation of raw maps (no upsampling, no normalization), pooled over the batch."""
    a = np.asarray(ours_fn()).ravel().astype(np.float64)
    b = np.asarray(peer_fn()).ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def env_prefix() -> str:
    """The environment settings that change timings, as a command prefix (glibc malloc, threads, simulated
    devices, backend)."""
    names = sorted(k for k in os.environ if k.startswith(("MALLOC_", "TF_NUM_")) or k.endswith("_NUM_THREADS")
                   or k == "XLA_FLAGS")
    return "".join(f"{k}={os.environ[k]} " for k in names) + f"KERAS_BACKEND={BACKEND} "


def versions() -> str:
    """Keras, the backend (and tf-keras-vis on TensorFlow), for the report's header."""
    out = f"keras {keras.__version__}"
    if BACKEND == "tensorflow":
        import tensorflow as tf

        out += f", tensorflow {tf.__version__}"
        try:
            import tf_keras_vis

            out += f", tf-keras-vis {tf_keras_vis.__version__}"
        except ImportError:
            out += ", tf-keras-vis not installed"
    elif BACKEND == "jax":
        import jax

        out += f", jax {jax.__version__} ({jax.default_backend()})"
    elif BACKEND == "torch":
        import torch

        out += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return out


def fmt(v: Optional[float], digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def bench_model(key: str, args, log: Report) -> List[str]:
    app, layer = MODELS[key]
    keras.utils.set_random_seed(args.seed)
    if key in BUILDERS:
        model = BUILDERS[key]()
    else:
        model = getattr(keras.applications, app)(weights=None, input_shape=(args.size, args.size, 3))
    rng = np.random.default_rng(args.seed)
    shape = tuple(model.input_shape[1:])
    x = rng.uniform(-1.0, 1.0, (args.batch,) + shape).astype(np.float32)
    t = rng.integers(0, model.output_shape[-1], args.batch).astype(np.int32)
    log("", f"## {app} — layer `{layer}`, input {'x'.join(str(d) for d in shape)}, batch {args.batch}", "")
    log(f"    targets: {t.tolist()}")

    methods = args.methods
    # Two groups, each interleaved on its own: the gradient methods (which share one limit) and Score-CAM
    # (whose calls are 100x longer, so it may get fewer repeats with --score-repeats).
    groups: List[Dict[str, Callable[[], object]]] = [{}, {}]
    if any(m not in PERTURBATION_METHODS for m in methods):
        groups[0].update(limits(model, layer, x, t))
    peers = {}
    for m in methods:
        group = groups[1] if m in PERTURBATION_METHODS else groups[0]
        group[f"ours {m}"] = ours(m, model, layer, x, t, args)
        peer = tf_keras_vis(m, model, layer, x, t, args)
        if peer is not None:
            group[f"tf-keras-vis {m}"] = peer[0]
            peers[m] = peer
    if any(m in PERTURBATION_METHODS for m in methods):
        groups[1]["scorecam limit"] = scorecam_limit(model, x, t, args.max_channels, args.score_batch)
    limit_labels = list(groups[0])[: 1 if BACKEND == "tensorflow" else 2] if groups[0] else []

    first, times, outputs = {}, {}, {}
    for group, repeats in zip(groups, (args.repeats, args.score_repeats)):
        if group:
            f, t_, o_ = run_interleaved(group, repeats, log)
            first.update(f), times.update(t_), outputs.update(o_)
    med = {name: statistics.median(v) for name, v in times.items()}

    def paired(name: str, base: str) -> float:
        """The median over rounds of name's time / base's time in the same round: each round runs every
        contender back to back, so a slow moment of this shared machine weighs on both sides of a ratio."""
        return statistics.median(a / b for a, b in zip(times[name], times[base]))

    # Agreement with tf-keras-vis (outside timing). Gradient methods: raw maps at the layer's resolution
    # (no upsampling or normalization to differ on). Score-CAM: the warm-up calls' final heatmaps (a second
    # call would cost minutes).
    notes = []
    for m, (_, peer, score, kwargs) in peers.items():
        if m == "scorecam":
            r = agreement(lambda: outputs[f"ours {m}"], lambda: outputs[f"tf-keras-vis {m}"])
            what = "final heatmaps (upsampled, normalized)"
        else:
            raw_kwargs = dict(kwargs, expand_cam=False, normalize_cam=False)
            mine = kc.get_explainer(m, model, layer=layer)
            r = agreement(lambda: mine.explain(x, targets=t, upsample=False, normalize=False),
                          lambda: peer(score, x, **raw_kwargs))
            what = "raw maps at the layer's size"
        notes.append(f"    agreement with tf-keras-vis {m}: Pearson r = {r:.3f} ({what})")
    if "scorecam" in peers:
        # tf-keras-vis scores the union over the batch of each image's top-K channels, on every image.
        sub = keras.Model(model.input, model.get_layer(layer).output)
        acts = keras.ops.convert_to_numpy(sub(x, training=False))
        std = acts.std(axis=tuple(range(1, acts.ndim - 1)))
        union = np.unique(np.argsort(-std, axis=1)[:, : args.max_channels])
        notes.append(f"    tf-keras-vis Scorecam scores {union.size} channels (the union of each image's top "
                     f"{args.max_channels}) on all {args.batch} images = {union.size * args.batch} masked "
                     f"images; ours and the limit: {args.batch} x {args.max_channels} = "
                     f"{args.batch * args.max_channels}")
    log(*notes)

    if BACKEND == "tensorflow":
        header = ["method", "ours ms", "limit ms", "ours/limit", "tf-keras-vis ms",
                  "tf-keras-vis/ours",
                  "first call s (ours / limit / tf-keras-vis)"]
    else:
        header = ["method", "ours ms", "forward ms (lower)", "fwd+bwd to input ms (upper)", "ours/lower",
                  "ours/upper", "first call s (ours / lower / upper)"]
    rows = []
    verdicts = []
    for m in methods:
        o = med[f"ours {m}"] * 1e3
        peer = med.get(f"tf-keras-vis {m}")
        peer = None if peer is None else peer * 1e3
        f_ours = first[f"ours {m}"]
        bases = ["scorecam limit"] if m in PERTURBATION_METHODS else limit_labels
        lims = [med[b] * 1e3 for b in bases]
        first_lims = [first[b] for b in bases]
        ratios = [paired(f"ours {m}", b) for b in bases]
        speedup = None if peer is None else paired(f"tf-keras-vis {m}", f"ours {m}")
        label = f"{m} (K={args.max_channels}, chunk {args.score_batch})" if m in PERTURBATION_METHODS else m
        if BACKEND == "tensorflow":
            f_peer = first.get(f"tf-keras-vis {m}")
            rows.append([label, fmt(o), fmt(lims[0]), f"{ratios[0]:.2f}x", fmt(peer),
                         "–" if peer is None else f"{speedup:.1f}x",
                         " / ".join(fmt(v, 2) for v in [f_ours, first_lims[0], f_peer])])
        else:
            if m in PERTURBATION_METHODS:
                rows.append([label, fmt(o), fmt(lims[0]), "–", f"{ratios[0]:.2f}x", "–",
                             " / ".join(fmt(v, 2) for v in [f_ours, first_lims[0]])])
            else:
                rows.append([label, fmt(o), fmt(lims[0]), fmt(lims[1]), f"{ratios[0]:.2f}x",
                             f"{ratios[1]:.2f}x", " / ".join(fmt(v, 2) for v in [f_ours] + first_lims)])
        verdicts.extend(targets_for(m, ratios, speedup, app))
    log("", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        log("| " + " | ".join(row) + " |")
    log("", "Times are medians over the rounds (each round is in the log above); ratios are medians of the "
        "rounds' own ratios (the contenders of a round run back to back).")
    if BACKEND != "tensorflow":
        log("", "On JAX/PyTorch the gradient methods' limit lies between the two bounds; for a layer near "
            "the head (as here: only pooling + Dense follow it) it is close to the forward-only lower bound.",
            "On PyTorch every contender runs eagerly, as Keras' torch backend and keras-cam's torch seam do."
            if BACKEND == "torch" else "On JAX every contender is jax.jit-compiled.")
    log("")
    return verdicts


def targets_for(method: str, ratios: List[float], speedup: Optional[float], app: str) -> List[str]:
    """Verdicts from the paired ratios: ours / each limit, and tf-keras-vis / ours (`speedup`)."""
    out = []

    def line(ok: bool, text: str) -> str:
        return f"[{'PASS' if ok else 'MISS'}] {app} {text}"

    if method == "gradcam":
        ratio = ratios[0] if BACKEND == "tensorflow" else ratios[1]
        which = "the limit" if BACKEND == "tensorflow" else "the upper bound (fwd+bwd to input)"
        out.append(line(ratio <= 1.1, f"Grad-CAM <= 1.1x {which}: {ratio:.2f}x"))
        if BACKEND != "tensorflow":
            out.append(f"[info] {app} Grad-CAM vs the lower bound (forward only): {ratios[0]:.2f}x")
        if speedup is not None:
            out.append(line(speedup >= 5, f"Grad-CAM >= 5x faster than tf-keras-vis: {speedup:.1f}x"))
    if method == "scorecam":
        out.append(line(ratios[0] <= 1.2, f"Score-CAM <= 1.2x its limit (masked forwards): {ratios[0]:.2f}x"))
        if speedup is not None:
            out.append(line(speedup > 1, f"Score-CAM faster than tf-keras-vis Scorecam: {speedup:.1f}x"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mobilenetv2,resnet50", help=f"comma-separated from {list(MODELS)}")
    p.add_argument("--size", type=int, default=224, help="image height and width")
    p.add_argument("--batch", type=int, default=8, help="images per explained batch")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed rounds after the warm-up for the gradient methods (median reported)")
    p.add_argument("--score-repeats", type=int, default=3,
                   help="timed rounds for Score-CAM, whose calls take seconds to minutes (default 3)")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated: {ALL_METHODS} (default) or any other CAM method of "
                        "kc.available_methods(); ablationcam is measured against Score-CAM's limit")
    p.add_argument("--max-channels", type=int, default=64,
                   help="Score-CAM channels per image (K; tf-keras-vis max_N)")
    p.add_argument("--score-batch", type=int, default=32, help="Score-CAM masked images per forward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="also write the printed report to this file (Markdown)")
    args = p.parse_args(argv)
    args.models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    args.methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    for m in args.models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {list(MODELS)}")
    known = [m for m in kc.available_methods() if m not in ATTRIBUTIONS + ("cam",)]
    for m in args.methods:
        if m not in known:
            p.error(f"unknown method {m!r}; choose from {known} (attributions: bench_attributions.py)")

    log = Report()
    log(f"# keras-cam explainer benchmark — backend `{BACKEND}`", "",
        f"- date: {datetime.date.today().isoformat()}; machine: {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), no GPU; python {platform.python_version()}",
        f"- {versions()}, keras-cam {kc.__version__}",
        f"- settings: models {args.models}, {args.size}x{args.size}, batch {args.batch}, random weights "
        f"(weights=None), random images (seed {args.seed}), fixed random int targets; "
        f"methods {args.methods}; "
        f"Score-CAM K={args.max_channels} channels per image, {args.score_batch} masked images per forward; "
        f"{args.repeats} interleaved repeats ({args.score_repeats} for Score-CAM) after 1 warm-up call each, "
        f"medians; load average at start {load()}",
        f"- command: {env_prefix()}python benchmarks/bench_explainers.py {' '.join(sys.argv[1:])}")
    verdicts: List[str] = []
    total = time.perf_counter()
    for key in args.models:
        verdicts += bench_model(key, args, log)
        if args.save:  # after each model too, so a long run that is interrupted keeps what it measured
            save(args.save, log)
    log("## Targets (informational)", "")
    log(*[f"- {v}" for v in verdicts] or ["- (no target applies to the chosen methods)"])
    log("", f"Total benchmark time: {time.perf_counter() - total:.0f} s; load average at end {load()} "
        f"(other processes on this {os.cpu_count()}-core machine add noise; the interleaving spreads it "
        "evenly)")
    if args.save:
        save(args.save, log)
    return 0


def save(path: str, log: Report) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(log.buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
