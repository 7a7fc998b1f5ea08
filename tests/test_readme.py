"""README.md runs as written: every ```python block is executed, and every `keras-cam` command line of its
```bash blocks is parsed by the command line's own parser (`--help` and `--version` are run).

A block is a fragment of a longer program: the names it uses but does not define (`model`, `images`, ...) come
from its context below, small models built in the test; pretrained weights named by the README are replaced
by stand-ins with the same layer names. Each block runs in a fresh folder (`tmp_path`), where the files it
reads are created. After running, the context checks what the block's comments claim where that is cheap.
A new block without a context fails `test_every_python_block_has_a_context`: add one below.
"""
import pathlib
import re
import shlex

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import cli
from tests.helpers import channels_first_conv_runs

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def blocks(language):
    """(line number of the opening fence, code) of each ```language block of the README."""
    found, lines = [], README.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == f"```{language}":
            start = number
        elif start is not None and line.strip() == "```":
            found.append((start, "\n".join(lines[start:number - 1]) + "\n"))
            start = None
    return found


# ------------------------------------------------------------------------------------------ stand-in models


def classifier(size=32, classes=4, filters=64, second="block3_conv1"):
    """Input -> Conv2D "conv1" -> Conv2D `second` -> GAP -> Dense "predictions" (logits), seeded; `size` None
    takes any size."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=second)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="predictions")(x))


def mobilenet_v2_stand_in(weights="imagenet", include_top=True, input_shape=None, **kwargs):
    """keras.applications.MobileNetV2 as the README calls it (weights=None, no top), small: the layer it names
    and the last one."""
    assert weights is None and include_top is False  # the README's call
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu",
                            name="block_13_expand_relu")(inputs)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="out_relu")(x)
    return keras.Model(inputs, x, name="mobilenetv2_1.00_96")


def resnet50_stand_in(weights=None, include_top=True, **kwargs):
    """keras.applications.ResNet50 as the README calls it (include_top=False), small: two named outputs."""
    assert include_top is False and weights is not None  # the README's call
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                            name="conv4_block6_out")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv5_block3_out")(x)
    return keras.Model(inputs, x, name="resnet50")


def random_images(n=2, size=32):
    return np.random.default_rng(0).random((n, size, size, 3)).astype("float32")


def write_photos(folder, n=3, size=32):
    pictures, _, _ = kc.datasets.make_shapes(n, size=size, seed=0)
    folder.mkdir()
    return [kc.save_image(folder / f"photo{i}.png", p) for i, p in enumerate(pictures)]


POOLING = {keras.layers.Conv1D: keras.layers.GlobalAveragePooling1D,
           keras.layers.Conv2D: keras.layers.GlobalAveragePooling2D,
           keras.layers.Conv3D: keras.layers.GlobalAveragePooling3D}


def conv_model(layer, shape, data_format="channels_last"):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(shape),
                             layer(4, 3, padding="same", activation="relu", data_format=data_format,
                                   name="conv"),
                             POOLING[layer](data_format=data_format), keras.layers.Dense(3)])


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.out = keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.gap(self.conv(x)))


# ------------------------------------------------------------------------------ contexts, one per block
# Each takes the monkeypatch fixture and returns (globals for the block, a check of the namespace after it).


def quickstart(monkeypatch):
    monkeypatch.setattr(keras.applications, "MobileNetV2", mobilenet_v2_stand_in)

    def check(ns):
        assert ns["cams"].shape == (4, 96, 96) and ns["cams"].dtype == np.float32
        assert 0.0 <= ns["cams"].min() and ns["cams"].max() <= 1.0
        assert ns["heatmaps"].shape == (4, 96, 96)
        assert kc.visualize.read_image("overlay.png").shape == (96, 96, 3)

    return {"images": random_images(4, 96)}, check


def nested(monkeypatch):
    monkeypatch.setattr(keras.applications, "ResNet50", resnet50_stand_in)
    two = keras.Input((32, 32, 3), name="image"), keras.Input((4,), name="meta")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(two[0]))
    two_input_model = keras.Model([two[1], two[0]], keras.layers.Dense(3)(
        keras.layers.Concatenate()([pooled, two[1]])))
    subclassed = _Subclassed()
    subclassed(random_images())
    context = {"keras": keras, "my_subclassed_model": subclassed, "two_input_model": two_input_model,
               "meta": np.ones((2, 4), "float32"), "images": random_images(),
               "conv1d_model": conv_model(keras.layers.Conv1D, (64, 2)),
               "signals": np.random.default_rng(0).random((2, 64, 2)).astype("float32"),
               "conv3d_model": conv_model(keras.layers.Conv3D, (8, 8, 8, 1)),
               "volumes": np.random.default_rng(0).random((2, 8, 8, 8, 1)).astype("float32"),
               "channels_first_model": conv_model(keras.layers.Conv2D, (3, 16, 16), "channels_first"),
               "x": np.random.default_rng(0).random((2, 3, 16, 16)).astype("float32")}
    if not channels_first_conv_runs():
        pytest.skip("TensorFlow on this CPU cannot run channels_first convolutions (oneDNN off)")

    def check(ns):  # the layers the comments name
        assert [r.path for r in kc.GradCAM(ns["model"]).layer_refs] == ["resnet50/conv5_block3_out"]
        assert [r.path for r in kc.GradCAM(ns["model"], layer="conv4_block6_out").layer_refs] == [
            "resnet50/conv4_block6_out"]
        assert kc.GradCAM(ns["conv1d_model"])(ns["signals"]).shape == (2, 64)
        assert kc.GradCAM(ns["conv3d_model"])(ns["volumes"]).shape == (2, 8, 8, 8)
        assert kc.GradCAM(ns["channels_first_model"])(ns["x"]).shape == (2, 16, 16)

    return context, check


def resnet_explainer(monkeypatch):
    monkeypatch.setattr(keras.applications, "ResNet50", resnet50_stand_in)
    model = keras.Sequential([keras.applications.ResNet50(weights="stand-in", include_top=False),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    return {"np": np, "model": model, "explainer": kc.GradCAM(model), "images": random_images()}


def several_targets(monkeypatch):
    context = resnet_explainer(monkeypatch)

    def check(ns):
        assert ns["maps"].shape == (2, 10, 32, 32)  # every class
        np.testing.assert_allclose(ns["maps"][:, 3], ns["explainer"](ns["images"], targets=3), atol=1e-5)

    return context, check


def smoothing(monkeypatch):
    return resnet_explainer(monkeypatch), None


def lrp(monkeypatch):
    model = classifier(second="block3")
    images = random_images()

    def check(ns):
        assert ns["maps"].shape == (2, 32, 32) and ns["signed"].shape == (2, 32, 32)
        assert ns["full"].shape == (2, 32, 32, 3)
        # `signed` is the relevance summed over channels
        np.testing.assert_allclose(ns["full"].sum(-1), ns["signed"], rtol=1e-4, atol=1e-6)

    rng = np.random.default_rng(0)
    signal, relevance = rng.random((64, 2)), rng.normal(size=64)  # a 1-D signal and its signed relevance
    return {"keras": keras, "model": model, "images": images, "targets": [0, 1], "image": images[0],
            "signal": signal, "relevance": relevance}, check


def vit(monkeypatch):
    keras_hub = pytest.importorskip("keras_hub", reason="the [hub] extra (keras-hub) is not installed")

    def check(ns):
        assert [r.path for r in kc.GradCAM(ns["model"]).layer_refs] == [
            "vi_t_backbone/vit_encoder/transformer_block_12/ln_1"]

    return {"keras_hub": keras_hub}, check


def segmentation(monkeypatch):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="features"),
                              keras.layers.Conv2D(3, 1, name="logits")])
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 8:20, 8:20] = True

    def check(ns):
        assert ns["heatmaps"].shape == (2, 32, 32)

    return {"model": model, "images": random_images(), "masks": masks}, check


def detection(monkeypatch):
    keras_hub = pytest.importorskip("keras_hub", reason="the [hub] extra (keras-hub) is not installed")
    keras.utils.set_random_seed(0)
    size = 64
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1] * 4, stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        image_shape=(size, size, 3))
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3, max_level=4,
                                                  use_p5=False, image_shape=(size, size, 3))
    retinanet = keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=3,
                                                         pre_logits_num_conv_layers=1)
    deeplab = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=keras_hub.models.DeepLabV3Backbone(
            image_encoder=encoder, spatial_pyramid_pooling_key="P4", upsampling_size=4, dilation_rates=[1, 2],
            low_level_feature_key="P2", projection_filters=8, image_shape=(size, size, 3)),
        num_classes=3)
    boxes = [np.array([[8.0, 8.0, 40.0, 40.0]]), np.array([[16.0, 4.0, 60.0, 30.0]])]
    context = {"retinanet": retinanet, "deeplab": deeplab, "detector": retinanet, "boxes": boxes,
               "labels": [[1], [2]], "images": random_images(2, size)}

    def check(ns):
        assert ns["heatmaps"].shape == (2, size, size)

    return context, check


def filters(monkeypatch):
    def check(ns):
        assert ns["patterns"].shape == (16, 64, 64, 3) and ns["patterns"].dtype == np.uint8
        assert ns["maps"].shape == (2, 32, 32, 8) and ns["maps"].dtype == np.float32
        assert kc.visualize.read_image("filters.png").ndim == 3

    return {"model": classifier(size=None), "images": random_images()}, check


def objectives(monkeypatch):
    model = classifier(filters=8)
    vectors = np.random.default_rng(0).normal(size=(1, 8))
    return {"model": model, "viz": kc.FilterVisualizer(model, "block3_conv1"), "vectors": vectors}, None


def callbacks(monkeypatch):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64, 64, 3)),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
                              keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
                              kc.CAMHead(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y, _ = kc.datasets.make_shapes(8, size=64, seed=0)

    def check(ns):
        names = sorted(p.name for p in pathlib.Path("cams").glob("epoch_*.png"))
        assert names == [f"epoch_{epoch:03d}.png" for epoch in range(1, 11)]
        assert 0.0 <= ns["model"].history.history["cam_pointing_game"][-1] <= 1.0  # in the logs
        for folder in ("filters", "maps"):
            assert len(list(pathlib.Path(folder).glob("epoch_*.png"))) == 10

    return {"kc": kc, "model": model, "x": x, "y": y}, check


def shapes_classifier():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
                              kc.CAMHead(3)])
    images, labels, masks = kc.datasets.make_shapes(4, size=32, seed=0)
    return model, images, labels, masks


def comparison(monkeypatch):
    # Three methods instead of every registered one, to keep it short (tests/test_comparison.py runs all).
    monkeypatch.setattr(kc.comparison, "available_methods", lambda: ["gradcam", "scorecam", "eigencam"])
    model, images, labels, masks = shapes_classifier()
    maps = kc.GradCAM(model)(images, targets=labels)

    def check(ns):
        rows = ns["result"].heatmaps  # one per method and the random reference
        assert {"gradcam", "scorecam", "eigencam"} < set(rows) and len(rows) == 4
        assert np.isfinite(ns["road"].morf_score) and np.isfinite(ns["road"].lerf_score)

    return {"model": model, "images": images, "labels": labels, "masks": masks, "maps": maps}, check


def explain_dataset(monkeypatch):
    pytest.importorskip("zarr", reason="the [zarr] extra is not installed")
    model, images, labels, _ = shapes_classifier()
    write_photos(pathlib.Path("photos"))
    ds = [(images[:2], labels[:2]), (images[2:], labels[2:])]  # (x, y) batches

    def check(ns):
        assert ns["maps"].shape == (0, 32, 32)  # rows 10:20 of a 3-image store
        assert kc.open_store("heatmaps.zarr")["heatmaps"].shape == (3, 32, 32)
        expected = kc.GradCAM(model)(images, targets=labels)
        np.testing.assert_allclose(ns["result"].heatmaps, expected, atol=1e-5)

    return {"kc": kc, "model": model, "ds": ds}, check


def distributed(monkeypatch):
    backend = keras.backend.backend()
    if backend == "torch":
        pytest.skip("the block shows TensorFlow's strategy and JAX's distribution: neither runs on PyTorch")
    context = {"keras": keras, "images": random_images(), "build_model": classifier}
    if backend == "tensorflow":
        import tensorflow as tf

        context["tf"] = tf
    return context, None


def ray_block(monkeypatch):
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    pytest.importorskip("PIL", reason="the [ray] extra (Pillow) is not installed")
    pytest.importorskip("pyarrow", reason="Ray Data's parquet writer needs pyarrow")
    model, _, _, _ = shapes_classifier()
    model.save("model.keras")
    write_photos(pathlib.Path("photos"))
    monkeypatch.setattr(ray, "init", lambda *a, _init=ray.init, **k: _init(
        *a, **{"include_dashboard": False, "log_to_driver": False, "configure_logging": False, **k}))

    def check(ns):
        import pyarrow.parquet as pq

        assert pq.read_table("heatmaps/").num_rows == 3

    return {}, check


def audit(monkeypatch):
    pytest.importorskip("sklearn", reason="the [audit] extra (scikit-learn) is not installed")
    # A model whose Grad-CAM map is each image's brightness (a 1x1 convolution copying the channels, equal
    # positive head weights), and images bright on their object, or in the top-left corner for half of the
    # circles: a planted shortcut for the audit to find.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)),
                              keras.layers.Conv2D(3, 1, use_bias=False, name="copy"),
                              kc.CAMHead(3, name="head")])
    model.get_layer("copy").set_weights([np.eye(3, dtype="float32")[None, None]])
    head = model.get_layer("head")
    head.set_weights([np.ones_like(w) if w.ndim == 2 else np.zeros_like(w) for w in head.get_weights()])
    rng = np.random.default_rng(0)
    n, size = 60, 32
    labels = np.arange(n) % 3
    images = 0.05 * rng.random((n, size, size, 3)).astype("float32")
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = rng.integers(8, 20, 2)
        masks[i, r:r + 6, c:c + 6] = True
        images[i, r:r + 6, c:c + 6] += 0.5
        if labels[i] == 0 and i % 2 == 0:
            images[i, :6, :6] += 1.0

    def check(ns):
        top = ns["report"].findings[0]
        assert top["class"] == "circle" and top["region"] == "top-left" and "top-left" in top["text"]

    return {"kc": kc, "model": model, "images": images, "labels": labels, "masks": masks}, check


# The context of each block: the first key found in the block's code picks it.
CONTEXTS = {
    "kc.attach_cam_head(backbone": quickstart,
    "kc.GradCAM(my_subclassed_model)": nested,
    'targets="all")': several_targets,
    "eigen_smooth=True": smoothing,
    "kc.LRP(": lrp,
    "keras_hub.models.ViTBackbone": vit,
    "kc.targets.detection(": detection,
    "kc.targets.segmentation(1, masks)": segmentation,
    "from keras_cam.activation_maximization import": objectives,
    "kc.FilterVisualizer(model, ": filters,
    "kc.callbacks.CAMSnapshot(": callbacks,
    "kc.compare_methods(": comparison,
    'kc.explain_dataset(explainer, "photos/"': explain_dataset,
    "tf.distribute.MirroredStrategy()": distributed,
    "from keras_cam.integrations.ray import Explainer": ray_block,
    "kc.audit(": audit,
}
SLOW = {detection, callbacks, comparison, ray_block, audit}


def context_of(code):
    return next((context for key, context in CONTEXTS.items() if key in code), None)


def test_every_python_block_has_a_context():
    found = blocks("python")
    assert len(found) >= len(CONTEXTS)
    for line, code in found:
        assert context_of(code) is not None, f"README.md:{line}: a python block without a context here"
    used = sorted(context_of(code).__name__ for _, code in found)
    assert used == sorted(c.__name__ for c in CONTEXTS.values())  # one block each


def _params():
    for line, code in blocks("python"):
        context = context_of(code)
        if context is not None:
            marks = [pytest.mark.slow] if context in SLOW else []
            if context is distributed:
                marks.append(pytest.mark.backends)
            yield pytest.param(line, code, context, id=context.__name__.removesuffix("_block"), marks=marks)


@pytest.mark.parametrize("line, code, context", list(_params()))
def test_python_block_runs(line, code, context, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, check = context(monkeypatch)
    namespace = {"__name__": "readme", "kc": kc, **namespace}
    if context is distributed:  # one half per backend: TensorFlow's strategy, JAX's distribution
        tf_half, jax_half = code.split("\n\n")
        code = tf_half if keras.backend.backend() == "tensorflow" else jax_half
    try:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    finally:
        if context is distributed and keras.backend.backend() == "jax":
            keras.distribution.set_distribution(None)
        if context is ray_block:
            import ray

            ray.shutdown()
    if context is distributed:
        assert namespace["heatmaps"].shape == (2, 32, 32)
    if check is not None:
        check(namespace)


# ------------------------------------------------------------------------------------- command lines


def command_lines():
    """Every `keras-cam ...` line of the README's ```bash blocks, split as a shell would, without comments."""
    return [shlex.split(line, comments=True) for _, code in blocks("bash") for line in code.splitlines()
            if line.startswith("keras-cam ")]


def test_every_command_line_parses():
    lines = command_lines()
    assert len(lines) >= 10 and {argv[1] for argv in lines} == {"explain", "filters", "demo", "audit"}
    parser = cli.build_parser()
    for argv in lines:
        args = parser.parse_args(argv[1:])  # an unknown option or a bad value exits 2
        assert args.command == argv[1]


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_run(flag, capsys):
    assert cli.main([flag]) == 0
    out = capsys.readouterr().out
    assert re.search(r"keras-cam \d" if flag == "--version" else r"usage: keras-cam", out), out
