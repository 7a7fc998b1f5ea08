"""`keras-cam explain` (cli/explain.py): distinct outputs for distinct inputs, sizes and image bombs refused
before any work, unreadable files skipped one line each with a summary and an exit status, one output of a
model with several, and messages that name the fix. The `cli_files` fixture is in tests/conftest.py."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import cli
from tests.helpers import text_lines


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
    stdout = text_lines(capsys.readouterr().out)
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


def test_sizes_above_the_limit_are_refused_before_any_work(cli_files, tmp_path, capsys):
    root, path, pngs, _ = cli_files
    assert cli.main(["explain", str(root / "missing.keras"), str(pngs[0]), "--size", "100000", "100000"]) == 2
    assert text_lines(capsys.readouterr().err) == [
        "keras-cam: error: --size 100000x100000 = 10,000,000,000 pixels, above the limit of 178,956,970 "
        "(--max-pixels); pass a smaller --size"]
    # A 20 KB model that declares 100000 x 100000 inputs (GlobalAveragePooling2D and Dense: no big weights).
    huge = keras.Sequential([keras.Input((100000, 100000, 3)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2)])
    huge.save(tmp_path / "huge.keras")
    out = tmp_path / "out"
    assert cli.main(["explain", str(tmp_path / "huge.keras"), str(pngs[0]), "--out", str(out)]) == 2
    assert text_lines(capsys.readouterr().err) == [
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


def test_unreadable_files_are_skipped_with_a_summary(cli_files, tmp_path, capsys):
    root, path, pngs, model = cli_files
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    inputs = [str(pngs[0]), str(tmp_path / "missing.png"), str(tmp_path / "empty.png"),
              str(root / "bomb.png"), str(tmp_path / "notes.txt"), str(root / "damaged.png"), str(pngs[1])]
    out = tmp_path / "out"
    assert cli.main(["explain", path, *inputs, "--out", str(out), "--batch-size", "2", "--save-raw"]) == 1
    captured = capsys.readouterr()
    err = text_lines(captured.err)
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
    stdout = text_lines(captured.out)
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
        assert text_lines(capsys.readouterr().err) == [
            f"keras-cam: error: cannot load '{tmp_path / name}' as a Keras model: it is not a valid .keras "
            "archive (empty, truncated or corrupt); save the model again with model.save('model.keras')"]
    assert not (tmp_path / "out").exists()


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
        assert text_lines(capsys.readouterr().out)[0] == (
            f"{png}: output {label}{cls} score {result.scores[0]:.4f} -> {out / 'x_gradcam'}.png")
    assert cli.main(["explain", str(tmp_path / "two.keras"), str(png), "--out", str(tmp_path / "none")]) == 2
    assert text_lines(capsys.readouterr().err) == [
        "keras-cam: error: the model has 2 outputs ('species', 'age'); choose the one to explain with "
        "--output NAME|INDEX (and its class with --target)"]
    for output, message in (("5", "Output index 5 is out of range: the model has 2 outputs."),
                            ("size", "Output 'size' not found; the model's outputs are ['species', 'age']: "
                                     "pass its index instead.")):
        assert cli.main(["explain", str(tmp_path / "two.keras"), str(png), "--output", output, "--out",
                         str(tmp_path / "none")]) == 2
        assert text_lines(capsys.readouterr().err) == [f"keras-cam: error: {message}"]  # no autograph wrapper
    assert not (tmp_path / "none").exists()
