"""kc.explain_dataset and kc.open_store: every data source, the zarr store, resuming, threads and memory."""
import math
import os

import keras
import numpy as np
import pytest

import keras_cam as kc
from tests.models import random_images, tiny_cam_model

pytest.importorskip("zarr")

N, B = 10, 4  # 3 batches, the last one short


@pytest.fixture(scope="module")
def explainer():
    return kc.GradCAM(tiny_cam_model())


@pytest.fixture(scope="module")
def data(explainer):
    x = random_images(N)
    y = np.arange(N) % 3
    return x, y, explainer.compute(x, batch_size=B), explainer.compute(x, targets=y, batch_size=B)


def _same(result, expected):
    np.testing.assert_allclose(result.heatmaps, expected.heatmaps, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.targets, expected.targets)
    np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-5, atol=1e-6)


def _batches(x, y=None, fail_after=None):
    for i, start in enumerate(range(0, len(x), B)):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("the data source broke")
        yield x[start:start + B] if y is None else (x[start:start + B], y[start:start + B])


def _counting(explainer):
    calls = []
    compute = explainer.compute

    def counted(*args, **kwargs):
        calls.append(1)
        return compute(*args, **kwargs)

    return counted, calls


def _arrays(store):
    return {name: store[name][:] for name in store.keys()}


@pytest.mark.backends
def test_arrays_generators_and_pydatasets_equal_the_array_path(explainer, data):
    x, y, expected, labelled = data
    assert callable(kc.explain_dataset) and callable(kc.open_store)
    _same(kc.explain_dataset(explainer, x, batch_size=B, verbose=0), expected)
    _same(kc.explain_dataset(explainer, _batches(x), verbose=0), expected)
    _same(kc.explain_dataset(explainer, _batches(x, y), targets="labels", verbose=0), labelled)
    _same(kc.explain_dataset(explainer, x, targets=y, batch_size=B, verbose=0), labelled)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return math.ceil(N / B)

        def __getitem__(self, i):  # one-hot labels
            return x[i * B:(i + 1) * B], np.eye(3)[y[i * B:(i + 1) * B]]

    _same(kc.explain_dataset(explainer, Batches(), targets="labels", verbose=0), labelled)


def test_tf_data_with_labels(explainer, data):
    tf = pytest.importorskip("tensorflow")
    x, y, expected, labelled = data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    _same(kc.explain_dataset(explainer, dataset, targets="labels", verbose=0), labelled)
    _same(kc.explain_dataset(explainer, dataset.map(lambda a, b: a), verbose=0), expected)
    with pytest.raises(ValueError, match="infinite tf.data.Dataset"):
        kc.explain_dataset(explainer, dataset.repeat(), verbose=0)


@pytest.mark.backends
def test_torch_dataloader(explainer, data):
    torch = pytest.importorskip("torch")
    x, y, _, labelled = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
                                         batch_size=B)
    result = kc.explain_dataset(explainer, loader, targets="labels", verbose=0)
    assert result.heatmaps.shape[0] == len(x)
    _same(result, labelled)


@pytest.mark.backends
def test_image_files_and_folders_skip_unreadable_files(explainer, tmp_path):
    pictures = random_images(N, seed=3)
    paths = [str(kc.save_image(tmp_path / "in" / f"{i:02d}.png", p)) for i, p in enumerate(pictures)]
    read = np.stack([kc.visualize.read_image(p) for p in paths])
    expected = explainer.compute(read, batch_size=B)
    result = kc.explain_dataset(explainer, paths, batch_size=B, verbose=0)
    _same(result, expected)
    assert result.paths == paths and result.skipped == []

    bad = tmp_path / "in" / "05b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.warns(UserWarning, match=r"skipped .*05b\.png") as caught:
        result = kc.explain_dataset(explainer, tmp_path / "in", batch_size=B, verbose=0,
                                    overlays_dir=tmp_path / "out")
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1
    _same(result, expected)
    assert result.paths == paths and result.skipped == [str(bad)]
    assert sorted(os.listdir(tmp_path / "out")) == [f"{i:02d}_gradcam.png" for i in range(N)]
    assert kc.visualize.read_image(tmp_path / "out" / "00_gradcam.png").shape == (16, 16, 3)


@pytest.mark.backends
def test_store_round_trip_equals_memory(explainer, data, tmp_path):
    x, _, expected, _ = data
    store = kc.explain_dataset(explainer, x, store=tmp_path / "maps.zarr", batch_size=B, verbose=0)
    again = kc.open_store(tmp_path / "maps.zarr")
    assert len(store) == len(again) == N and store.complete
    assert store.keys() == ["heatmaps", "targets", "scores"]
    assert again["heatmaps"].dtype == np.float16 and again["heatmaps"][3:7].shape == (4, 16, 16)
    np.testing.assert_allclose(again["heatmaps"][:], expected.heatmaps, atol=1e-3)
    np.testing.assert_array_equal(again["targets"][:], expected.targets)
    np.testing.assert_allclose(again["scores"][:], expected.scores, rtol=1e-5)
    settings = again.settings
    assert settings["method"] == "gradcam" and settings["batch_size"] == B
    assert settings["layers"] == ["conv2"]  # the automatic layer, resolved
    assert settings["options"]["use_logits"] is True and len(settings["model"]) == 32
    with pytest.raises(KeyError, match="no array 'paths'"):
        again["paths"]

    small = kc.explain_dataset(explainer, x, store=tmp_path / "u8.zarr", batch_size=B, verbose=0,
                               dtype="uint8")
    assert small["heatmaps"].dtype == np.uint8
    np.testing.assert_allclose(small["heatmaps"][:] / 255.0, expected.heatmaps, atol=0.5 / 255 + 1e-6)

    paths = [str(kc.save_image(tmp_path / "in" / f"{i}.png", p)) for i, p in enumerate(x[:5])]
    files = kc.explain_dataset(explainer, paths, store=tmp_path / "files.zarr", batch_size=B, verbose=0)
    assert list(files["paths"][:]) == paths
    with pytest.raises(ValueError, match="not a heatmap store"):
        kc.open_store(tmp_path)


@pytest.mark.backends
def test_resume_after_an_interruption_skips_finished_batches(explainer, data, tmp_path):
    x, y, _, _ = data
    whole = kc.explain_dataset(explainer, _batches(x, y), targets="labels", store=tmp_path / "whole.zarr",
                               verbose=0)
    path = tmp_path / "resumed.zarr"
    with pytest.raises(RuntimeError, match="the data source broke") as info:
        kc.explain_dataset(explainer, _batches(x, y, fail_after=2), targets="labels", store=path, verbose=0)
    assert "read batch 2" in " ".join(getattr(info.value, "__notes__", []))
    partial = kc.open_store(path)
    assert not partial.complete and partial.progress["batches"] == 2 and len(partial) == 2 * B

    counted, calls = _counting(explainer)
    explainer.compute = counted
    try:
        resumed = kc.explain_dataset(explainer, _batches(x, y), targets="labels", store=path, verbose=0)
        assert len(calls) == 1  # only the last batch is explained again
        assert kc.explain_dataset(explainer, _batches(x, y), targets="labels", store=path, verbose=0).complete
        assert len(calls) == 1  # a complete store is returned as it is
    finally:
        del explainer.compute
    assert resumed.complete and resumed.progress == whole.progress
    for name, values in _arrays(whole).items():
        np.testing.assert_array_equal(_arrays(resumed)[name], values)


@pytest.mark.backends
def test_resume_after_a_keyboard_interrupt(explainer, data, tmp_path):
    x = data[0]
    whole = kc.explain_dataset(explainer, x, store=tmp_path / "whole.zarr", batch_size=B, verbose=0)
    counted, calls = _counting(explainer)

    def interrupted(*args, **kwargs):
        if len(calls) == 1:
            raise KeyboardInterrupt
        return counted(*args, **kwargs)

    explainer.compute = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            kc.explain_dataset(explainer, x, store=tmp_path / "s.zarr", batch_size=B, verbose=0)
        assert kc.open_store(tmp_path / "s.zarr").progress["batches"] == 1
        explainer.compute = counted
        resumed = kc.explain_dataset(explainer, x, store=tmp_path / "s.zarr", batch_size=B, verbose=0)
    finally:
        del explainer.compute
    assert len(calls) == 3  # batch 0 before the interrupt, then batches 1 and 2
    for name, values in _arrays(whole).items():
        np.testing.assert_array_equal(_arrays(resumed)[name], values)


@pytest.mark.backends
def test_a_store_of_another_model_or_other_settings_is_refused(explainer, data, tmp_path):
    x = data[0]
    path = tmp_path / "maps.zarr"
    kc.explain_dataset(explainer, x[:4], store=path, batch_size=B, verbose=0)
    other = kc.GradCAM(tiny_cam_model(seed=1))
    refused = r"the model \(its configuration or weights\) differs.*another `store` path, or resume=False"
    with pytest.raises(ValueError, match=refused):
        kc.explain_dataset(other, x[:4], store=path, batch_size=B, verbose=0)
    with pytest.raises(ValueError, match="method is 'gradcam' in the store and 'gradcam\\+\\+' now"):
        kc.explain_dataset(kc.GradCAMPlusPlus(explainer.model), x[:4], store=path, batch_size=B, verbose=0)
    with pytest.raises(ValueError, match="targets is None in the store and 1 now"):
        kc.explain_dataset(explainer, x[:4], targets=1, store=path, batch_size=B, verbose=0)
    assert len(kc.explain_dataset(other, x[:8], store=path, batch_size=B, resume=False, verbose=0)) == 8
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a zarr store"):
        kc.explain_dataset(explainer, x[:4], store=tmp_path / "notes", resume=False, verbose=0)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.backends
def test_a_store_of_other_data_of_the_same_size_is_refused(explainer, data, tmp_path):
    x = data[0][:4]
    path = tmp_path / "arrays.zarr"
    kc.explain_dataset(explainer, x, store=path, batch_size=B, verbose=0)
    other = x.copy()
    other[-1] = 1.0 - other[-1]  # one image changed: the sampled rows include the last one
    differ = r"the data differ \(another list of files, or other arrays of the same shape\)"
    with pytest.raises(ValueError, match=differ):
        kc.explain_dataset(explainer, other, store=path, batch_size=B, verbose=0)
    assert len(kc.explain_dataset(explainer, x.copy(), store=path, batch_size=B, verbose=0)) == 4  # same data

    pictures = random_images(4, seed=5)
    first = [str(kc.save_image(tmp_path / "a" / f"{i}.png", p)) for i, p in enumerate(pictures)]
    second = [str(kc.save_image(tmp_path / "b" / f"{i}.png", p)) for i, p in enumerate(pictures)]
    path = tmp_path / "files.zarr"
    kc.explain_dataset(explainer, first, store=path, batch_size=B, verbose=0)
    with pytest.raises(ValueError, match=differ):  # as many files, other paths: the maps would be mixed
        kc.explain_dataset(explainer, second, store=path, batch_size=B, verbose=0)
    assert kc.open_store(path)["paths"][:].tolist() == first  # the refused run wrote nothing


@pytest.mark.backends
def test_clear_errors_from_data_and_threads(explainer, data, tmp_path):
    x, y, _, _ = data

    def mixed():
        yield x[:4]
        yield random_images(4, size=12)

    mismatch = r"Batch 1 of the data has inputs of shape \(12, 12, 3\) per example, but the earlier"
    with pytest.raises(ValueError, match=mismatch + r" batches had \(16, 16, 3\)"):
        kc.explain_dataset(explainer, mixed(), verbose=0)
    with pytest.raises(ValueError, match='targets="labels" explains the labels y'):
        kc.explain_dataset(explainer, _batches(x), targets="labels", verbose=0)
    with pytest.raises(ValueError, match="Per-image `targets` need array data"):
        kc.explain_dataset(explainer, _batches(x), targets=y, verbose=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="Cannot create the directory"):  # raised by the writer thread
        kc.explain_dataset(explainer, x, overlays_dir=tmp_path / "file", batch_size=B, verbose=0)
    with pytest.raises(ValueError, match="`data` must be an array of images"):
        kc.explain_dataset(explainer, 3, verbose=0)


@pytest.mark.backends
def test_verbose_zero_prints_nothing_and_one_shows_images_per_second(explainer, data, capfd):
    x = data[0]
    kc.explain_dataset(explainer, x, batch_size=B, verbose=0)
    kc.explain_dataset(explainer, _batches(x), verbose=0)
    assert capfd.readouterr() == ("", "")
    kc.explain_dataset(explainer, x, batch_size=B, verbose=1)
    assert "images/s" in capfd.readouterr().out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm")
def test_memory_stays_bounded_over_thousands_of_images(explainer, tmp_path):
    def images(count, size=64):
        for i in range(count // size):
            yield random_images(size, seed=i)

    kc.explain_dataset(explainer, images(256), store=tmp_path / "warm.zarr", verbose=0)
    before = _rss_mb()
    store = kc.explain_dataset(explainer, images(4096), store=tmp_path / "maps.zarr", verbose=0,
                               overlays_dir=tmp_path / "overlays")
    assert len(store) == 4096 and len(os.listdir(tmp_path / "overlays")) == 4096
    assert _rss_mb() - before < 200


def test_a_channel_mismatch_names_the_images_passed_not_the_padded_batch():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    for n, batch in ((3, 4), (5, None)):
        with pytest.raises(ValueError, match=rf"images have channels 1 but the model expects 3 .*images shape "
                                             rf"\({n}, 16, 16, 1\)"):
            kc.explain_dataset(kc.GradCAM(model), np.zeros((n, 16, 16, 1), "float32"), batch_size=batch, verbose=0)
