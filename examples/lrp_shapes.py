"""LRP on the demo CNN: signed relevance beside Grad-CAM on held-out `make_shapes` images.

The demo's classifier (`kc.demo.build_demo_model`: four conv-BN-ReLU blocks and a CAMHead) is trained
briefly on `make_shapes`; then each held-out image is explained for its true class by Grad-CAM and by LRP
(`epsilon_plus_flat`: Flat on the first convolution, z+ on the others, epsilon on the head; BatchNormalization
folded into the convolutions). The example prints the validation accuracy and, for Grad-CAM, every LRP
composite and random maps, the pointing games, deletion and insertion AUCs and ROAD scores against the true
masks (`lrp_shapes.md`), and writes `lrp_shapes.png`: images, Grad-CAM overlays, and the signed LRP relevance
(`kc.overlay(..., colormap="bwr", signed=True)`: red for, blue against the class, zero transparent). The
README's picture is the demo's own (`keras-cam demo` writes `lrp.png` the same way).

    python examples/lrp_shapes.py --out /tmp/lrp_shapes

Runs offline in a few minutes on two CPU cores.
"""
import argparse
import os

import keras
import numpy as np

import keras_cam as kc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="lrp_out")
    p.add_argument("--train", type=int, default=1200)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--show", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    keras.utils.set_random_seed(args.seed)
    images, labels, masks = kc.datasets.make_shapes(args.train + 96, size=48, seed=args.seed)
    model = kc.demo.build_demo_model((48, 48, 3), 3)
    kc.demo.train_demo_model(model, images[:args.train], labels[:args.train], epochs=args.epochs)
    x, y, m = images[args.train:], labels[args.train:], masks[args.train:]
    accuracy = float((np.argmax(model.predict(x, verbose=0), -1) == y).mean())
    print(f"validation accuracy {accuracy:.2f}")

    gradcam = kc.GradCAM(model)(x, targets=y)
    signed = kc.LRP(model, composite="epsilon_plus_flat").explain(x, targets=y, normalize=False)
    # Faithfulness and localization of every composite beside Grad-CAM and random maps (maps in [0, 1]).
    maps = {"gradcam": gradcam}
    for name in kc.lrp.available_composites():
        box = {"low": 0.0, "high": 1.0} if name == "epsilon_gamma_box" else {}
        maps[f"lrp {name}"] = kc.LRP(model, composite=kc.lrp.composite(name, **box))(x, targets=y)
    maps["random"] = np.random.default_rng(args.seed).random(gradcam.shape).astype(np.float32)
    lines = ["| maps | pointing game | energy pointing game | deletion AUC (lower better) | insertion AUC | "
             "ROAD MoRF mean (lower better) | ROAD LeRF mean |", "|---|---|---|---|---|---|---|"]
    for name, h in maps.items():
        road = kc.metrics.road(model, x, h, targets=y)
        lines.append(f"| {name} | {kc.metrics.pointing_game(h, m):.2f} | {kc.metrics.energy_pointing_game(h, m):.2f} "
                     f"| {kc.metrics.deletion_auc(model, x, h, targets=y):.3f} "
                     f"| {kc.metrics.insertion_auc(model, x, h, targets=y):.3f} "
                     f"| {np.mean(road.morf):.3f} | {np.mean(road.lerf):.3f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "lrp_shapes.md"), "w") as fh:
        fh.write(f"Held-out make_shapes images ({len(x)}), validation accuracy {accuracy:.2f}, true classes.\n\n"
                 + table + "\n")

    rows = []
    for i in range(args.show):
        # A few pixels carry most relevance: shown up to the 99th percentile of |relevance| (clipped beyond).
        shown = np.clip(signed[i] / np.percentile(np.abs(signed[i]), 99), -1.0, 1.0)
        rows += [np.round(x[i] * 255).astype(np.uint8), kc.overlay(x[i], gradcam[i], alpha=0.5),
                 kc.overlay(x[i], shown, alpha=1.0, colormap="bwr", signed=True)]
    grid = kc.image_grid([np.kron(r, np.ones((3, 3, 1), np.uint8)) for r in rows], cols=3 * min(args.show, 3))
    path = os.path.join(args.out, "lrp_shapes.png")
    kc.save_image(path, grid)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
