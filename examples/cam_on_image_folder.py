"""Class activation maps for an image folder: backbone + CAMHead, trained, then CAM overlays.

The recipe of "Learning Deep Features for Discriminative Localization" (Zhou et al. 2016), as in the classic
flowers walkthrough: a convolutional backbone without its top, global average pooling and one dense
layer (`kc.CAMHead`), trained on the classes; the CAM of class c is sum_k w_k^c f_k(x, y) from the dense
weights w and the last feature map f.

    # a folder with one subfolder per class (e.g. flower_photos/daisy/*.jpg, flower_photos/roses/*.jpg ...)
    python examples/cam_on_image_folder.py --data flower_photos --epochs 10 --size 160 --out flowers_cam

    # pretrained weights from a local file (no download happens here); the backbone is then frozen
    python examples/cam_on_image_folder.py --data flower_photos --backbone vgg16 \
        --weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 --feature-layer block5_conv3

    # no folder: synthetic shapes with ground-truth masks (also scores the CAMs with the pointing game)
    python examples/cam_on_image_folder.py --epochs 1 --out /tmp/cam_example

Writes `cams.png` (a grid of overlays, titled "true/predicted"), one `cam_NNN_<class>.png` per shown image,
and prints the validation accuracy.
"""
import argparse
import os
import sys
import time

import keras
import numpy as np

import keras_cam as kc

BACKBONES = {
    # name -> (constructor, keyword arguments); all without their classifier top.
    "mobilenetv2": (keras.applications.MobileNetV2, {"alpha": 0.35}),
    "vgg16": (keras.applications.VGG16, {}),
    "resnet50": (keras.applications.ResNet50, {}),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="image folder, one subfolder per class (default: synthetic shapes)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="mobilenetv2")
    parser.add_argument("--weights", default=None,
                        help="path to backbone weights (.h5/.weights.h5, without top); default: random init")
    parser.add_argument("--feature-layer", default=None,
                        help="put the CAMHead on this backbone layer instead of its last output "
                             "(finer maps, e.g. block_13_expand_relu for MobileNetV2)")
    parser.add_argument("--fine-tune", action="store_true", help="also train pretrained backbone weights")
    parser.add_argument("--size", type=int, default=96, help="image height and width (default: 96)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-images", type=int, default=16, help="overlays to write (default: 16)")
    parser.add_argument("--out", default="cam_out")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_folder(path, size, batch_size, seed):
    """Train/validation datasets of (images in [0, 1], int labels) and the class names."""
    if not os.path.isdir(path):
        raise ValueError(f"--data {path!r} is not a folder; pass a folder with one subfolder per class.")
    train, val = keras.utils.image_dataset_from_directory(
        path, image_size=(size, size), batch_size=batch_size, validation_split=0.2, subset="both",
        seed=seed, label_mode="int",
    )
    class_names = list(train.class_names)
    # The CAM overlays want the images as the model sees them, so scale in the pipeline, not in the model.
    return train.map(to_unit_range), val.map(to_unit_range), class_names


def to_unit_range(images, labels):
    return images / 255.0, labels


def build_model(args, num_classes):
    constructor, kwargs = BACKBONES[args.backbone]
    backbone = constructor(weights=args.weights, include_top=False, input_shape=(args.size, args.size, 3),
                           **kwargs)
    if args.weights and not args.fine_tune:
        backbone.trainable = False  # as in the CAM recipe: train only the head on top of pretrained features
    model = kc.attach_cam_head(backbone, num_classes, feature_layer=args.feature_layer)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    masks = None
    if args.data:
        train, val, class_names = load_folder(args.data, args.size, args.batch_size, args.seed)
        model = build_model(args, len(class_names))
        # shuffle=False: image_dataset_from_directory already reshuffles the files every epoch.
        model.fit(train, validation_data=val, epochs=args.epochs, shuffle=False, verbose=2)
        images, labels = [], []
        for x, y in val:  # enough validation images for the overlays
            images.append(np.asarray(x))
            labels.append(np.asarray(y))
            if sum(len(b) for b in images) >= args.n_images:
                break
        images, labels = np.concatenate(images)[: args.n_images], np.concatenate(labels)[: args.n_images]
        accuracy = model.evaluate(val, verbose=0, return_dict=True)["accuracy"]
    else:
        class_names = ["circle", "square", "triangle"]
        x, y, m = kc.datasets.make_shapes(600, size=args.size, seed=args.seed)
        split = 480
        model = build_model(args, len(class_names))
        model.fit(x[:split], y[:split], validation_data=(x[split:], y[split:]), epochs=args.epochs,
                  batch_size=args.batch_size, verbose=2)
        accuracy = model.evaluate(x[split:], y[split:], verbose=0, return_dict=True)["accuracy"]
        images, labels, masks = x[split:], y[split:], m[split:]

    predicted = np.argmax(keras.ops.convert_to_numpy(model.predict(images, verbose=0)), axis=-1)
    cams = kc.class_activation_maps(model, images)  # predicted class, (N, size, size) in [0, 1]
    print(f"validation accuracy: {accuracy:.2f}")
    if masks is not None:
        print(f"pointing game: {kc.metrics.pointing_game(cams, masks):.2f} (chance {np.mean(masks):.2f})")

    os.makedirs(args.out, exist_ok=True)
    n = min(args.n_images, len(images))
    overlays = [kc.overlay(images[i], cams[i]) for i in range(n)]
    titles = [f"{class_names[labels[i]]}/{class_names[predicted[i]]}" for i in range(n)]
    for i, (tile, title) in enumerate(zip(overlays, titles)):
        kc.save_image(os.path.join(args.out, f"cam_{i:03d}_{class_names[predicted[i]]}.png"), tile)
    kc.save_image(os.path.join(args.out, "cams.png"), kc.image_grid(np.stack(overlays), labels=titles))
    print(f"wrote {n} overlays and cams.png to {args.out}/ in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
