"""Hardening: each case of an adversarial trial that once gave a silent wrong answer, lost a file, grew
without bound or misled, on every backend where it applies."""
import keras
import numpy as np
import pytest

import keras_cam as kc
from tests import oracles
from tests.models import fixed_weights, functional_model, images


class _LinearUnit(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.gap = keras.layers.GlobalAveragePooling2D()
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.gap(self.conv(x)))


# ------------------------------------------------------------------------------ regression outputs


@pytest.mark.backends
def test_a_single_unit_without_sigmoid_is_a_regression_output():
    wts = fixed_weights(seed=1, k=1)
    model = functional_model(wts, activation=None)
    x = images(n=4)
    a, g, z = oracles.two_conv_forward_backward(x, wts["k1"], wts["b1"], wts["k2"], wts["b2"], wts["w"], wts["b"],
                                                np.zeros(4, int))
    assert (z[:, 0] < 0).any() and (z[:, 0] > 0).any()  # both signs: a negative output is explained as it is
    explainer = kc.GradCAM(model, layer="conv1")
    assert explainer.output_kind == "regression"
    for targets in (None, 0, [0, 0, 0, 0]):
        result = explainer.compute(x, targets=targets)
        np.testing.assert_allclose(result.scores, z[:, 0], rtol=1e-4, atol=1e-5)  # the model's own output
        np.testing.assert_array_equal(result.targets, 0)
        np.testing.assert_allclose(result.heatmaps, oracles.finish(oracles.gradcam(a, g)), atol=2e-4)
    with pytest.raises(ValueError, match="one regression unit, whose only index is 0.*binary=True"):
        explainer(x, targets=1)
    # Asked for: a logit output read as a binary classifier (class 0 = the negated unit, predicted z > 0).
    binary = kc.GradCAM(model, layer="conv1", binary=True)
    assert binary.output_kind == "binary"
    result = binary.compute(x)
    np.testing.assert_array_equal(result.targets, (z[:, 0] > 0).astype(int))
    np.testing.assert_allclose(result.scores, np.abs(z[:, 0]), rtol=1e-4, atol=1e-5)


@pytest.mark.backends
def test_regression_on_subclassed_and_camhead_models():
    x = images(n=3)
    keras.utils.set_random_seed(0)
    sub = _LinearUnit(name="linear_unit")
    sub(x)
    out = keras.ops.convert_to_numpy(sub(x))[:, 0]
    result = kc.GradCAM(sub).compute(x)
    np.testing.assert_allclose(result.scores, out, rtol=1e-4, atol=1e-6)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              kc.CAMHead(1, activation=None)])
    cam = kc.CAM(model).compute(x)
    # CAM of the unit itself: ReLU(f @ w), no negation, for every image whatever the sign of its output.
    feats = keras.ops.convert_to_numpy(model.get_layer("conv")(x))
    w = keras.ops.convert_to_numpy(model.layers[-1].kernel)[:, 0]
    np.testing.assert_allclose(cam.heatmaps, oracles.finish(feats @ w, size=(10, 10)), atol=2e-4)
    np.testing.assert_allclose(cam.heatmaps, kc.GradCAM(model, layer="conv")(x), atol=2e-4)


# ----------------------------------------------------------------- compiled functions: shared and bounded


@pytest.mark.backends
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch runs eagerly: nothing is traced")
def test_fresh_explainers_share_traces_and_ragged_batches_share_buckets():
    traces = []

    class Counting(kc.GradCAM):
        def compute_cam(self, a, g, t):
            traces.append(tuple(a.shape))
            return super().compute_cam(a, g, t)

    model = functional_model(fixed_weights(seed=3))
    x = images(n=8)
    first = Counting(model)(x)
    for _ in range(5):  # a fresh explainer per call, as in `kc.GradCAM(model)(x)` in a loop
        np.testing.assert_array_equal(Counting(model)(x), first)
    assert len(traces) == 1
    for n in range(1, 9):  # batch sizes 1..8 share the buckets 1, 2, 4 and 8
        np.testing.assert_allclose(Counting(model)(x[:n]), first[:n], atol=1e-6)
    assert sorted({shape[0] for shape in traces}) == [1, 2, 4, 8] and len(traces) == 4


@pytest.mark.backends
def test_the_cache_is_bounded_and_never_keeps_models_alive(tmp_path, monkeypatch):
    import copy
    import gc
    import pickle
    import weakref

    from keras_cam import _batching

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    previous = kc.set_cache_size(3)
    trims = []  # the freed functions' pages go back to the system after each eviction
    monkeypatch.setattr(_batching, "return_freed_memory", lambda: trims.append(len(_batching.CACHE)))
    try:
        explainer = kc.GradCAM(model)
        maps = [explainer(images(n=2, size=size)) for size in (8, 9, 10, 11, 12)]
        assert _batching.CACHE.count(model) == 3 and len(_batching.CACHE) <= 3
        assert len(trims) >= 2 and all(n <= 3 for n in trims)
        np.testing.assert_allclose(explainer(images(n=2, size=8)), maps[0], atol=1e-6)  # rebuilt, same maps
    finally:
        kc.set_cache_size(previous)
    # The user's model is left as it was: it deep-copies, pickles and saves as before.
    x = images(n=2, size=9)
    expected = keras.ops.convert_to_numpy(model(x))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), expected, rtol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), expected, rtol=1e-6)
    refs = weakref.ref(model), weakref.ref(explainer)
    del model, explainer, loaded
    gc.collect()
    assert refs[0]() is None and refs[1]() is None  # the shared cache held neither


def test_freed_memory_is_returned_to_the_system():
    from keras_cam.backend import common

    import platform

    common.return_freed_memory()  # collects garbage; glibc's malloc_trim where there is one
    if platform.libc_ver()[0] == "glibc":
        assert common._LIBC and callable(common._LIBC.malloc_trim)
    else:
        assert common._LIBC is False


@pytest.mark.backends
def test_a_layer_that_runs_twice_is_refused_not_explained_by_its_last_call():
    shared = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="shared")
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="after")(shared(shared(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features)))
    x = images(n=2, size=8)
    for method in (kc.GradCAM, kc.ScoreCAM, kc.LayerCAM, kc.AblationCAM):
        with pytest.raises(ValueError, match=r"^Layer 'shared' runs 2 times in one forward pass \(a layer "
                                             r".*Explain a layer that runs once"):
            method(model, layer="shared")(x)
    # FullGrad takes no layer: it says why it cannot explain this model, not to pick another layer.
    with pytest.raises(ValueError, match=r"^Layer 'shared' runs 2 times .*FullGrad adds the bias gradients"):
        kc.FullGrad(model)(x)
    maps = kc.GradCAM(model, layer="after")(x)  # a layer that runs once
    assert maps.shape == (2, 8, 8) and np.ptp(maps) > 0


# ------------------------------------------------------------------------------------ epoch metrics


@pytest.mark.backends
def test_cam_snapshot_metrics_are_in_every_epochs_logs(tmp_path):
    import csv

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)), keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
                              kc.CAMHead(3)])
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y, masks = kc.datasets.make_shapes(24, size=24, seed=2)
    snap = kc.callbacks.CAMSnapshot(x[:4], targets=y[:4], masks=masks[:4], every=2, output_dir=tmp_path / "cams")
    log = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0,
                        callbacks=[snap, keras.callbacks.CSVLogger(str(log))])
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(0.0 <= float(r["cam_pointing_game"]) <= 1.0 for r in rows)
    assert [float(r["cam_pointing_game"]) for r in rows] == pytest.approx(history.history["cam_pointing_game"])
    # Pictures every 2 epochs (and the last): epochs 2 and 3.
    assert sorted(p.name for p in (tmp_path / "cams").glob("epoch_*.png")) == ["epoch_002.png", "epoch_003.png"]


# ------------------------------------------------------------------------------- messages that mislead


@pytest.mark.backends
def test_each_misleading_case_gets_one_clear_message():
    model = functional_model(fixed_weights())
    explainer = kc.GradCAM(model)
    x = images(n=4)
    with pytest.raises(ValueError, match=r"one input, but `images` is a list of 4 items.*np.stack\(images\)"):
        explainer(list(x))
    np.testing.assert_allclose(explainer([x]), explainer(x), atol=1e-6)  # a list of one batch is fine

    def generator():
        yield x

    with pytest.raises(ValueError, match="images is an iterator or generator; explainers take arrays"):
        explainer(generator())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with pytest.raises(ValueError, match=r"images is a tf.data.Dataset.*for x, \*_ in data: explainer\(x\)"):
            explainer(tf.data.Dataset.from_tensor_slices(x).batch(2))
    # explain_labels on per-pixel outputs: what it needs, and what to do instead.
    keras.utils.set_random_seed(0)
    seg = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Conv2D(4, 3, padding="same", name="c"),
                            keras.layers.Conv2D(2, 1, activation="sigmoid")])
    with pytest.raises(ValueError, match=r"explain_labels needs a multi-label classifier with outputs \(N, K\)"):
        kc.GradCAM(seg, layer="c").explain_labels(x)
    # Errors raised inside the compiled function read as on every backend, without autograph's wrapper.
    two = keras.Model(model.inputs, [model.output, model.get_layer("gap").output])
    with pytest.raises(ValueError) as info:
        kc.GradCAM(two, layer="conv2")(x)
    assert "in user code" not in str(info.value)
    assert str(info.value).startswith("The model has several outputs; pass `targets=kc.targets.output(")


# ------------------------------------------------------------------------ command line (cases below)

import doctest  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import cv2  # noqa: E402

from keras_cam import cli  # noqa: E402
from keras_cam.visualize import headers  # noqa: E402


def _png_header(width, height):
    """A PNG signature and a valid IHDR chunk declaring width x height, and no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc


def _tiff_header(width, height):
    """A TIFF (no header reader of ours: OpenCV's own guard applies) declaring an 8-bit gray width x height
    image whose strip is missing."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 1 << 20), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd


def _lines(text):
    return text.strip().splitlines()


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A saved 24x24 CAM model, three 24x24 PNGs, an image bomb and a damaged PNG."""
    root = tmp_path_factory.mktemp("cli_hardening")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)),
                              keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
                              kc.CAMHead(3, name="head")])
    model.save(root / "model.keras")
    pictures, _, _ = kc.datasets.make_shapes(3, size=24, seed=1)
    pngs = [kc.save_image(root / f"img{i}.png", p) for i, p in enumerate(pictures)]
    (root / "bomb.png").write_bytes(_png_header(40000, 40000))  # 1.6 billion pixels declared in 33 bytes
    (root / "damaged.png").write_bytes(pngs[0].read_bytes()[:60])  # a sound header, truncated data
    return root, str(root / "model.keras"), pngs, model


# ---- 1. distinct outputs for distinct inputs


def test_duplicate_basenames_give_distinct_outputs(cli_files, tmp_path, capsys):
    root, path, pngs, model = cli_files
    pictures = {}
    for name, source in (("a/x.png", 0), ("b/x.png", 1), ("c/x.png", 2)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(pngs[source].read_bytes())
        pictures[name] = kc.visualize.read_image(pngs[source])
    jpeg = kc.save_image(tmp_path / "c/x.jpg", pictures["a/x.png"])  # beside c/x.png: same name, other format
    pictures["c/x.jpg"] = kc.visualize.read_image(jpeg)
    inputs = [str(tmp_path / n) for n in ("a/x.png", "b/x.png", "c/x.png", "c/x.jpg")]
    out = tmp_path / "out"
    assert cli.main(["explain", path, *inputs, "--out", str(out), "--save-raw"]) == 0
    stdout = _lines(capsys.readouterr().out)
    written = {"a/x.png": "a/x_gradcam", "b/x.png": "b/x_gradcam", "c/x.png": "c/x_png_gradcam",
               "c/x.jpg": "c/x_jpg_gradcam"}
    assert stdout[:4] == [f"{tmp_path / name}: {line.split(': ', 1)[1].split(' -> ')[0]} -> {out / stem}.png"
                          for (name, stem), line in zip(written.items(), stdout)]
    assert stdout[4].startswith("explained 4 images, skipped 0, in ")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == sorted(
        f"{stem}.{ext}" for stem in written.values() for ext in ("png", "npy"))
    explainer = kc.GradCAM(model)
    for name, stem in written.items():  # each file holds its own image's heatmap
        expected = explainer(pictures[name][None])[0]
        np.testing.assert_allclose(np.load(out / f"{stem}.npy"), expected, atol=1e-5)


# ---- 2. image bombs: a pixel limit read from the header, before decoding


_FORMATS = [
    ("png", ".png", []), ("jpeg", ".jpg", []), ("jpeg", ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ("bmp", ".bmp", []), ("gif", ".gif", []), ("webp", ".webp", []),  # lossless: a VP8L chunk
    ("webp", ".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),  # lossy: VP8 (with alpha below: VP8X)
]


@pytest.mark.parametrize("fmt, suffix, params", _FORMATS)
@pytest.mark.parametrize("channels", [3, 4])
def test_headers_give_the_size_opencv_decodes(tmp_path, fmt, suffix, params, channels):
    rng = np.random.default_rng(0)
    image = (rng.random((5, 7, channels)) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(suffix, image, params)
    assert ok
    data = encoded.tobytes()
    path = tmp_path / f"img{suffix}"
    path.write_bytes(data)
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert headers.read_header(path) == headers.ImageHeader(fmt, *decoded.shape[:2]) == (fmt, 5, 7)
    # Every prefix of the file: a truncated header is a ValueError (or not recognized yet), never a wrong
    # size nor another exception.
    for n in range(len(data)):
        try:
            header = headers.read_header(io.BytesIO(data[:n]))
        except ValueError as e:
            assert "truncated" in str(e), (n, e)
        else:
            assert header in (None, (fmt, 5, 7)), (n, header)
    # The limit holds for every format: 35 pixels pass a limit of 35 and not one of 34.
    assert kc.visualize.read_image(path, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ValueError, match=r"7x5 = 35 pixels, above the limit of 34 \(max_pixels\)"):
        kc.visualize.read_image(path, max_pixels=34)


def test_corrupt_and_unknown_headers():
    png = _png_header(7, 5)
    assert headers.read_header(io.BytesIO(png)) == ("png", 5, 7)
    cases = {
        png[:-1] + bytes([png[-1] ^ 1]): "IHDR checksum mismatch",
        png[:12] + b"IDAT" + png[16:]: "the first chunk is not IHDR",
        _png_header(0, 5): r"declares a 0x5 image",
        b"\xff\xd8\xff\xda\x00\x02": "no frame header before the image data",  # scan data before any frame
        b"BM" + bytes(12) + struct.pack("<I", 8) + bytes(8): "info header of 8 bytes",
        b"RIFF\0\0\0\0WEBPVP9 \0\0\0\0": "unknown first chunk",
    }
    for data, message in cases.items():
        with pytest.raises(ValueError, match=message):
            headers.read_header(io.BytesIO(data))
    # Stray bytes between JPEG segments (here after SOI and the 16-byte APP0 segment), a stuffed zero among
    # them: decoders skip them, and so does the reader, quickly.
    ok, jpeg = cv2.imencode(".jpg", np.zeros((5, 7, 3), np.uint8))
    stray = jpeg.tobytes()[:20] + bytes(1 << 20) + b"\xff\x00" + bytes(9) + jpeg.tobytes()[20:]
    assert cv2.imdecode(np.frombuffer(stray, np.uint8), cv2.IMREAD_COLOR).shape == (5, 7, 3)
    start = time.perf_counter()
    assert headers.read_header(io.BytesIO(stray)) == ("jpeg", 5, 7)
    assert time.perf_counter() - start < 0.5
    ok, tiff = cv2.imencode(".tif", np.zeros((5, 7, 3), np.uint8))
    assert headers.read_header(io.BytesIO(tiff.tobytes())) is None  # OpenCV's own guard
    assert headers.read_header(io.BytesIO(b"")) is None
    failures, attempted = doctest.testmod(headers)
    assert attempted > 0 and failures == 0


def test_an_image_bomb_is_refused_from_its_header_without_decoding(cli_files, monkeypatch):
    root, _, pngs, _ = cli_files

    def decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", decode)
    start = time.perf_counter()
    message = (r"'.*bomb.png' has 40000x40000 = 1,600,000,000 pixels, above the limit of 178,956,970 "
               r"\(max_pixels\); raise max_pixels if you trust the file")
    with pytest.raises(ValueError, match=message):
        kc.visualize.read_image(root / "bomb.png")
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match=r"`size` \(100000, 100000\) is 10,000,000,000 pixels, above "):
        kc.visualize.read_image(pngs[0], size=(100000, 100000))
    with pytest.raises(ValueError, match="`max_pixels` must be a positive integer or None, got 0"):
        kc.visualize.read_image(pngs[0], max_pixels=0)


def test_other_formats_meet_opencvs_own_limit(tmp_path):
    # A TIFF declaring 40000 x 40000: above OpenCV's default (2**30) and keras_cam's; OpenCV refuses it.
    path = tmp_path / "bomb.tif"
    path.write_bytes(_tiff_header(40000, 40000))
    for limit in (kc.visualize.DEFAULT_MAX_PIXELS, None):
        with pytest.raises(ValueError, match="larger than the OPENCV_IO_MAX_IMAGE_PIXELS .* variable allows"):
            kc.visualize.read_image(path, max_pixels=limit)


def test_import_sets_opencvs_pixel_limit_before_cv2_and_keeps_the_users():
    # A fresh interpreter: keras_cam first, then cv2 (as `keras-cam` and `import keras_cam` before keras do).
    code = ("import os, sys, numpy as np; sys.path.insert(0, os.getcwd()); import keras_cam, cv2\n"
            "try:\n"
            "    cv2.imdecode(np.frombuffer(bytes.fromhex(sys.argv[1]), np.uint8), cv2.IMREAD_COLOR)\n"
            "    print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], 'not refused')\n"
            "except cv2.error as e:\n"
            "    refused = 'CV_IO_MAX_IMAGE_PIXELS' in str(e)\n"
            "    print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], 'refused' if refused else e)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}

    def run(side, **extra):
        proc = subprocess.run([sys.executable, "-c", code, _tiff_header(side, side).hex()],
                              capture_output=True, text=True, timeout=120, env={**env, **extra})
        return proc.stdout.strip()

    assert kc.visualize.DEFAULT_MAX_PIXELS == 178_956_970 and 13380 ** 2 > 178_956_970
    assert run(13380) == "178956970 refused"  # just above the default: refused before any allocation
    assert run(40, OPENCV_IO_MAX_IMAGE_PIXELS="1000") == "1000 refused"  # the user's own value is kept


def test_sizes_above_the_limit_are_refused_before_any_work(cli_files, tmp_path, capsys):
    root, path, pngs, _ = cli_files
    assert cli.main(["explain", str(root / "missing.keras"), str(pngs[0]), "--size", "100000", "100000"]) == 2
    assert _lines(capsys.readouterr().err) == [
        "keras-cam: error: --size 100000x100000 = 10,000,000,000 pixels, above the limit of 178,956,970 "
        "(--max-pixels); pass a smaller --size"]
    # A 20 KB model that declares 100000 x 100000 inputs (GlobalAveragePooling2D and Dense: no big weights).
    huge = keras.Sequential([keras.Input((100000, 100000, 3)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2)])
    huge.save(tmp_path / "huge.keras")
    out = tmp_path / "out"
    assert cli.main(["explain", str(tmp_path / "huge.keras"), str(pngs[0]), "--out", str(out)]) == 2
    assert _lines(capsys.readouterr().err) == [
        "keras-cam: error: the model's input size is 100000x100000 = 10,000,000,000 pixels, above the limit "
        "of 178,956,970 (--max-pixels); raise --max-pixels if you mean it, or pass a smaller --size if the "
        "model accepts one"]
    assert not out.exists()
    assert cli.main(["explain", path, str(pngs[0]), "--max-pixels", "575", "--out", str(out)]) == 2  # 24 x 24
    assert "24x24 = 576 pixels, above the limit of 575" in capsys.readouterr().err


def test_an_image_bomb_in_a_subprocess_is_one_line(cli_files):
    root, path, _, _ = cli_files
    argv = ["explain", path, str(root / "bomb.png"), "--out", str(root / "bomb_out")]
    proc = subprocess.run([sys.executable, "-m", "keras_cam", *argv], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"keras-cam: skipped {root / 'bomb.png'}: 40000x40000 = 1,600,000,000 pixels, above the limit of "
        "178,956,970 (--max-pixels); raise --max-pixels if you trust the file"]
    assert proc.stdout.startswith("explained 0 images, skipped 1, in ")
    assert not (root / "bomb_out").exists()


class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, without importing torch
    pass


@pytest.mark.parametrize("error, line", [
    (MemoryError(), "out of memory (MemoryError)"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 28.00 GiB"),
     "out of memory (CUDA out of memory."),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 30000000000 bytes."),
     "out of memory (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 30000000000 bytes.)"),
    (cv2.error("OpenCV(5.0.0) /io/opencv/modules/core/src/alloc.cpp:73: error: (-4:Insufficient memory) "
               "Failed to allocate 30000000000 bytes in function 'OutOfMemoryError'\n"),
     "out of memory ((-4:Insufficient memory) Failed to allocate 30000000000 bytes in function"),
    (cv2.error("OpenCV(5.0.0) /io/x.cpp:79: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS "
               "in function 'validateInputImageSize'\n"),
     "(-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'"),
])
def test_decoder_and_allocation_errors_are_one_line(cli_files, monkeypatch, capsys, error, line):
    _, path, _, _ = cli_files

    def run(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "filters", cli.COMMANDS["filters"]._replace(run=run))
    assert cli.main(["filters", path, "--layer", "conv"]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"keras-cam: error: {line}")


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(cli_files, monkeypatch, capsys):
    _, path, _, _ = cli_files

    def run(args):
        raise KeyError("boom")

    monkeypatch.setitem(cli.COMMANDS, "filters", cli.COMMANDS["filters"]._replace(run=run))
    assert cli.main(["filters", path, "--layer", "conv"]) == cli.INTERNAL_ERROR == 3
    line = "keras-cam: error: KeyError: 'boom' (unexpected: set KERAS_CAM_DEBUG=1 for the traceback)"
    assert _lines(capsys.readouterr().err) == [line]
    monkeypatch.setenv("KERAS_CAM_DEBUG", "1")
    assert cli.main(["filters", path, "--layer", "conv"]) == 3
    err = _lines(capsys.readouterr().err)
    assert err[0] == "Traceback (most recent call last):"
    assert err[-2:] == ["KeyError: 'boom'", line]


# ---- 3. unreadable files are skipped, one line each, with a summary and an exit status


def test_unreadable_files_are_skipped_with_a_summary(cli_files, tmp_path, capsys):
    root, path, pngs, model = cli_files
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    inputs = [str(pngs[0]), str(tmp_path / "missing.png"), str(tmp_path / "empty.png"),
              str(root / "bomb.png"), str(tmp_path / "notes.txt"), str(root / "damaged.png"), str(pngs[1])]
    out = tmp_path / "out"
    assert cli.main(["explain", path, *inputs, "--out", str(out), "--batch-size", "2", "--save-raw"]) == 1
    captured = capsys.readouterr()
    err = _lines(captured.err)
    assert err[:-1] == [
        f"keras-cam: skipped {tmp_path / 'missing.png'}: does not exist (or is not a file)",
        f"keras-cam: skipped {tmp_path / 'empty.png'}: the file is empty",
        f"keras-cam: skipped {root / 'bomb.png'}: 40000x40000 = 1,600,000,000 pixels, above the limit of "
        "178,956,970 (--max-pixels); raise --max-pixels if you trust the file",
        f"keras-cam: skipped {tmp_path / 'notes.txt'}: not an image format OpenCV can read",
    ]
    # A sound header: found when decoding, in the middle of the run, and skipped the same way. Our words
    # only: what follows them is the image library's own text, which differs between builds.
    assert err[-1].startswith(f"keras-cam: skipped {root / 'damaged.png'}: OpenCV cannot decode it "
                              "(unsupported format, or a corrupt or truncated file)")
    stdout = _lines(captured.out)
    assert [line.split(":")[0] for line in stdout[:2]] == [str(pngs[0]), str(pngs[1])]
    assert stdout[2].startswith("explained 2 images, skipped 5, in ") and stdout[2].endswith(" s")
    # Outputs from the common parent folder of every input, skipped or not.
    rel = os.path.relpath(root, os.path.commonpath([root, tmp_path]))
    explainer = kc.GradCAM(model)
    for png in pngs[:2]:
        expected = explainer(kc.visualize.read_image(png)[None])[0]
        np.testing.assert_allclose(np.load(out / rel / f"{png.stem}_gradcam.npy"), expected, atol=1e-5)
    # None explained: exit status 2, and no output folder.
    assert cli.main(["explain", path, str(root / "bomb.png"), str(tmp_path / "missing.png"), "--out",
                     str(tmp_path / "none")]) == 2
    assert capsys.readouterr().out.startswith("explained 0 images, skipped 2, in ")
    assert not (tmp_path / "none").exists()


# ---- 4. messages that name the fix


def test_an_empty_or_truncated_keras_file_is_named_as_such(cli_files, tmp_path, capsys):
    _, path, pngs, _ = cli_files
    (tmp_path / "empty.keras").write_bytes(b"")
    data = open(path, "rb").read()
    (tmp_path / "truncated.keras").write_bytes(data[: len(data) // 2])
    for name in ("empty.keras", "truncated.keras"):
        assert cli.main(["explain", str(tmp_path / name), str(pngs[0]), "--out", str(tmp_path / "out")]) == 2
        assert _lines(capsys.readouterr().err) == [
            f"keras-cam: error: cannot load '{tmp_path / name}' as a Keras model: it is not a valid .keras "
            "archive (empty, truncated or corrupt); save the model again with model.save('model.keras')"]
    assert not (tmp_path / "out").exists()


def test_autograph_wrappers_are_stripped_to_the_original_message():
    wrapped = ValueError(
        'in user code:\n\n    File "/x/keras_cam/explainers/base.py", line 251, in fn  *\n        a = f(x)\n'
        '    File "/x/keras_cam/targets.py", line 172, in _select  *\n        raise ValueError(f"...")\n\n'
        "    ValueError: Output index 5 is out of range:\n    the model has 2 outputs.\n")
    assert cli._common.one_line(wrapped) == "Output index 5 is out of range: the model has 2 outputs."
    assert cli._common.one_line(TypeError(str(wrapped).replace("ValueError: ", "KeyError: "))) == (
        "KeyError: Output index 5 is out of range: the model has 2 outputs.")
    assert cli._common.one_line(ValueError("plain\n  message")) == "plain message"


@pytest.mark.backends
def test_output_picks_one_output_of_a_two_output_model(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, [keras.layers.Dense(3, name="species")(pooled),
                                 keras.layers.Dense(2, name="age")(pooled)])
    model.save(tmp_path / "two.keras")
    picture = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    png = kc.save_image(tmp_path / "x.png", picture)
    x = kc.visualize.read_image(png)[None]
    for output, target, name in (("age", 1, "age"), ("1", None, "age"), ("0", 2, "species")):
        out = tmp_path / f"out_{output}_{target}"
        argv = ["explain", str(tmp_path / "two.keras"), str(png), "--output", output, "--out", str(out),
                "--save-raw"]
        assert cli.main(argv + (["--target", str(target)] if target is not None else [])) == 0
        result = kc.GradCAM(model).compute(x, targets=kc.targets.output(name, class_index=target))
        np.testing.assert_allclose(np.load(out / "x_gradcam.npy"), result.heatmaps[0], atol=1e-5)
        label = repr(output if not output.isdigit() else int(output))
        cls = f" class {target}" if target is not None else ""
        assert _lines(capsys.readouterr().out)[0] == (
            f"{png}: output {label}{cls} score {result.scores[0]:.4f} -> {out / 'x_gradcam'}.png")
    assert cli.main(["explain", str(tmp_path / "two.keras"), str(png), "--out", str(tmp_path / "none")]) == 2
    assert _lines(capsys.readouterr().err) == [
        "keras-cam: error: the model has 2 outputs ('species', 'age'); choose the one to explain with "
        "--output NAME|INDEX (and its class with --target)"]
    for output, message in (("5", "Output index 5 is out of range: the model has 2 outputs."),
                            ("size", "Output 'size' not found; the model's outputs are ['species', 'age']: "
                                     "pass its index instead.")):
        assert cli.main(["explain", str(tmp_path / "two.keras"), str(png), "--output", output, "--out",
                         str(tmp_path / "none")]) == 2
        assert _lines(capsys.readouterr().err) == [f"keras-cam: error: {message}"]  # no autograph wrapper
    assert not (tmp_path / "none").exists()
