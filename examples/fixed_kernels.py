"""Fixed kernels in a Conv2D, then ReLU, as feature extraction ("filter, then detect").

The four kernels of the classic exercise (edge detect, bottom sobel, emboss, sharpen) are set as the weights
of one `Conv2D(4, 3, padding="same", use_bias=False)` followed by a ReLU, and applied to a grayscale
`make_shapes` image. Writes to `--out`:

- `kernels.png`: the kernels (`kc.kernel_grid`; mid-grey is 0, bright positive, dark negative),
- `image.png`: the input image,
- `feature_maps.png`: the feature maps after the convolution (top row) and after the ReLU (bottom row),
  each channel normalized on its own (as `plt.imshow` does) (`kc.feature_map_grid`).

It also prints the exercise's numbers: a 6x6 image with a vertical and a horizontal line, the
2x2 kernel [[1, -1], [1, -1]] with "valid" padding, before and after ReLU.

    python examples/fixed_kernels.py --out /tmp/fixed_kernels
"""
import argparse
import os

import keras
import numpy as np

import keras_cam as kc
from keras_cam import feature_map_grid, feature_maps, kernel_grid

# learntools.computer_vision.visiontools: edge, bottom_sobel, emboss, sharpen
KERNELS = {
    "edge detect": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    "bottom sobel": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
}


def conv_relu(kernels, size=None, padding="same"):
    """Conv2D (fixed kernels, no bias) named "conv", then ReLU named "relu", on 1-channel images."""
    kernels = np.asarray(kernels, np.float32)  # (K, kh, kw)
    model = keras.Sequential([
        keras.Input((size, size, 1)),
        keras.layers.Conv2D(len(kernels), kernels.shape[1:], padding=padding, use_bias=False, name="conv"),
        keras.layers.Activation("relu", name="relu"),
    ])
    model.get_layer("conv").set_weights([np.transpose(kernels, (1, 2, 0))[:, :, None, :]])
    return model


def numerical_exercise():
    image = np.zeros((6, 6), np.float32)
    image[:, 1] = 1
    image[4, 3:] = 1
    model = conv_relu([[[1, -1], [1, -1]]], padding="valid")
    x = image[None, :, :, None]
    print("image:\n", image.astype(int))
    print("after the convolution:\n", feature_maps(model, "conv", x)[0, :, :, 0].astype(int))
    print("after ReLU:\n", feature_maps(model, "relu", x)[0, :, :, 0].astype(int))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="fixed_kernels_out", help="output directory")
    parser.add_argument("--size", type=int, default=128, help="image size")
    parser.add_argument("--seed", type=int, default=3, help="make_shapes seed")
    args = parser.parse_args(argv)

    images, _, _ = kc.datasets.make_shapes(1, size=args.size, seed=args.seed)
    # One channel, as decode_jpeg(channels=1) gives: ITU-R 601 luma.
    grey = images[..., :1] * 0.299 + images[..., 1:2] * 0.587 + images[..., 2:] * 0.114
    model = conv_relu(list(KERNELS.values()))
    names = list(KERNELS)

    paths = [kc.save_image(os.path.join(args.out, "kernels.png"),
                           kernel_grid(model.get_layer("conv"), cols=4, scale=24, margin=6, labels=names))]
    paths.append(kc.save_image(os.path.join(args.out, "image.png"), grey[0, :, :, 0]))
    rows = [feature_map_grid(feature_maps(model, layer, grey)[0], cols=4, margin=6, labels=names)
            for layer in ("conv", "relu")]
    mosaic = kc.image_grid(rows, cols=1, margin=12)  # top: after the convolution, bottom: after ReLU
    paths.append(kc.save_image(os.path.join(args.out, "feature_maps.png"), mosaic))
    print("wrote", ", ".join(str(p) for p in paths))
    numerical_exercise()


if __name__ == "__main__":
    main()
