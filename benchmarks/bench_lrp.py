"""Cost of LRP against the model's own compiled forward + backward, and against zennit, side by side in one run.

- limit: one compiled forward + backward to the input of the batch (`bench_attributions.input_gradient`):
  what LRP-0/epsilon cannot avoid. The composites with ZPlus, Gamma or AlphaBeta rules run 2 to 4 modified
  copies of each convolution (forward and backward), as zennit does, so their floor is higher.
- ours: `kc.LRP(model, composite=...).relevance(x, targets=t, batch_size=N)` (numpy relevance, one compiled
  call per batch), for the composites named with --composites.
- zennit (demo CNN only): `zennit.attribution.Gradient` with the same composite (and its BatchNorm canonizer)
  on a pure-PyTorch twin of the Keras model with the same weights, eager, on the same CPU threads.

Models: the demo's CNN (`kc.demo.build_demo_model`: four conv-BN-ReLU blocks, a CAMHead),
`keras.applications` models (weights=None; MobileNetV2 and ResNet50 by default, `--app`) and a keras-hub ViT
(`--vit`, AttnLRP's rules on its attention and LayerNormalization layers). Each contender gets one warm-up call, then rounds that time every
contender once, in turn; medians are reported.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/bench_lrp.py --save benchmarks/results/lrp_tensorflow.md
    KERAS_BACKEND=torch python benchmarks/bench_lrp.py --app-size 64 --save benchmarks/results/lrp_torch.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import types
from typing import Callable, Dict

import keras
import numpy as np

import keras_cam as kc
from bench_attributions import input_gradient
from bench_explainers import BACKEND, Report, env_prefix, load, run_interleaved, save, versions


def torch_twin(model):
    """The demo CNN as torch modules with the same weights (NCHW), or None when torch or zennit is missing."""
    try:
        import torch
    except ImportError:
        return None
    nn, modules, channels = torch.nn, [], model.input_shape[-1]
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.Conv2D):
            conv = nn.Conv2d(channels, layer.filters, layer.kernel_size, padding=layer.kernel_size[0] // 2,
                             bias=layer.use_bias)
            conv.weight.data = torch.tensor(weights[0].transpose(3, 2, 0, 1).copy())
            if layer.use_bias:
                conv.bias.data = torch.tensor(weights[1])
            modules.append(conv)
            channels = layer.filters
        elif isinstance(layer, keras.layers.BatchNormalization):
            bn = nn.BatchNorm2d(channels, eps=layer.epsilon)
            for name, value in zip(("weight", "bias", "running_mean", "running_var"), weights):
                getattr(bn, name).data = torch.tensor(value)
            modules.append(bn)
        elif isinstance(layer, keras.layers.Activation):
            modules.append(nn.ReLU())
        elif isinstance(layer, keras.layers.MaxPooling2D):
            modules.append(nn.MaxPool2d(2))
        elif isinstance(layer, kc.CAMHead):
            dense = nn.Linear(channels, layer.num_classes)
            dense.weight.data = torch.tensor(weights[0].T.copy())
            dense.bias.data = torch.tensor(weights[1])
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), dense]
    return nn.Sequential(*modules).eval()


def zennit_contender(twin, name: str, x: np.ndarray, t: np.ndarray):
    import torch

    try:
        import torchvision  # noqa: F401  (zennit imports it; a CPU-only torch may have none that loads)
    except Exception:
        for key in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
            del sys.modules[key]
        stub = types.ModuleType("torchvision")
        stub.models = types.ModuleType("torchvision.models")
        stub.models.resnet = types.ModuleType("torchvision.models.resnet")
        stub.models.resnet.Bottleneck = stub.models.resnet.BasicBlock = type("Block", (), {})
        sys.modules.update({"torchvision": stub, "torchvision.models": stub.models,
                            "torchvision.models.resnet": stub.models.resnet})
    import zennit.composites as zc
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.rules import Epsilon
    from zennit.types import Convolution

    canon = [SequentialMergeBatchNorm()]
    if name == "epsilon":
        composite = zc.LayerMapComposite(layer_map=zc.layer_map_base() + [
            (Convolution, Epsilon()), (torch.nn.Linear, Epsilon())], canonizers=canon)
    elif name == "epsilon_gamma_box":
        composite = zc.EpsilonGammaBox(low=-1.0, high=1.0, canonizers=canon)
    else:
        composite = zc.COMPOSITES[name](canonizers=canon)
    inputs = torch.tensor(np.moveaxis(x, -1, 1).copy())
    onehot = torch.eye(int(twin[-1].out_features))[torch.as_tensor(t, dtype=torch.long)]

    def run():
        with Gradient(model=twin, composite=composite) as attributor:
            _, relevance = attributor(inputs, lambda out: out * onehot)
        return relevance.numpy()

    return run


def keras_vit(blocks: int, size: int):
    """A keras-hub ViT classifier (16-pixel patches, width 192, 3 heads: ViT-Tiny's shape), or None without
    keras-hub."""
    try:
        import keras_hub
    except ImportError:
        return None
    backbone = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=16, num_layers=blocks,
                                            num_heads=3, hidden_dim=192, mlp_dim=768)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10, preprocessor=None)


def bench(label: str, model, x: np.ndarray, t: np.ndarray, composites, args, log: Report, twin=None):
    grad = input_gradient(model)
    contenders: Dict[str, Callable[[], object]] = {"fwd+bwd": lambda: grad(x, t)}
    for name in composites:
        box = {"low": -1.0, "high": 1.0} if name == "epsilon_gamma_box" else {}
        lrp = kc.LRP(model, composite=kc.lrp.composite(name, **box))
        contenders[f"lrp {name}"] = (lambda e: lambda: e.relevance(x, targets=t, batch_size=len(x)))(lrp)
        if twin is not None:
            contenders[f"zennit {name}"] = zennit_contender(twin, name, x, t)
    log(f"## {label}: {x.shape[1]}x{x.shape[2]}, batch {len(x)}", "")
    first, times, outputs = run_interleaved(contenders, args.repeats, log)
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    header = ["composite", "ours ms", "ours / fwd+bwd"] + (["zennit ms", "zennit / ours", "max |ours - zennit|"]
                                                            if twin is not None else [])
    log("", f"fwd+bwd (the model's own compiled forward + backward to the input): {med['fwd+bwd']:.1f} ms", "",
        "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|")
    for name in composites:
        ours = med[f"lrp {name}"]
        row = [name, f"{ours:.1f}", f"{ours / med['fwd+bwd']:.2f}x"]
        if twin is not None:
            z = med[f"zennit {name}"]
            a, b = outputs[f"lrp {name}"], np.moveaxis(outputs[f"zennit {name}"], 1, -1)
            row += [f"{z:.1f}", f"{z / ours:.2f}x", f"{np.abs(a - b).max() / np.abs(b).max():.1e} (rel.)"]
        log("| " + " | ".join(row) + " |")
    log("")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--app", default="MobileNetV2,ResNet50",
                   help="keras.applications models (weights=None), comma-separated")
    p.add_argument("--app-size", type=int, default=96, help="its image height and width")
    p.add_argument("--app-batch", type=int, default=4)
    p.add_argument("--demo-batch", type=int, default=16)
    p.add_argument("--vit", type=int, default=4, metavar="LAYERS",
                   help="also a keras-hub ViT of this many blocks (random weights, --app-size images, 16-pixel "
                        "patches, AttnLRP); 0 to skip")
    p.add_argument("--composites", default="epsilon,epsilon_plus_flat,epsilon_gamma_box")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (median reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="also write the printed report to this file (Markdown)")
    args = p.parse_args(argv)
    composites = args.composites.split(",")

    log = Report()
    log(f"# keras-cam LRP benchmark — backend `{BACKEND}`", "",
        f"- date: {datetime.date.today().isoformat()}; machine: {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), no GPU; python {platform.python_version()}",
        f"- {versions()}, keras-cam {kc.__version__}",
        f"- settings: random images in [-1, 1] (seed {args.seed}), random targets; {args.repeats} interleaved "
        f"repeats after 1 warm-up call each, medians; load average at start {load()}",
        f"- command: {env_prefix()}python benchmarks/bench_lrp.py {' '.join(sys.argv[1:])}", "")
    total = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    keras.utils.set_random_seed(args.seed)
    demo = kc.demo.build_demo_model((48, 48, 3), 3)
    for layer in demo.layers:  # non-trivial BatchNorm statistics, so the canonizer has work to do
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
    x = rng.uniform(-1, 1, (args.demo_batch, 48, 48, 3)).astype(np.float32)
    t = rng.integers(0, 3, args.demo_batch).astype(np.int32)
    bench("demo CNN", demo, x, t, composites, args, log, twin=torch_twin(demo))

    for name in filter(None, args.app.split(",")):
        app = getattr(keras.applications, name)(weights=None, input_shape=(args.app_size, args.app_size, 3))
        x = rng.uniform(-1, 1, (args.app_batch, args.app_size, args.app_size, 3)).astype(np.float32)
        t = rng.integers(0, app.output_shape[-1], args.app_batch).astype(np.int32)
        bench(f"{name} (weights=None)", app, x, t, composites, args, log)

    if args.vit:
        vit = keras_vit(args.vit, args.app_size)
        if vit is not None:
            x = rng.uniform(-1, 1, (args.app_batch, args.app_size, args.app_size, 3)).astype(np.float32)
            t = rng.integers(0, 10, args.app_batch).astype(np.int32)
            bench(f"keras-hub ViT, {args.vit} blocks (random weights)", vit, x, t, composites, args, log)

    log("`ours / fwd+bwd`: LRP's cost as a multiple of the model's own compiled forward + backward to the "
        "input. `zennit / ours`: > 1 means keras-cam is faster. zennit runs eagerly in PyTorch on the same CPU.",
        "", f"Total benchmark time: {time.perf_counter() - total:.0f} s; load average at end {load()}")
    if args.save:
        save(args.save, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
