"""kc.integrations.ray.Explainer: on a local Ray cluster and called directly, its maps, classes and scores
equal those `kc.explain_dataset` makes from the same image files; bad arguments give one clear error."""
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_cam as kc
from tests.models import tiny_cam_model

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

SIZE = 24  # the model's input; the files are larger and smaller, so both resizes are checked


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    model = tiny_cam_model((SIZE, SIZE, 3))
    path = str(root / "model.keras")
    model.save(path)
    big, _, _ = kc.datasets.make_shapes(4, size=40, seed=1)
    small, _, _ = kc.datasets.make_shapes(2, size=16, seed=2)
    folder = root / "images"
    pngs = [str(kc.save_image(folder / f"img{i}.png", image)) for i, image in enumerate([*big, *small])]
    return path, pngs, model


@pytest.fixture(scope="module")
def local_ray():
    # The workers import Keras themselves: they must get the suite's backend.
    env = {"KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    # One CPU for the worker, one to read the files (with every CPU held by workers, no read could start).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _pixels(pngs):
    """The files' uint8 pixels, as `ray.data.read_images` gives them (each its own size)."""
    images = np.empty(len(pngs), dtype=object)
    images[:] = [kc.visualize.to_uint8(kc.visualize.read_image(p)) for p in pngs]
    return images


def _same(result, expected, atol=1e-5):
    np.testing.assert_allclose(result["heatmap"], expected.heatmaps, atol=atol)
    np.testing.assert_array_equal(result["target"], expected.targets)
    np.testing.assert_allclose(result["score"], expected.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ray_map_batches_equals_the_local_explainer(files, local_ray):
    path, pngs, model = files
    from keras_cam.integrations.ray import Explainer

    ds = ray.data.read_images(os.path.dirname(pngs[0]), include_paths=True)
    out = ds.map_batches(Explainer, fn_constructor_kwargs={"model": path, "method": "gradcam++"},
                         batch_size=4, compute=ray.data.ActorPoolStrategy(size=1))
    out = out.drop_columns(["image"]).take_all()
    rows = {os.path.basename(row["path"]): row for row in out}
    assert sorted(rows) == sorted(os.path.basename(p) for p in pngs)
    expected = kc.explain_dataset(kc.GradCAMPlusPlus(model), pngs, verbose=0)  # the same files, locally
    got = {k: np.stack([rows[os.path.basename(p)][k] for p in pngs]) for k in ("heatmap", "target", "score")}
    assert got["heatmap"].shape == (len(pngs), SIZE, SIZE) and got["heatmap"].dtype == np.float32
    _same(got, expected)


@pytest.mark.backends
def test_direct_call_with_a_targets_column_scale_and_uint8(files):
    path, pngs, model = files
    from keras_cam.integrations.ray import Explainer

    batch = {"image": _pixels(pngs), "label": np.array([0, 1, 2, 0, 1, 2]), "path": np.array(pngs)}
    before = {k: v.copy() for k, v in batch.items()}
    explainer = Explainer(path, targets="label", batch_size=4)
    out = explainer(batch)
    assert list(out) == ["image", "label", "path", "heatmap", "target", "score"]
    for k, v in before.items():  # the caller's batch is untouched
        assert out[k] is batch[k] and all(np.array_equal(a, b) for a, b in zip(v, batch[k]))
    files_read = np.stack([kc.visualize.read_image(p, SIZE) for p in pngs])  # as explain_dataset reads them
    _same(out, kc.GradCAM(model).compute(files_read, targets=batch["label"]))
    # --scale none ([0, 255] inputs) and uint8 maps, against explain_dataset's files path with that preprocess
    scaled = Explainer(path, method="hirescam", scale="none", dtype="uint8")(batch)
    expected = kc.explain_dataset(kc.HiResCAM(model), pngs, preprocess=lambda x: x * 255.0, verbose=0)
    assert scaled["heatmap"].dtype == np.uint8
    np.testing.assert_array_equal(scaled["heatmap"], np.round(expected.heatmaps * 255).astype(np.uint8))
    np.testing.assert_array_equal(scaled["target"], expected.targets)
    empty = explainer({"image": np.empty(0, object), "label": np.zeros(0, int)})
    assert empty["heatmap"].shape == (0, SIZE, SIZE) and empty["target"].shape == (0,)


def test_bad_arguments_give_one_clear_error(files, tmp_path, monkeypatch):
    path, pngs, _ = files
    from keras_cam.integrations.ray import Explainer

    with pytest.raises(ValueError, match="model file '.*nope.keras' does not exist"):
        Explainer(str(tmp_path / "nope.keras"))
    with pytest.raises(ValueError, match="Unknown method 'gradkam'. Available methods: gradcam"):
        Explainer(path, method="gradkam")
    with pytest.raises(ValueError, match="`scale` must be one of 1/255, none"):
        Explainer(path, scale="255")
    with pytest.raises(ValueError, match="`dtype` must be 'float32'"):
        Explainer(path, dtype="float16")
    with pytest.raises(ValueError, match="replaces `scale`"):
        Explainer(path, scale="tf", preprocess=lambda x: x)
    batch = {"img": _pixels(pngs[:2])}
    with pytest.raises(ValueError, match=r"no images column 'image' \(its columns: 'img'\); pass column="):
        Explainer(path)(batch)
    with pytest.raises(ValueError, match="no targets column 'label'"):
        Explainer(path, column="img", targets="label")(batch)
    with pytest.raises(ValueError, match="one int class index per image"):
        Explainer(path, column="img", targets="label")({**batch, "label": np.array([0.5, 1.0])})
    assert list(batch) == ["img"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install "keras-cam\[ray\]"'):
        Explainer(path)


def test_the_module_imports_without_importing_ray_or_keras():
    code = ("import sys, keras_cam as kc; kc.integrations.ray.Explainer; "
            "assert 'ray' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _mixed_folder(root):
    """Two color and two grayscale PNGs of other sizes than the model's."""
    gray = [np.linspace(0, 1, 30 * 20).reshape(30, 20), np.eye(18, 26)]
    color, _, _ = kc.datasets.make_shapes(2, size=20, seed=3)
    return [str(kc.save_image(root / f"{i}.png", image)) for i, image in enumerate([color[0], gray[0],
                                                                                      color[1], gray[1]])]


@pytest.mark.backends
def test_grayscale_as_read_images_gives_it_in_a_mixed_batch(files, tmp_path):
    path, _, model = files
    from keras_cam.integrations.ray import Explainer

    pngs = _mixed_folder(tmp_path)
    images = np.empty(4, dtype=object)  # Ray pads grayscale to (1, H, W) beside (H, W, 3) color images
    images[:] = [np.asarray(kc.visualize.to_uint8(kc.visualize.read_image(p))) for p in pngs]
    images[1], images[3] = images[1][None, :, :, 0], images[3][:, :, 0]  # (1, H, W), and plain (H, W)
    assert images[1].shape == (1, 30, 20) and images[3].shape == (18, 26)
    out = Explainer(path)({"image": images})
    _same(out, kc.explain_dataset(kc.GradCAM(model), pngs, verbose=0))


@pytest.mark.slow
def test_ray_on_a_folder_mixing_grayscale_and_color(files, local_ray, tmp_path):
    path, _, model = files
    from keras_cam.integrations.ray import Explainer

    pngs = _mixed_folder(tmp_path)
    ds = ray.data.read_images(str(tmp_path), include_paths=True)
    out = ds.map_batches(Explainer, fn_constructor_kwargs={"model": path}, batch_size=4,
                         compute=ray.data.ActorPoolStrategy(size=1)).drop_columns(["image"]).take_all()
    rows = {os.path.basename(row["path"]): row for row in out}
    assert sorted(rows) == sorted(os.path.basename(p) for p in pngs)  # every image, grayscale ones included
    got = {k: np.stack([rows[os.path.basename(p)][k] for p in pngs]) for k in ("heatmap", "target", "score")}
    _same(got, kc.explain_dataset(kc.GradCAM(model), pngs, verbose=0))
