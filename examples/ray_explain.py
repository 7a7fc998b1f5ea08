"""Grad-CAM for a folder of images on a Ray cluster: `ray.data.read_images` + `map_batches(Explainer)`.

Each Ray worker loads the saved .keras model once and explains its share of the batches
(`keras_cam.integrations.ray.Explainer`); the results (path, heatmap, class, score) are written as Parquet
files, with a grid of overlays. Without a folder, it writes synthetic shapes (`kc.datasets.make_shapes`, the
class in each file's name) and trains a small CNN on them first, in about a minute on 2 CPU cores.

    pip install "keras-cam[ray]"
    python examples/ray_explain.py --out /tmp/ray_cam                       # synthetic shapes
    python examples/ray_explain.py --images photos/ --model model.keras --method gradcam++ --out ray_cam

Writes `OUT/heatmaps/*.parquet` (read back with `ray.data.read_parquet` or pandas) and `OUT/overlays.png`.
"""
import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402

import keras_cam as kc  # noqa: E402
from keras_cam.demo.shapes import build_demo_model, train_demo_model  # noqa: E402
from keras_cam.integrations.ray import Explainer  # noqa: E402

CLASSES = ("circle", "square", "triangle")  # make_shapes' classes, in label order


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", help="a folder of images (default: synthetic shapes, under --out)")
    parser.add_argument("--model", help="a saved .keras model (default: train a small CNN on the shapes)")
    parser.add_argument("--method", default="gradcam", help="an explainer name (default: gradcam)")
    parser.add_argument("--n", type=int, default=64, help="synthetic images to explain (default: 64)")
    parser.add_argument("--workers", type=int, default=1, help="Ray workers, one model each (default: 1)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--out", default="ray_cam_out", help="output folder (default: ray_cam_out)")
    return parser.parse_args(argv)


def synthetic_folder(folder, n, size=48):
    """n shapes on clutter as PNGs named NNNN_<class>.png (the class name is the ground truth)."""
    images, labels, _ = kc.datasets.make_shapes(n, size=size, seed=1)
    for i, (image, label) in enumerate(zip(images, labels)):
        kc.save_image(os.path.join(folder, f"{i:04d}_{CLASSES[label]}.png"), image)
    return folder


def trained_model(path, size=48):
    """The demo's CNN with a CAMHead, trained briefly on fresh shapes and saved as .keras."""
    keras.utils.set_random_seed(0)
    images, labels, _ = kc.datasets.make_shapes(1500, size=size, seed=0)
    model = build_demo_model((size, size, 3), len(CLASSES))
    history = train_demo_model(model, images, labels, epochs=8, batch_size=32)
    print(f"trained: accuracy {history.history['accuracy'][-1]:.2f} on the training shapes")
    model.save(path)
    return path


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    folder = args.images or synthetic_folder(os.path.join(args.out, "images"), args.n)
    model = args.model or trained_model(os.path.join(args.out, "model.keras"))

    # One CPU per worker, and one more for reading the files: with every CPU held by a worker, no read task
    # could start. The workers import Keras themselves: give them this process's backend.
    ray.init(num_cpus=args.workers + 1, include_dashboard=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}})
    started = time.perf_counter()
    ds = ray.data.read_images(folder, include_paths=True)  # uint8 (H, W, 3) of any sizes: resized per worker
    results = ds.map_batches(Explainer, fn_constructor_kwargs={"model": model, "method": args.method},
                             batch_size=args.batch_size,
                             compute=ray.data.ActorPoolStrategy(size=args.workers)).materialize()
    results.drop_columns(["image"]).write_parquet(os.path.join(args.out, "heatmaps"))
    seconds = time.perf_counter() - started

    rows = sorted(results.take_all(), key=lambda row: row["path"])
    print(f"explained {len(rows)} images on {args.workers} Ray workers in {seconds:.1f} s "
          f"-> {os.path.join(args.out, 'heatmaps')}")
    named = [row for row in rows if os.path.basename(row["path"]).split("_")[-1][:-4] in CLASSES]
    if named:  # synthetic shapes: the explained (predicted) class against the one in the file's name
        right = sum(CLASSES[row["target"]] in os.path.basename(row["path"]) for row in named)
        print(f"predicted class right for {right} of {len(named)} images")
    overlays = [kc.overlay(row["image"], row["heatmap"]) for row in rows[:16]]
    print("overlays:", kc.save_image(os.path.join(args.out, "overlays.png"), kc.image_grid(overlays, cols=8)))
    ray.shutdown()


if __name__ == "__main__":
    main()
