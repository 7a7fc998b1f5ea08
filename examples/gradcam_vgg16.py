"""Grad-CAM on VGG16: where does the network see an "African elephant"? (the classic recipe, in keras-cam).

The classic recipe of "Deep Learning with Python": VGG16 with ImageNet weights, an image resized to 224x224 and
run through `vgg16.preprocess_input`, then Grad-CAM for class 386 ("African elephant") at the last
convolutional layer `block5_conv3`, and an OpenCV JET heatmap blended over the photo at 0.4. Step by step:

    the recipe (TF1 / keras.backend)                    keras-cam
    ------------------------------------------------    ----------------------------------------------------
    grads = K.gradients(model.output[:, 386],           kc.GradCAM(model, layer="block5_conv3") captures the
                        last_conv_layer.output)[0]      layer's output by intercepting its call and takes
                                                        d score / d activations on any backend (no session,
                                                        no K.function, no sub-model)
    pooled_grads = K.mean(grads, axis=(0, 1, 2))        the channel weights: GradCAM.get_cam_weights = mean of
                                                        the gradients over (h, w), per image
    conv_output[:, :, i] *= pooled_grads[i];            the map: ReLU(sum_k w_k A_k) (mean or sum over
    heatmap = np.mean(conv_output, axis=-1)             channels differ only by the factor 1/512, which
                                                        the normalization removes)
    heatmap = np.maximum(heatmap, 0); heatmap /= max    normalize=True: per-image min-max to [0, 1]
    cv2.resize(heatmap, img size); applyColorMap(JET);  kc.overlay(image, heatmap, alpha=0.4, colormap="jet"):
    heatmap * 0.4 + img; cv2.imwrite(...)               the same resize and JET map, blended as a convex mix
                                                        0.4 * heat + 0.6 * image (the recipe's `heat*0.4 + img`
                                                        saturates bright pixels); kc.save_image writes it

One difference on purpose: the recipe differentiates the softmax probability of class 386; keras-cam scores
the logit (the softmax is skipped for the duration of the call, the model is left untouched), which does
not saturate for confident predictions. `--probabilities` reproduces the recipe's choice.

Nothing is downloaded here. Give the ImageNet weights as a file (Keras' own
`vgg16_weights_tf_dim_ordering_tf_kernels.h5`, with the classifier top) to get a meaningful heatmap:

    python examples/gradcam_vgg16.py --weights vgg16_weights_tf_dim_ordering_tf_kernels.h5 \
        --image creative_commons_elephant.jpg --out elephant_cam.jpg

Without `--weights` the network has random weights: the heatmap is then meaningless, but every step of the
pipeline is the same. Without `--image` a synthetic picture from `kc.datasets.make_shapes` is used.
"""
import argparse
import os
import sys

import cv2
import keras
import numpy as np

import keras_cam as kc

AFRICAN_ELEPHANT = 386


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None,
                        help="VGG16 weights file with the classifier top (e.g. "
                             "vgg16_weights_tf_dim_ordering_tf_kernels.h5); default: random weights")
    parser.add_argument("--image", default=None, help="image file (default: a synthetic make_shapes picture)")
    parser.add_argument("--class-index", type=int, default=AFRICAN_ELEPHANT,
                        help=f"ImageNet class to explain (default {AFRICAN_ELEPHANT}, 'African elephant')")
    parser.add_argument("--layer", default="block5_conv3", help="layer to explain (default: block5_conv3)")
    parser.add_argument("--alpha", type=float, default=0.4,
                        help="heatmap strength in the overlay (default 0.4)")
    parser.add_argument("--probabilities", action="store_true",
                        help="differentiate the softmax probability, as the recipe does (default: the logit)")
    parser.add_argument("--out", default="elephant_cam.jpg", help="output image (.jpg or .png)")
    return parser.parse_args(argv)


def load_image(path):
    """(picture to draw on: uint8 RGB at its own size, model input: preprocessed (1, 224, 224, 3))."""
    if path is None:
        images, _, _ = kc.datasets.make_shapes(1, size=224)
        picture = np.round(images[0] * 255.0).astype(np.uint8)
    else:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"Cannot read {path!r} as an image.")
        picture = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    resized = cv2.resize(picture, (224, 224), interpolation=cv2.INTER_AREA)
    # preprocess_input expects RGB in 0..255; it converts to BGR and subtracts the ImageNet means (in place,
    # hence the copy into a fresh float array).
    x = keras.applications.vgg16.preprocess_input(resized.astype(np.float32)[None])
    return picture, x


def main(argv=None):
    args = parse_args(argv)
    if args.weights is not None and not os.path.isfile(args.weights):
        raise SystemExit(f"--weights {args.weights!r} is not a file. Nothing is downloaded here: give the "
                         "path of a local VGG16 weights file (with the classifier top).")
    if args.weights is None:
        print("NOTE: no --weights given, so VGG16 has RANDOM weights: the heatmap below means nothing about "
              "elephants. The pipeline (gradients, weights, map, overlay) is exactly the one used with "
              "ImageNet weights; pass --weights PATH to a VGG16 weights file for a meaningful picture.")
    model = keras.applications.VGG16(weights=args.weights)

    picture, x = load_image(args.image)
    explainer = kc.GradCAM(model, layer=args.layer, use_logits=not args.probabilities)
    # upsample=False keeps the 14x14 map of block5_conv3; kc.overlay resizes it to the picture, as the recipe's
    # cv2.resize does, whatever the picture's own size.
    explanation = explainer.compute(x, targets=args.class_index, upsample=False)
    heatmap = explanation.heatmaps[0]

    probabilities = keras.ops.convert_to_numpy(model(x, training=False))[0]
    top = np.argsort(-probabilities)[:5]
    score_name = "probability" if args.probabilities else "logit"
    print(f"Explained class {args.class_index} at layer {args.layer} "
          f"(map {heatmap.shape[0]}x{heatmap.shape[1]}); its {score_name}: {explanation.scores[0]:.4g}, "
          f"probability {probabilities[args.class_index]:.4g}")
    print("Top-5 classes: " + ", ".join(f"{i} ({probabilities[i]:.3f})" for i in top))
    if heatmap.max() == 0:
        print("The heatmap is all zero: no location raises this class's score at this layer.")

    path = kc.save_image(args.out, kc.overlay(picture, heatmap, alpha=args.alpha, colormap="jet"))
    print(f"Wrote {path} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
