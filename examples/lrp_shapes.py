"""LRP on the demo CNN: signed relevance beside Grad-CAM on held-out `make_shapes` images.

The demo's classifier (`kc.demo.build_demo_model`: four conv-BN-ReLU blocks and a CAMHead) is trained
briefly on `make_shapes`; then each held-out image is explained for its true class by Grad-CAM and by LRP
(`epsilon_plus_flat`: Flat on the first convolution, z+ on the others, epsilon on the head; BatchNormalization
folded into the convolutions). The example prints the validation accuracy and the pointing game of each map
against the true masks, and writes `lrp_shapes.png`: images, Grad-CAM overlays, and the signed LRP relevance
(`kc.overlay(..., colormap="bwr", signed=True)`: red for, blue against the class, zero transparent).

    python examples/lrp_shapes.py --out /tmp/lrp_shapes

Runs offline in a few minutes on two CPU cores.
"""
import argparse
import os

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

    images, labels, masks = kc.datasets.make_shapes(args.train + 96, size=48, seed=args.seed)
    model = kc.demo.build_demo_model((48, 48, 3), 3)
    kc.demo.train_demo_model(model, images[:args.train], labels[:args.train], epochs=args.epochs)
    x, y, m = images[args.train:], labels[args.train:], masks[args.train:]
    accuracy = float((np.argmax(model.predict(x, verbose=0), -1) == y).mean())
    print(f"validation accuracy {accuracy:.2f}")

    gradcam = kc.GradCAM(model)(x, targets=y)
    lrp = kc.LRP(model, composite="epsilon_plus_flat")
    signed = lrp.explain(x, targets=y, normalize=False)
    for name, maps in (("Grad-CAM", gradcam), ("LRP epsilon_plus_flat", signed)):
        print(f"pointing game {name}: {kc.metrics.pointing_game(maps, m):.2f}")

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
