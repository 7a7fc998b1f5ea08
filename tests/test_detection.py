"""Detection targets and dense-prediction models (keras-hub detectors and segmenters, random weights).

Oracles: a numpy decoding of the raw outputs (anchors + center_xywh deltas, relative cxcywh boxes), numpy IoU
matching and summing; Grad-CAM from the layer's activations and gradients of a hand-written score.
"""
import contextlib

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import backend as seam

keras_hub = pytest.importorskip("keras_hub")

SIZE = 64


def resnet(filters=(64, 16, 16, 16)) -> keras.Model:
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=list(filters),
        stackwise_num_blocks=[1] * len(filters), stackwise_num_strides=[1] + [2] * (len(filters) - 1),
        block_type="basic_block", image_shape=(SIZE, SIZE, 3))


def retinanet() -> keras.Model:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=resnet(), min_level=3, max_level=4, use_p5=False,
                                                  image_shape=(SIZE, SIZE, 3))
    return keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=3, pre_logits_num_conv_layers=1)


@contextlib.contextmanager
def numpy_initializers(seed: int = 0):
    """Random initial weights drawn by numpy while models are built. JAX compiles its random normal and
    uniform once per weight shape: about 90 XLA compilations, a minute of a D-FINE's build on two CPU cores
    and most of its test's time; numpy draws the same distributions without compiling (on every backend,
    so the model is the same everywhere)."""
    from keras.src import backend as native

    rng, module = np.random.default_rng(seed), native.random
    saved = {name: getattr(module, name) for name in ("normal", "uniform", "truncated_normal")}

    def tensor(values, dtype):
        return keras.ops.convert_to_tensor(values.astype(dtype or keras.config.floatx()))

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return tensor(rng.normal(mean, stddev, shape), dtype)

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return tensor(rng.uniform(minval, maxval, shape), dtype)

    def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        z = rng.normal(0.0, 1.0, shape)
        while (far := np.abs(z) > 2).any():  # redrawn beyond two standard deviations, as Keras does
            z[far] = rng.normal(0.0, 1.0, int(far.sum()))
        return tensor(z * stddev + mean, dtype)

    module.normal, module.uniform, module.truncated_normal = normal, uniform, truncated_normal
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def compiled_outputs(model, x):
    """The model's raw outputs from one compiled forward pass (eager JAX compiles op by op: minutes here)."""
    forward = seam.get().compile(lambda t: model(t, training=False), model)
    return forward(keras.ops.convert_to_tensor(x))


def dfine() -> keras.Model:
    with numpy_initializers():
        return _dfine()


def _dfine() -> keras.Model:
    keras.utils.set_random_seed(0)
    hg = keras_hub.models.HGNetV2Backbone(
        stem_channels=[3, 8, 8], stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False], depths=[1, 1],
        hidden_sizes=[16, 32], embedding_size=8, use_learnable_affine_block=False, hidden_act="relu",
        image_shape=(SIZE, SIZE, 3), out_features=["stage1", "stage2"])
    backbone = keras_hub.models.DFineBackbone(
        backbone=hg, decoder_in_channels=[16, 16], encoder_hidden_dim=16, num_denoising=0, num_labels=3,
        hidden_dim=16, learn_initial_query=False, num_queries=10, anchor_image_size=(SIZE, SIZE),
        feat_strides=[8, 16], num_feature_levels=2, encoder_in_channels=[16, 32], encode_proj_layers=[1],
        num_attention_heads=2, encoder_ffn_dim=16, num_encoder_layers=1, hidden_expansion=0.34,
        depth_multiplier=0.5, eval_idx=-1, num_decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16,
        decoder_n_points=[2, 2], lqe_hidden_dim=8, num_lqe_layers=1, out_features=["stage1", "stage2"],
        image_shape=(SIZE, SIZE, 3), seed=0)
    return keras_hub.models.DFineObjectDetector(backbone=backbone, num_classes=3)


def images(n=2, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3)).astype("float32")


def numpy_iou(a, b):
    """IoU of boxes a (4,) against b (A, 4), x0, y0, x1, y1."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def numpy_retinanet_boxes(model, outputs):
    """RetinaNet's decoding by hand: anchors (yxyx) from the model's generator, center_xywh deltas."""
    anchors = model.anchor_generator(np.zeros((1, SIZE, SIZE, 3), np.float32))
    a = np.concatenate([keras.ops.convert_to_numpy(v) for v in anchors.values()])
    assert model.anchor_generator.bounding_box_format == "yxyx"
    a = a[:, [1, 0, 3, 2]]  # -> x0, y0, x1, y1
    d = keras.ops.convert_to_numpy(outputs["bbox_regression"]).astype(np.float64)
    wh, c = a[:, 2:] - a[:, :2], (a[:, :2] + a[:, 2:]) / 2
    centre, size = d[..., :2] * wh + c, np.exp(d[..., 2:]) * wh
    return np.concatenate([centre - size / 2, centre + size / 2], -1), \
        keras.ops.convert_to_numpy(outputs["cls_logits"]).astype(np.float64)


def numpy_dfine_boxes(outputs):
    rel = keras.ops.convert_to_numpy(outputs["pred_boxes"]).astype(np.float64) * SIZE
    return np.concatenate([rel[..., :2] - rel[..., 2:] / 2, rel[..., :2] + rel[..., 2:] / 2], -1), \
        keras.ops.convert_to_numpy(outputs["logits"]).astype(np.float64)


def numpy_score(boxes, logits, ref, label, iou):
    """The reference score of one box of one image: its label's logits summed over the matching predictions."""
    match = (numpy_iou(np.asarray(ref, np.float64), boxes) >= iou) & (logits.argmax(-1) == label)
    return logits[match, label].sum(), match


def numpy_top_box(boxes, logits):
    best = logits.max(-1).argmax()
    return boxes[best], int(logits[best].argmax())


@pytest.fixture(scope="module")
def models():
    return {"retinanet": retinanet()}


@pytest.mark.backends
def test_retinanet_scores_equal_a_hand_written_decoding_matching_and_sum(models):
    model, x = models["retinanet"], images()
    outputs = model(x, training=False)
    boxes, logits = numpy_retinanet_boxes(model, outputs)
    # Reference boxes: the most confident prediction of each image (and a shifted copy for image 0), so that
    # some predictions match; lists of different lengths.
    tops = [numpy_top_box(boxes[i], logits[i]) for i in range(2)]
    b0 = tops[0][0]
    given = [np.stack([b0, b0 + 0.05 * np.tile(b0[2:] - b0[:2], 2)]), tops[1][0][None]]
    labels = [[tops[0][1], tops[0][1]], [tops[1][1]]]
    target = kc.targets.detection(given, labels, iou=0.5).bind_model(model, (SIZE, SIZE))
    got = keras.ops.convert_to_numpy(target(outputs))
    assert got.shape == (2, 2)
    expected = np.zeros((2, 2))
    for i in range(2):
        for k, (ref, label) in enumerate(zip(given[i], labels[i])):
            expected[i, k], match = numpy_score(boxes[i], logits[i], ref, label, 0.5)
            assert match.sum() >= 1
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert got[1, 1] == 0  # the padding of image 1's shorter list
    # boxes=None: the model's own most confident box, scored the same way.
    own = kc.targets.detection(max_boxes=1, min_score=0.0).bind_model(model, (SIZE, SIZE))
    mine = keras.ops.convert_to_numpy(own(outputs))[:, 0]
    np.testing.assert_allclose(mine, expected[:, 0], rtol=1e-4, atol=1e-4)
    found = own.boxes(model, x)
    np.testing.assert_allclose(found[0]["boxes"][0], tops[0][0], rtol=1e-4, atol=1e-3)
    assert found[1]["labels"].tolist() == [tops[1][1]]


@pytest.mark.backends
def test_gradcam_of_a_box_equals_its_activations_and_gradients(models):
    model, x = models["retinanet"], images(4)
    layer = "retina_net_backbone/backbone/stack2_block0_out"
    outputs = model(x, training=False)
    boxes, logits = numpy_retinanet_boxes(model, outputs)
    explainer = kc.GradCAM(model, layer=layer)
    found = 0
    for rank in range(3):  # the most confident prediction of each image, then the next ones
        picks = [np.argsort(-logits[i].max(-1))[rank] for i in range(len(x))]
        ref_boxes = np.stack([boxes[i, p] for i, p in enumerate(picks)])
        ref_labels = np.array([int(logits[i, p].argmax()) for i, p in enumerate(picks)])
        weights = np.zeros(logits.shape, np.float32)  # the hand-written score: a fixed sum of logits
        for i in range(len(x)):
            match = numpy_score(boxes[i], logits[i], ref_boxes[i], ref_labels[i], 0.5)[1]
            weights[i, match, ref_labels[i]] = 1.0

        def score(out):
            return keras.ops.sum(out["cls_logits"] * keras.ops.convert_to_tensor(weights), axis=(1, 2)), None

        acts, grads, _, _ = seam.get().activation_grads(model, keras.ops.convert_to_tensor(x),
                                                        [explainer.layer_refs[0].layer], score)
        a, g = (keras.ops.convert_to_numpy(t) for t in (acts[0], grads[0]))
        expected = np.maximum((a * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
        got = explainer.explain(x, targets=kc.targets.detection(ref_boxes, ref_labels), upsample=False,
                                normalize=False)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5 * max(expected.max(), 1e-6))
        found += int((expected.max(axis=(1, 2)) > 0).sum())
    assert found >= 2  # some maps are not all zero (the ReLU of random weights' Grad-CAM often is)


@pytest.mark.backends
def test_k_boxes_in_one_pass_equal_one_pass_per_box(models):
    model, x = models["retinanet"], images()
    layer = "retina_net_backbone/backbone/stack2_block0_out"
    target = kc.targets.detection(max_boxes=3, min_score=0.0)
    found = target.boxes(model, x)
    explainer = kc.GradCAM(model, layer=layer)
    together = explainer.compute(x, targets=target)
    assert together.heatmaps.shape == (2, 3, SIZE, SIZE)
    np.testing.assert_allclose(together.scores, np.stack([f["scores"] for f in found]), rtol=1e-4)
    for k in range(3):
        one = explainer.compute(x, targets=kc.targets.detection(np.stack([f["boxes"][k] for f in found]),
                                                               np.array([f["labels"][k] for f in found])))
        np.testing.assert_allclose(together.heatmaps[:, k], one.heatmaps, atol=1e-4)
        np.testing.assert_allclose(together.scores[:, k], one.scores, rtol=1e-4)
    # EigenCAM, target-free: one map per box, all equal (the layer's principal component).
    eigen = kc.EigenCAM(model, layer=layer)(x)
    assert eigen.shape == (2, SIZE, SIZE) and eigen.max() == pytest.approx(1.0)


@pytest.mark.backends
def test_dfine_scores_equal_a_hand_written_decoding_matching_and_sum():
    model, x = dfine(), images()
    outputs = compiled_outputs(model, x)
    boxes, logits = numpy_dfine_boxes(outputs)
    tops = [numpy_top_box(boxes[i], logits[i]) for i in range(2)]
    explainer = kc.GradCAM(model)  # one line: the backbone's last stage
    assert explainer.layer_refs[0].name == "encoder_stage_1"
    got = explainer.compute(x, targets=kc.targets.detection(max_boxes=2, min_score=0.0), upsample=False,
                            normalize=False)
    assert got.heatmaps.shape == (2, 2, 8, 8)
    expected = [numpy_score(boxes[i], logits[i], tops[i][0], tops[i][1], 0.5)[0] for i in range(2)]
    np.testing.assert_allclose(got.scores[:, 0], expected, rtol=1e-4, atol=1e-4)
    assert got.heatmaps[:, 0].max() > 0
    # The same box alone: the same map. K boxes are one vectorized Jacobian, except on a TensorFlow CPU
    # without oneDNN, which has none through D-FINE's grouped convolutions: one backward pass per box there.
    one = explainer.compute(x, targets=kc.targets.detection(np.stack([t[0] for t in tops]), [t[1] for t in tops]),
                            upsample=False, normalize=False)
    np.testing.assert_allclose(one.scores, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.heatmaps[:, 0], one.heatmaps, rtol=1e-4, atol=1e-5 * got.heatmaps.max())


def numpy_own_box_scores(outputs):
    """Per image of a `{"boxes", "logits"}` batch: the score of its most confident box, by hand."""
    boxes, logits = (keras.ops.convert_to_numpy(outputs[k]).astype(np.float64) for k in ("boxes", "logits"))
    return np.array([numpy_score(b, z, *numpy_top_box(b, z), 0.5)[0] for b, z in zip(boxes, logits)])


@pytest.mark.backends
def test_scorecam_and_ablationcam_of_a_box_equal_masked_and_ablated_scores_by_hand():
    """Score-CAM and AblationCAM of the model's own box: each channel's weight from the target scores of the
    masked images (Score-CAM: softmax) or of the ablated activations (AblationCAM: relative drop), decoded,
    matched and summed by hand; each perturbed copy is scored on its own most confident box."""
    import cv2
    from keras_cam.demo.boxes import build_box_detector

    keras.utils.set_random_seed(0)
    model = build_box_detector((32, 32, 3), 3, width=4)
    x = images(1)[:, :32, :32]
    features = model.get_layer("features")
    a = keras.ops.convert_to_numpy(keras.Model(model.input, features.output)(x))[0].astype(np.float64)  # (8, 8, C)
    c = a.shape[-1]
    target = kc.targets.detection(max_boxes=1, min_score=0.0)

    masks = np.stack([cv2.resize(a[..., k], (32, 32), interpolation=cv2.INTER_LINEAR) for k in range(c)])
    lo, hi = masks.min((1, 2), keepdims=True), masks.max((1, 2), keepdims=True)
    masks = np.where(hi - lo > 0, (masks - lo) / np.where(hi - lo > 0, hi - lo, 1), 0.0)
    masked = numpy_own_box_scores(model((x * masks[..., None]).astype(np.float32), training=False))
    weights = np.exp(masked - masked.max()) / np.exp(masked - masked.max()).sum()
    expected = np.maximum((a * weights).sum(-1), 0)
    got = kc.ScoreCAM(model, layer="features").explain(x, targets=target, upsample=False, normalize=False)
    assert got.shape == (1, 1, 8, 8) and expected.max() > 0
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-3, atol=1e-4 * expected.max())

    head = keras.Model(features.output, model.output)  # the layers after the explained one
    y = numpy_own_box_scores(model(x, training=False))[0]
    ablated = numpy_own_box_scores(head((a[None] * (1 - np.eye(c)[:, None, None, :])).astype(np.float32)))
    expected = np.maximum((a * ((y - ablated) / abs(y))).sum(-1), 0)
    got = kc.AblationCAM(model, layer="features").explain(x, targets=target, upsample=False, normalize=False)
    assert expected.max() > 0
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-3, atol=1e-4 * expected.max())


def numpy_given_box_scores(outputs, ref, label):
    """Per image of a `{"boxes", "logits"}` batch: the score of the given box (ref, label), by hand."""
    boxes, logits = (keras.ops.convert_to_numpy(outputs[k]).astype(np.float64) for k in ("boxes", "logits"))
    return np.array([numpy_score(b, z, ref, label, 0.5)[0] for b, z in zip(boxes, logits)])


@pytest.mark.backends
def test_scorecam_and_ablationcam_score_each_images_copies_on_its_own_given_box():
    """Given boxes, several images in one call: each image's masked or ablated copies are scored on that
    image's own box (never another image's), as a reference by hand one image at a time."""
    import cv2
    from keras_cam.demo.boxes import build_box_detector

    keras.utils.set_random_seed(0)
    model = build_box_detector((32, 32, 3), 3, width=4)
    x = images(2, seed=3)[:, :32, :32]
    features = model.get_layer("features")
    acts = keras.ops.convert_to_numpy(keras.Model(model.input, features.output)(x)).astype(np.float64)
    c = acts.shape[-1]
    clean = model(x, training=False)
    tops = [numpy_top_box(*(keras.ops.convert_to_numpy(clean[k][j]).astype(np.float64) for k in ("boxes", "logits")))
            for j in range(2)]
    given = kc.targets.detection(np.stack([t[0] for t in tops])[:, None], [[t[1]] for t in tops])
    head = keras.Model(features.output, model.output)
    score_maps = kc.ScoreCAM(model, layer="features", batch_size=4).explain(
        x, targets=given, upsample=False, normalize=False)
    ablation_maps = kc.AblationCAM(model, layer="features", batch_size=4).explain(
        x, targets=given, upsample=False, normalize=False)
    for j, (ref, label) in enumerate(tops):
        a = acts[j]
        masks = np.stack([cv2.resize(a[..., k], (32, 32), interpolation=cv2.INTER_LINEAR) for k in range(c)])
        lo, hi = masks.min((1, 2), keepdims=True), masks.max((1, 2), keepdims=True)
        masks = np.where(hi - lo > 0, (masks - lo) / np.where(hi - lo > 0, hi - lo, 1), 0.0)
        masked = numpy_given_box_scores(model((x[j] * masks[..., None]).astype(np.float32), training=False),
                                        ref, label)
        weights = np.exp(masked - masked.max()) / np.exp(masked - masked.max()).sum()
        expected = np.maximum((a * weights).sum(-1), 0)
        assert expected.max() > 0
        np.testing.assert_allclose(score_maps[j].reshape(8, 8), expected, rtol=1e-3, atol=1e-4 * expected.max())

        y = numpy_given_box_scores(model(x[j:j + 1], training=False), ref, label)[0]
        ablated = numpy_given_box_scores(head((a[None] * (1 - np.eye(c)[:, None, None, :])).astype(np.float32)),
                                         ref, label)
        expected = np.maximum((a * ((y - ablated) / abs(y))).sum(-1), 0)
        assert expected.max() > 0
        np.testing.assert_allclose(ablation_maps[j].reshape(8, 8), expected, rtol=1e-3, atol=1e-4 * expected.max())


def test_a_detector_in_the_generic_format_and_bad_input_say_what_to_do():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    x = keras.layers.Reshape((256, 4))(x)
    model = keras.Model(inputs, {"boxes": keras.layers.Dense(4, name="boxes")(x),
                                 "logits": keras.layers.Dense(2, name="logits")(x)})
    imgs = images(2)[:, :16, :16]
    boxes = [np.array([[1.0, 1, 8, 8]]), np.zeros((0, 4))]
    maps = kc.GradCAM(model, layer="features")(imgs, targets=kc.targets.detection(boxes, [[1], []], iou=0.01))
    assert maps.shape == (2, 1, 16, 16) and not maps[1].any()
    classifier = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, name="c"),
                                   keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="cannot read boxes and class logits"):
        kc.GradCAM(classifier, layer="c")(imgs, targets=kc.targets.detection())
    with pytest.raises(ValueError, match="x1 > x0"):
        kc.targets.detection(np.array([[5, 5, 1, 9]]), [0])
    with pytest.raises(ValueError, match="one label per box"):
        kc.targets.detection(np.array([[1, 1, 5, 9]]), [0, 1])
    with pytest.raises(ValueError, match="boxes for 3 images but there are 2"):
        kc.GradCAM(model, layer="features")(imgs, targets=kc.targets.detection(np.ones((3, 1, 4)) * [0, 0, 1, 1]))
    with pytest.raises(ValueError, match="`iou`"):
        kc.targets.detection(iou=0)
    # Input-gradient methods give one map per image: one box per image, never K summed silently.
    one = kc.targets.detection(np.array([[1.0, 1, 8, 8], [2, 2, 9, 9]]), [1, 0], iou=0.01)
    assert kc.Saliency(model)(imgs, targets=one).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="Saliency explains one box per image"):
        kc.Saliency(model)(imgs, targets=kc.targets.detection(boxes, [[1], []]))
    with pytest.raises(ValueError, match="aug_smooth flips the images"):
        kc.GradCAM(model, layer="features").explain(imgs, targets=one, aug_smooth=True)


def deeplab() -> keras.Model:
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=resnet(), spatial_pyramid_pooling_key="P4", upsampling_size=4, dilation_rates=[1, 2],
        low_level_feature_key="P2", projection_filters=8, image_shape=(SIZE, SIZE, 3))
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)


def segformer() -> keras.Model:
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 1], layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[8, 16],
        image_shape=(SIZE, SIZE, 3))
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=8)
    return keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=3)


def basnet() -> keras.Model:
    with numpy_initializers():
        return _basnet()


def _basnet() -> keras.Model:
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1] * 4, stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block")
    backbone = keras_hub.models.BASNetBackbone(image_encoder=encoder, num_classes=1, image_shape=(SIZE, SIZE, 3))
    return keras_hub.models.BASNetImageSegmenter(backbone=backbone, num_classes=1)


# The automatic layer: the encoder's last stage that the task reads (DeepLabV3: its pyramid pooling key, P4),
# BASNet's bottleneck (its encoder is rebuilt into blocks of its own): the last stage joined with the bridge.
SEGMENTERS = {"deeplab": (deeplab, "stack2_block0_out"), "segformer": (segformer, "output_level_1"),
              "basnet": (basnet, keras.layers.Concatenate)}


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["deeplab", "segformer"])
def test_segmenters_are_explained_from_one_line(kind):
    assert _segmenter_checked(kind).shape[0] == 2


def _segmenter_checked(kind):
    """The checks of a segmenter explained from one line; returns its maps."""
    build, expected_layer = SEGMENTERS[kind]
    model, x = build(), images()
    explainer = kc.GradCAM(model)
    layer = explainer.layer_refs[0]
    assert layer.name == expected_layer if isinstance(expected_layer, str) else isinstance(layer.layer, expected_layer)
    with kc.capture.logits(model):  # what every target scores: logits (BASNet's sigmoids removed)
        z = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    c = 1
    mask = (z[..., 0] > 0) if z.shape[-1] == 1 else (z.argmax(-1) == c)
    logit = z[..., 0] if z.shape[-1] == 1 else z[..., c]
    result = explainer.compute(x, targets=kc.targets.segmentation(c), upsample=False, normalize=False)
    np.testing.assert_allclose(result.scores, (logit * mask).sum((1, 2)), rtol=1e-3, atol=1e-3)
    if kind != "deeplab":  # the maps' oracle on one of them: each costs minutes of tracing on JAX
        return result.heatmaps
    weights = keras.ops.convert_to_tensor(mask.astype(np.float32))

    def score(out):
        return keras.ops.sum(keras.ops.cast(out, "float32")[..., c] * weights, axis=(1, 2)), None

    with kc.capture.logits(model):
        acts, grads, _, _ = seam.get().activation_grads(model, keras.ops.convert_to_tensor(x), [layer.layer], score)
    a, g = (keras.ops.convert_to_numpy(t) for t in (acts[0], grads[0]))
    expected = np.maximum((a * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    np.testing.assert_allclose(result.heatmaps, expected, rtol=1e-3, atol=1e-4 * max(expected.max(), 1e-6))
    assert np.abs(g).max() > 0  # the layer is on the way to the output
    eigen = kc.EigenCAM(model)(x)  # target-free
    assert eigen.shape == (2, SIZE, SIZE) and np.allclose(eigen.max(axis=(1, 2)), 1.0)
    return result.heatmaps


@pytest.mark.backends
def test_basnet_is_explained_from_one_line():
    assert _segmenter_checked("basnet").shape[0] == 2


@pytest.mark.backends
def test_detectors_get_their_encoders_last_stage(models):
    assert kc.GradCAM(models["retinanet"]).layer_refs[0].path == "retina_net_backbone/backbone/stack2_block0_out"


TRAINED = 32  # the trained detector's input size: small enough to train on every backend in CI


@pytest.fixture(scope="module")
def trained_detector():
    from keras_cam.demo.boxes import build_box_detector, train_box_detector

    keras.utils.set_random_seed(0)
    x, y, _, b = kc.datasets.make_shapes(1500, size=TRAINED, seed=0, return_boxes=True)
    model = build_box_detector((TRAINED, TRAINED, 3), 3)
    train_box_detector(model, x, y, b, epochs=10)
    return model


@pytest.mark.backends
@pytest.mark.slow  # trains a small detector (1,500 images of 32², 10 epochs) once per backend
def test_a_trained_detectors_box_maps_point_at_the_box_and_follow_it(trained_detector):
    from keras_cam.demo.boxes import box_pointing_game

    model = trained_detector
    x, y, _, b = kc.datasets.make_shapes(200, size=TRAINED, seed=1, return_boxes=True)
    explainer = kc.GradCAM(model, layer="features")
    maps = explainer(x, targets=kc.targets.detection(b, y))
    assert box_pointing_game(maps, b).mean() >= 0.9
    own = explainer(x, targets=kc.targets.detection(max_boxes=1, min_score=0.5))[:, 0]
    assert box_pointing_game(own, b).mean() >= 0.9
    # The object moves (the whole image rolls by 6 px right, 4 px down): its box's map moves with it.
    keep = np.flatnonzero((b[:, 2] + 6 <= TRAINED) & (b[:, 3] + 4 <= TRAINED))[:50]
    moved = np.roll(x[keep], (4, 6), axis=(1, 2))
    shifted = b[keep] + [6, 4, 6, 4]
    after = explainer(moved, targets=kc.targets.detection(shifted, y[keep]))
    # As well as on the same images before the move, give or take one image in ten (how a 10-epoch model's
    # points fall differs by machine: 0.88 with TensorFlow's oneDNN off, 0.90 on), and far above chance.
    before, moved_score = box_pointing_game(maps[keep], b[keep]).mean(), box_pointing_game(after, shifted).mean()
    print(f"pointing game on the kept images: {before:.2f} before the move, {moved_score:.2f} after")
    assert len(keep) >= 40 and moved_score >= min(before, 0.9) - 0.1 and moved_score >= 0.8

    def centroid(m):
        yy, xx = np.mgrid[:TRAINED, :TRAINED]
        return np.stack([(m * xx).sum((1, 2)), (m * yy).sum((1, 2))], -1) / m.sum((1, 2))[:, None]

    seen = (after.sum((1, 2)) > 0) & (maps[keep].sum((1, 2)) > 0)  # maps with some positive evidence
    assert seen.sum() >= 30
    shift = np.median(centroid(after[seen]) - centroid(maps[keep][seen]), axis=0)
    np.testing.assert_allclose(shift, [6, 4], atol=1.5)


def test_overlay_draws_the_boxes_and_checks_them():
    image = np.zeros((32, 32, 3), np.float32)
    plain = kc.overlay(image, np.zeros((4, 4)), alpha=0.0)
    drawn = kc.overlay(image, np.zeros((4, 4)), alpha=0.0, boxes=[[4, 6, 20, 30]], labels=[1], scores=[0.9])
    changed = (drawn != plain).any(-1)
    assert changed[10:30, 4].all() and changed[10:30, 19].all() and changed[29, 4:20].all()  # the sides
    assert not changed[30:].any() and not changed[:, 20:].any() or not changed[12:, 20:].any()
    assert not (drawn[20:28, 6:18] != plain[20:28, 6:18]).any()  # inside the box: untouched
    with pytest.raises(ValueError, match="one per box"):
        kc.overlay(image, np.zeros((4, 4)), boxes=[[4, 6, 20, 30]], labels=[1, 2])
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        kc.overlay(image, np.zeros((4, 4)), boxes=np.ones((2, 2, 4)))


def test_cli_explains_a_detector_box_by_box(tmp_path, capsys):
    from keras_cam import cli
    from keras_cam.demo.boxes import build_box_detector

    keras.utils.set_random_seed(0)
    path = str(tmp_path / "detector.keras")
    build_box_detector((32, 32, 3), 3).save(path)
    images_, _, _ = kc.datasets.make_shapes(2, size=32, seed=1)
    pngs = [str(kc.save_image(tmp_path / f"img{i}.png", img)) for i, img in enumerate(images_)]
    out = tmp_path / "out"
    assert cli.main(["explain", path, *pngs, "--box", "0", "--min-score", "0", "--layer", "features",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": box 0 [") == 2 and (out / "img0_gradcam_box0.png").exists()
    assert cli.main(["explain", path, pngs[0], "--box", "all", "--min-score", "0", "--out", str(out)]) == 0
    assert len(list(out.glob("img0_gradcam_box*.png"))) == 20  # every box, up to 20
    assert cli.main(["explain", path, pngs[0], "--box", "0", "--min-score", "0.999999", "--out", str(out)]) == 0
    assert "no box #0 with probability >= 0.999999" in capsys.readouterr().out
    assert cli.main(["explain", path, pngs[0], "--box", "-1"]) == 2
    assert "expected a box rank >= 0 or 'all'" in capsys.readouterr().err
