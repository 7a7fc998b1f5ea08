"""The `keras-cam` command line (explain, filters, demo): end to end on a saved model and PNG files, help,
usage errors and library errors as one line with exit status 2."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((24, 24, 3)),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
        kc.CAMHead(3, name="head"),
    ])
    path = str(root / "model.keras")
    model.save(path)
    images, _, _ = kc.datasets.make_shapes(3, size=40, seed=1)  # other size: the CLI resizes
    pngs = [str(kc.save_image(root / f"img{i}.png", img)) for i, img in enumerate(images)]
    (root / "notes.txt").write_text("not a model")
    return root, path, pngs, model


def test_explain_end_to_end_in_a_subprocess(saved):
    root, path, pngs, model = saved
    out = root / "out"
    proc = subprocess.run([sys.executable, "-m", "keras_cam", "explain", path, *pngs, "--method", "gradcam++",
                           "--out", str(out), "--save-raw", "--batch-size", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted([f"img{i}_gradcampp.{ext}" for i in range(3) for ext in ("png", "npy")])
    lines = [line for line in proc.stdout.splitlines() if "score" in line]
    assert len(lines) == 3
    # The saved heatmap is the library's own for the same resized image.
    picture = kc.visualize.read_image(pngs[0], (24, 24))[None]
    expected = kc.GradCAMPlusPlus(model)(picture)
    np.testing.assert_allclose(np.load(out / "img0_gradcampp.npy"), expected[0], atol=1e-4)
    predicted = int(np.argmax(keras.ops.convert_to_numpy(model(picture))))
    assert f"class {predicted} " in lines[0]


def test_error_in_a_subprocess_is_one_line_exit_2(saved):
    root, path, pngs, _ = saved
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the CLI quiets TF itself
    proc = subprocess.run([sys.executable, "-m", "keras_cam", "explain", path, str(root / "missing.png")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2  # nothing could be explained
    # Exactly one line: no traceback, and none of the backend's start-up logs either.
    assert proc.stderr.splitlines() == [
        f"keras-cam: skipped {root / 'missing.png'}: does not exist (or is not a file)"]
    assert proc.stdout.startswith("explained 0 images, skipped 1, in ")


@pytest.mark.parametrize("args, message", [
    (["explain", "{root}/nope.keras", "{png}"], "model file '{root}/nope.keras' does not exist"),
    (["explain", "{root}/notes.txt", "{png}"], "cannot load '{root}/notes.txt' as a Keras model"),
    (["explain", "{model}", "{png}", "--layer", "conv"], "Layer 'conv' not found"),
    (["explain", "{model}", "{png}", "--method", "gradkam"], "Unknown method 'gradkam'. Available methods: gradcam"),
    (["explain", "{model}", "{png}", "--target", "7"], "Target index 7 is out of range"),
    (["filters", "{model}", "--layer", "nope", "--out", "{root}/f.png"], "Layer 'nope' not found"),
])
def test_errors_are_one_line(saved, capsys, monkeypatch, tmp_path, args, message):
    root, path, pngs, _ = saved
    monkeypatch.chdir(tmp_path)  # where the default --out, cam_out, would go
    fill = dict(root=root, png=pngs[0], model=path)
    assert cli.main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-cam: error: ")
    assert message.format(**fill) in err[0]
    assert os.listdir(tmp_path) == []  # no output folder for work that failed before its first image


def test_filters_command(saved, tmp_path, capsys):
    _, path, _, _ = saved
    out = tmp_path / "grid.png"
    assert cli.main(["filters", path, "--layer", "conv2", "--filters", "4", "--steps", "3", "--out", str(out)]) == 0
    grid = kc.visualize.read_image(out)
    assert grid.shape == (2 * 24 + 5, 2 * 24 + 5, 3)
    assert "4 filters of 'conv2'" in capsys.readouterr().out


def test_help_for_each_command(capsys):
    for command in ("explain", "filters", "demo"):
        assert cli.main([command, "--help"]) == 0
        assert "usage: keras-cam " + command in capsys.readouterr().out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"keras-cam {kc.__version__}\n"


def test_each_command_is_declared_once_in_the_registry(capsys):
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    assert list(subparsers.choices) == list(cli.COMMANDS) == ["explain", "filters", "demo", "audit"]
    helps = {a.dest: a.help for a in subparsers._choices_actions}
    for name, command in cli.COMMANDS.items():
        assert subparsers.choices[name].description == command.description
        assert helps[name] == command.help
        assert subparsers.choices[name].get_default("_run") is command.run
    assert cli.main(["explain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when every image was explained, 1 when some were skipped, 2 when none" in text
    assert "--output NAME|INDEX" in text and "--max-pixels N" in text


def test_explain_takes_folders_recursively_in_order_and_leaves_out_its_own_outputs(saved, tmp_path, capsys):
    root, path, pngs, _ = saved
    photos = tmp_path / "photos"
    for name, png in (("b.png", pngs[0]), ("a/z.png", pngs[1]), ("a/y.png", pngs[2])):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_bytes(open(png, "rb").read())
    (photos / "notes.txt").write_text("not an image")  # not an image suffix: not taken from a folder
    (tmp_path / "empty").mkdir()
    out = photos / "cam"  # inside the folder explained: a second run must not explain the first's overlays
    for _ in range(2):
        assert cli.main(["explain", path, str(photos), str(tmp_path / "empty"), "--out", str(out)]) == 1
        captured = capsys.readouterr()
        lines = captured.out.splitlines()
        explained = [line.split(":")[0] for line in lines[:3]]
        assert explained == [str(photos / n) for n in ("a/y.png", "a/z.png", "b.png")]
        assert lines[3].startswith("explained 3 images, skipped 1, in ")
        assert captured.err == f"keras-cam: skipped {tmp_path / 'empty'}: a folder without image files\n"
    overlays = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert overlays == ["a", "a/y_gradcam.png", "a/z_gradcam.png", "b_gradcam.png"]


def test_output_stems_are_distinct_and_never_an_input(tmp_path):
    def stems(names, out="out"):
        return [os.path.relpath(s, tmp_path) for s in cli.explain._output_stems([str(tmp_path / n) for n in names],
                                                                        str(tmp_path / out), "gradcam")]

    # Folders relative to the inputs' common parent; names that would clash get their extension.
    assert stems(["a/x.png", "b/x.png", "c/x.png", "c/x.jpg"]) == [
        "out/a/x_gradcam", "out/b/x_gradcam", "out/c/x_png_gradcam", "out/c/x_jpg_gradcam"]
    assert stems(["p/q/x.png", "p/q/y.png"]) == ["out/x_gradcam", "out/y_gradcam"]
    # Equal but for case (one file on macOS and Windows), then a number; a clash with an unrelated name.
    assert stems(["x.png", "X.PNG", "x_png.png"]) == [
        "out/x_png_gradcam-2", "out/X_PNG_gradcam-3", "out/x_png_gradcam"]
    # --out is the input folder: an overlay never replaces an input, nor a .npy.
    assert stems(["x.png", "x_gradcam.png", "y", "y_gradcam.npy"], out=".") == [
        "x_png_gradcam", "x_gradcam_gradcam", "y_gradcam-2", "y_gradcam_gradcam"]


# ------------------------------------------------------------------------------------------------- demo


def test_cli_help_exits_zero(capsys):
    for argv in (["--help"], ["demo", "--help"]):
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "--epochs" in out and "--no-compare" in out and "{shapes,signals,volumes,shortcut,boxes}" in out


def test_cli_usage_errors_exit_two_with_one_line(capsys):
    usage_errors = (["demo", "--epochs", "0"], ["demo", "--seed", "x"], ["demo", "--data", "audio"], ["nope"], [])
    for argv in usage_errors:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("keras-cam"), err
    assert cli.main(["demo", "--epochs", "0"]) == 2
    assert "--epochs: expected a positive integer, got 0" in capsys.readouterr().err


def test_cli_library_errors_are_one_line_exit_two(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    # --out names an existing file: the demo cannot create its folder (an OSError from the library).
    code = cli.main(["demo", "--epochs", "1", "--out", str(blocker / "sub")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-cam: error: ")


def test_filters_command_options(saved, tmp_path, capsys):
    _, path, _, _ = saved
    out = tmp_path / "grid.png"
    args = ["filters", path, "--layer", "conv2", "--filters", "2", "--steps", "2", "--out", str(out)]
    assert cli.main(args + ["--param", "pixel", "--transforms", "none"]) == 0
    pixel = kc.visualize.read_image(out)
    assert cli.main(args) == 0  # the default: fourier with transforms
    assert np.abs(kc.visualize.read_image(out) - pixel).max() > 0.1  # another parameterization and picture
    assert cli.main(args + ["--objective", "neuron", "--diversity", "2"]) == 0
    diverse = kc.visualize.read_image(out)
    assert diverse.shape == (2 * 24 + 5, 2 * 24 + 5, 3)  # 2 filters x 2 patterns, one row per filter
    assert cli.main(args + ["--param", "wavelet"]) == 2
    assert "invalid choice: 'wavelet'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ explain --store


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_explain_into_a_store_equals_the_overlay_path_and_resumes(saved, tmp_path, capsys, monkeypatch):
    pytest.importorskip("zarr")
    root, path, pngs, _ = saved
    # The in-memory path (one overlay and .npy per image) is the oracle for the store's rows.
    assert cli.main(["explain", path, *pngs, "--out", str(tmp_path / "out"), "--save-raw"]) == 0
    capsys.readouterr()
    store, overlays = str(tmp_path / "maps.zarr"), tmp_path / "overlays"
    args = ["explain", path, *pngs, "--store", store, "--overlays", str(overlays), "--batch-size", "2"]
    assert cli.main(args) == 0
    last = _lines(capsys.readouterr().out)[-1]
    assert last.startswith("explained 3 images, skipped 0, in ") and last.endswith(f"-> {store} (3 maps)")
    written = kc.open_store(store)
    assert len(written) == 3 and written.complete and written["heatmaps"].dtype == np.float16
    expected = np.stack([np.load(tmp_path / "out" / f"img{i}_gradcam.npy") for i in range(3)])
    np.testing.assert_allclose(written["heatmaps"][:], expected, atol=1e-3)  # float16
    assert [os.path.basename(p) for p in written["paths"][:]] == [os.path.basename(p) for p in pngs]
    picture = np.stack([kc.visualize.read_image(p, (24, 24)) for p in pngs])
    result = kc.GradCAM(saved[3]).compute(picture)
    np.testing.assert_array_equal(written["targets"][:], result.targets)
    np.testing.assert_allclose(written["scores"][:], result.scores, rtol=1e-5)
    for i in range(3):  # the same overlays as the per-image path
        name = f"img{i}_gradcam.png"
        np.testing.assert_array_equal(kc.visualize.read_image(overlays / name),
                                      kc.visualize.read_image(tmp_path / "out" / name))
    # A second run resumes: nothing is explained again, the store stays as it is.
    before = {k: written[k][:] for k in written.keys()}
    with monkeypatch.context() as m:
        m.setattr(kc.BaseCAM, "compute", lambda *a, **k: pytest.fail("a complete store was explained again"))
        assert cli.main(args) == 0
    assert _lines(capsys.readouterr().out)[-1].startswith("explained 0 images, skipped 0, in ")
    again = kc.open_store(store)
    assert all(np.array_equal(again[k][:], v) for k, v in before.items())
    # Another method: refused with one line naming the difference and the option that starts over.
    assert cli.main(args + ["--method", "gradcam++"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"keras-cam: error: Cannot resume the store '{store}'")
    assert "method is 'gradcam' in the store and 'gradcam++' now" in err[0] and "--no-resume" in err[0]
    assert all(np.array_equal(kc.open_store(store)[k][:], v) for k, v in before.items())
    # ...as is another --scale (the store's settings record it); --no-resume starts over.
    assert cli.main(args + ["--scale", "tf"]) == 2
    assert "scale(mode='tf')" in capsys.readouterr().err
    assert cli.main(args + ["--method", "gradcam++", "--no-resume"]) == 0
    assert kc.open_store(store).settings["method"] == "gradcam++"


@pytest.mark.backends
def test_explain_store_takes_every_picture_option(tmp_path, capsys):
    """--size, --alpha, --colormap and --save-raw with --store: the store's rows are the maps of images
    resized to --size, and the pictures under --overlays are those the run without --store writes."""
    pytest.importorskip("zarr")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((None, None, 3)),  # any size: --size is needed, with --store too
                              keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
                              kc.CAMHead(3, name="head")])
    path = str(tmp_path / "any.keras")
    model.save(path)
    images, _, _ = kc.datasets.make_shapes(3, size=40, seed=2)
    pngs = [str(kc.save_image(tmp_path / f"in{i}.png", img)) for i, img in enumerate(images)]
    style = ["--size", "32", "28", "--alpha", "0.8", "--colormap", "viridis", "--save-raw",
             "--batch-size", "2"]
    assert cli.main(["explain", path, *pngs, *style, "--out", str(tmp_path / "out")]) == 0
    store, overlays = str(tmp_path / "maps.zarr"), tmp_path / "overlays"
    assert cli.main(["explain", path, *pngs, *style, "--store", store, "--overlays", str(overlays)]) == 0
    assert _lines(capsys.readouterr().out)[-1].endswith(f"-> {store} (3 maps)")
    written = kc.open_store(store)
    assert written["heatmaps"].shape == (3, 32, 28) and written.settings["size"] == [32, 28]
    expected = kc.GradCAM(model).compute(np.stack([kc.visualize.read_image(p, (32, 28)) for p in pngs]))
    np.testing.assert_allclose(written["heatmaps"][:], expected.heatmaps, atol=1e-3)  # float16
    np.testing.assert_array_equal(written["targets"][:], expected.targets)
    for i in range(3):
        raw = np.load(overlays / f"in{i}_gradcam.npy")
        assert raw.shape == (32, 28)
        np.testing.assert_array_equal(raw.astype(np.float16), written["heatmaps"][i])  # the store's row
        np.testing.assert_array_equal(raw, np.load(tmp_path / "out" / f"in{i}_gradcam.npy"))
        picture = kc.visualize.read_image(overlays / f"in{i}_gradcam.png")
        assert picture.shape == (32, 28, 3)
        without = kc.visualize.read_image(tmp_path / "out" / f"in{i}_gradcam.png")
        np.testing.assert_array_equal(picture, without)
        # alpha and colormap as given: the overlay is the one `kc.overlay` makes with them (8-bit PNG)
        own = kc.overlay(kc.visualize.read_image(pngs[i], (32, 28)), raw, alpha=0.8, colormap="viridis")
        own = np.asarray(own, np.float32) / (255.0 if own.dtype == np.uint8 else 1.0)
        np.testing.assert_allclose(picture, own, atol=1 / 255 + 1e-6)
    # The store records --size: another size starts no resume, and any-size models need --size.
    assert cli.main(["explain", path, *pngs, *style[:1], "24", "24", "--store", store]) == 2
    assert "size is [32, 28] in the store and [24, 24] now" in capsys.readouterr().err
    assert cli.main(["explain", path, pngs[0], "--store", str(tmp_path / "other.zarr")]) == 2
    assert "the model accepts any image size; pass --size H W" in capsys.readouterr().err


def test_explain_store_with_box_stores_every_box_map_and_draws_them(tmp_path, capsys):
    """--box with --store: the store's rows are the (K, H, W) maps of the boxes, the .npy beside each
    box's picture is its row; the same maps as without --store, whatever the batch size."""
    pytest.importorskip("zarr")
    from keras_cam.demo.boxes import build_box_detector

    keras.utils.set_random_seed(0)
    path = str(tmp_path / "detector.keras")
    build_box_detector((32, 32, 3), 3).save(path)
    images, _, _ = kc.datasets.make_shapes(3, size=32, seed=1)
    pngs = [str(kc.save_image(tmp_path / f"img{i}.png", img)) for i, img in enumerate(images)]
    box = ["--box", "all", "--min-score", "0", "--layer", "features", "--save-raw"]
    assert cli.main(["explain", path, *pngs, *box, "--out", str(tmp_path / "out"), "--batch-size", "3"]) == 0
    store, overlays = str(tmp_path / "boxes.zarr"), tmp_path / "overlays"
    assert cli.main(["explain", path, *pngs, *box, "--store", store, "--overlays", str(overlays),
                     "--batch-size", "2"]) == 0
    assert _lines(capsys.readouterr().out)[-1].endswith(f"-> {store} (3 maps)")
    written = kc.open_store(store)
    assert written["heatmaps"].shape == (3, 20, 32, 32) and written["scores"].shape == (3, 20)
    for i in range(3):
        for k in (0, 7, 19):
            raw = np.load(overlays / f"img{i}_gradcam_box{k}.npy")
            np.testing.assert_array_equal(raw.astype(np.float16), written["heatmaps"][i, k])
            without = np.load(tmp_path / "out" / f"img{i}_gradcam_box{k}.npy")
            np.testing.assert_allclose(raw, without, atol=1e-5)
            assert kc.visualize.read_image(overlays / f"img{i}_gradcam_box{k}.png").shape == (32, 32, 3)


def test_explain_store_errors_are_one_line_exit_2(saved, tmp_path, capsys, monkeypatch):
    pytest.importorskip("zarr")
    root, path, pngs, _ = saved
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cases = [
        (["--store", str(blocker / "maps.zarr")], f"cannot write the store '{blocker / 'maps.zarr'}'"),
        (["--store", str(blocker)], f"'{blocker}' exists and is not a zarr store; pass a new --store path"),
        (["--overlays", str(tmp_path / "o")], "--overlays and --no-resume go with --store PATH"),
        (["--store", str(tmp_path / "s.zarr"), "--save-raw", "--alpha", "0.7"],
         "with --store, --save-raw, --alpha go with --overlays DIR"),
    ]
    for extra, message in cases:
        assert cli.main(["explain", path, pngs[0], *extra]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("keras-cam: error: ") and message in err[0], err

    def no_zarr():
        raise ImportError('Heatmap stores need zarr 3: pip install "keras-cam[zarr]" (or "zarr>=3.0.8").')

    monkeypatch.setattr(kc.store, "_zarr", no_zarr)
    assert cli.main(["explain", path, pngs[0], "--store", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ['keras-cam: error: --store: Heatmap stores need zarr 3: pip install "keras-cam[zarr]" '
                   '(or "zarr>=3.0.8").']
    assert sorted(os.listdir(tmp_path)) == ["file"]  # nothing written by a run that failed


def test_the_backend_is_the_one_set_else_an_installed_one():
    from keras_cam.cli import backend_to_use

    only = lambda *names: (lambda name: name in names)  # noqa: E731
    assert backend_to_use({"KERAS_BACKEND": "torch"}, "tensorflow", only("jax")) == "torch"
    assert backend_to_use({}, "tensorflow", only("tensorflow", "jax")) == "tensorflow"
    assert backend_to_use({}, "tensorflow", only("jax", "torch")) == "jax"  # a JAX user without TensorFlow
    assert backend_to_use({}, "torch", only("jax", "torch")) == "torch"  # keras.json's choice first
    assert backend_to_use({}, "tensorflow", only()) is None


def test_version_and_help_need_no_backend():
    import subprocess
    import sys

    env = dict(os.environ, KERAS_BACKEND="nope")
    run = lambda *args: subprocess.run([sys.executable, "-m", "keras_cam", *args], env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("keras-cam ")
    helped = run("--help")
    assert helped.returncode == 0 and "explain" in helped.stdout and "filters" in helped.stdout
    assert "KERAS_BACKEND is 'nope', which keras-cam does not run on" in helped.stdout
    failed = run("explain", "model.keras", "image.png")
    assert failed.returncode == 2 and failed.stderr.strip().splitlines() == [
        "keras-cam: error: KERAS_BACKEND is 'nope', which keras-cam does not run on: set it to tensorflow, jax "
        "or torch"]
