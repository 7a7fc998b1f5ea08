"""The store of kc.explain_dataset holds what an uninterrupted run on the same data writes, or refuses:
overlays are written before a batch counts as finished, readers see finished rows only, a resume of other data
(other content, other files under the same names, another `preprocess`) is refused, the model fingerprint is
the same in memory and after saving and loading, a complete store is only read."""
import os

import keras
import numpy as np
import pytest

import keras_cam as kc
from keras_cam import store as kc_store
from tests.models import random_images, tiny_cam_model

zarr = pytest.importorskip("zarr")

N, B = 10, 4  # 3 batches, the last one short
DIFFER = r"Cannot resume the store '.*': the first 2 batches of the data differ from those it was made from"


@pytest.fixture(scope="module")
def explainer():
    return kc.GradCAM(tiny_cam_model())


@pytest.fixture(scope="module")
def x():
    return random_images(N)


def _batches(x, fail_after=None):
    for i, start in enumerate(range(0, len(x), B)):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("the data source broke")
        yield x[start:start + B]


def _arrays(store):
    return {name: store[name][:] for name in store.keys()}


def _same_store(store, expected):
    assert store.complete and len(store) == len(expected)
    for name, values in _arrays(expected).items():
        np.testing.assert_array_equal(store[name][:], values)


def _interrupted(explainer, data, path, after=1, **kwargs):
    """Runs explain_dataset into `path`, interrupted while explaining batch `after` (0-based)."""
    calls = []
    compute = explainer.compute

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        return compute(*args, **kw)

    explainer.compute = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            kc.explain_dataset(explainer, data, store=path, verbose=0, **kwargs)
    finally:
        del explainer.compute
    assert kc.open_store(path).progress["batches"] == after


@pytest.mark.backends
def test_a_failed_overlay_write_is_written_again_on_resume(explainer, x, tmp_path, monkeypatch):
    whole = kc.explain_dataset(explainer, x, store=tmp_path / "whole.zarr", batch_size=B, verbose=0)
    save_image = kc.visualize.save_image

    def disk_full(path, image):
        if os.path.basename(path) == f"{B + 1:06d}_gradcam.png":  # an image of batch 1
            raise OSError(28, "No space left on device", str(path))
        return save_image(path, image)

    monkeypatch.setattr(kc.visualize, "save_image", disk_full)
    path, out = tmp_path / "maps.zarr", tmp_path / "overlays"
    with pytest.raises(OSError, match="No space left"):
        kc.explain_dataset(explainer, x, store=path, overlays_dir=out, batch_size=B, verbose=0)
    partial = kc.open_store(path)
    assert partial.progress["batches"] == 1 and not partial.complete  # batch 1 is not finished
    assert partial["heatmaps"].shape[0] == len(partial) == B
    monkeypatch.setattr(kc.visualize, "save_image", save_image)
    resumed = kc.explain_dataset(explainer, x, store=path, overlays_dir=out, batch_size=B, verbose=0)
    _same_store(resumed, whole)
    assert sorted(os.listdir(out)) == [f"{i:06d}_gradcam.png" for i in range(N)]
    for i in (0, B + 1, N - 1):  # each overlay shows its own map
        expected = kc.overlay(x[i], whole["heatmaps"][i].astype(np.float32)) / 255.0  # uint8 overlay
        written = kc.visualize.read_image(out / f"{i:06d}_gradcam.png")
        np.testing.assert_allclose(written, expected, atol=2 / 255)


@pytest.mark.backends
def test_readers_see_only_finished_rows_after_a_killed_run(explainer, x, tmp_path, monkeypatch):
    whole = kc.explain_dataset(explainer, x, store=tmp_path / "whole.zarr", batch_size=B, verbose=0)
    record = kc_store.StoreWriter._record

    def killed(self, **changes):  # batch 1's rows are in the arrays, then the run dies before recording it
        if changes.get("batches") == 2:
            raise KeyboardInterrupt
        record(self, **changes)

    monkeypatch.setattr(kc_store.StoreWriter, "_record", killed)
    path = tmp_path / "maps.zarr"
    with pytest.raises(KeyboardInterrupt):
        kc.explain_dataset(explainer, x, store=path, batch_size=B, verbose=0)
    store = kc.open_store(path)
    assert store["heatmaps"].array.shape[0] == 2 * B  # on disk: the rows of the unfinished batch
    assert len(store) == B and all(store[k].shape[0] == B for k in store.keys())
    np.testing.assert_array_equal(np.asarray(store["heatmaps"]), whole["heatmaps"][:B])
    np.testing.assert_array_equal(store["targets"][[0, -1]], whole["targets"][[0, B - 1]])
    np.testing.assert_array_equal(store["scores"][-2:], whole["scores"][B - 2:B])
    with pytest.raises(IndexError):
        store["heatmaps"][B]
    monkeypatch.setattr(kc_store.StoreWriter, "_record", record)
    _same_store(kc.explain_dataset(explainer, x, store=path, batch_size=B, verbose=0), whole)


@pytest.mark.backends
def test_a_resume_of_other_batches_is_refused(explainer, x, tmp_path):
    path = tmp_path / "maps.zarr"
    with pytest.raises(RuntimeError, match="the data source broke"):
        kc.explain_dataset(explainer, _batches(x, fail_after=2), store=path, verbose=0)
    other = x.copy()
    other[B + 1] = 1.0 - other[B + 1]  # one image of a finished batch
    with pytest.raises(ValueError, match=DIFFER + r".*shuffled.*resume=False"):
        kc.explain_dataset(explainer, _batches(other), store=path, verbose=0)
    more = np.concatenate([other, random_images(2 * B, seed=7)])  # other content, more batches
    with pytest.raises(ValueError, match=DIFFER):
        kc.explain_dataset(explainer, _batches(more), store=path, verbose=0)
    with pytest.raises(ValueError, match="the data has 1 batches, and the store has finished 2"):
        kc.explain_dataset(explainer, _batches(x[:B]), store=path, verbose=0)
    assert len(kc.open_store(path)) == 2 * B  # the refused runs wrote nothing
    whole = kc.explain_dataset(explainer, _batches(x), store=tmp_path / "whole.zarr", verbose=0)
    resumed = kc.explain_dataset(explainer, _batches(x), store=path, verbose=0)  # the same data: resumed
    _same_store(resumed, whole)
    # A complete store is returned as it is for its own data (read again, not explained), refused for others.
    with pytest.raises(ValueError, match="the data has more batches than the 3 of this complete store"):
        kc.explain_dataset(explainer, _batches(more[:N + B]), store=path, verbose=0)
    with pytest.raises(ValueError, match="the first 3 batches of the data differ"):
        kc.explain_dataset(explainer, _batches(other), store=path, verbose=0)
    _same_store(kc.explain_dataset(explainer, _batches(x), store=path, verbose=0), whole)


@pytest.mark.backends
def test_a_resume_of_an_array_changed_in_rows_the_sample_skips_is_refused(explainer, tmp_path):
    x = random_images(20, seed=4)
    path = tmp_path / "maps.zarr"
    _interrupted(explainer, x, path, after=2, batch_size=B)
    other = x.copy()
    other[4] = 0.5  # not among the 16 sampled rows of `data_content`; in finished batch 1
    assert kc_store.data_content(data=other) == kc_store.data_content(data=x)
    before = _snapshot(path)
    with pytest.raises(ValueError, match=DIFFER):
        kc.explain_dataset(explainer, other, store=path, batch_size=B, verbose=0)
    assert _snapshot(path) == before  # a refused resume writes nothing
    whole = kc.explain_dataset(explainer, x, store=tmp_path / "whole.zarr", batch_size=B, verbose=0)
    _same_store(kc.explain_dataset(explainer, x, store=path, batch_size=B, verbose=0), whole)


def test_a_resume_of_another_tf_data_dataset_is_refused(explainer, x, tmp_path):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "maps.zarr"
    _interrupted(explainer, tf.data.Dataset.from_tensor_slices(x).batch(B), path, after=2)
    shuffled = tf.data.Dataset.from_tensor_slices(x[::-1].copy()).batch(B)
    with pytest.raises(ValueError, match=DIFFER):
        kc.explain_dataset(explainer, shuffled, store=path, verbose=0)
    labelled = tf.data.Dataset.from_tensor_slices((x, np.arange(N) % 3)).batch(B)
    relabelled = tf.data.Dataset.from_tensor_slices((x, np.arange(N) % 2)).batch(B)
    _interrupted(explainer, labelled, tmp_path / "labels.zarr", after=2, targets="labels")
    with pytest.raises(ValueError, match=DIFFER):  # the labels make the maps
        kc.explain_dataset(explainer, relabelled, store=tmp_path / "labels.zarr", targets="labels", verbose=0)
    assert kc.explain_dataset(explainer, labelled, store=tmp_path / "labels.zarr", targets="labels",
                              verbose=0).complete


@pytest.mark.backends
def test_a_resume_of_files_with_new_pixels_under_the_same_names_is_refused(explainer, tmp_path):
    folder = tmp_path / "in"
    pngs = [kc.save_image(folder / f"{i:02d}.png", p) for i, p in enumerate(random_images(N, seed=2))]
    path = tmp_path / "maps.zarr"
    _interrupted(explainer, folder, path, after=1, batch_size=B)
    before = os.stat(pngs[N - 1])
    kc.save_image(pngs[N - 1], random_images(1, seed=9)[0])  # in a batch not yet explained: fine
    os.utime(pngs[N - 1], ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    old = os.stat(pngs[1])
    kc.save_image(pngs[1], random_images(1, seed=8)[0])  # in the finished batch 0
    os.utime(pngs[1], ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
    changed = r"the image files of its finished batches changed since .*resume=False"
    with pytest.raises(ValueError, match=changed):
        kc.explain_dataset(explainer, folder, store=path, batch_size=B, verbose=0)
    os.utime(pngs[1], ns=(old.st_atime_ns, old.st_mtime_ns))
    kc.save_image(pngs[1], random_images(N, seed=2)[1])  # the old pixels and times back
    os.utime(pngs[1], ns=(old.st_atime_ns, old.st_mtime_ns))
    resumed = kc.explain_dataset(explainer, folder, store=path, batch_size=B, verbose=0)
    read = np.stack([kc.visualize.read_image(p) for p in pngs])
    expected = explainer.compute(read, batch_size=B).heatmaps
    np.testing.assert_allclose(resumed["heatmaps"][:], expected, atol=1e-3)


def _scaled(k):
    return lambda images: images * k


@pytest.mark.backends
def test_a_resume_with_another_preprocess_is_refused(explainer, tmp_path):
    folder = tmp_path / "in"
    for i, p in enumerate(random_images(N, seed=2)):
        kc.save_image(folder / f"{i:02d}.png", p)
    path = tmp_path / "maps.zarr"
    _interrupted(explainer, folder, path, after=1, batch_size=B, preprocess=lambda images: images * 2.0)
    for other in (lambda images: images * 3.0, lambda images: images / 2.0, _scaled(2.0)):
        with pytest.raises(ValueError, match=r"preprocess differs \(its code, or the values it reads"):
            kc.explain_dataset(explainer, folder, store=path, batch_size=B, verbose=0, preprocess=other)
    store = kc.explain_dataset(explainer, folder, store=path, batch_size=B, verbose=0,
                               preprocess=lambda images: images * 2.0)  # the same code again: resumed
    assert store.complete and len(store) == N
    assert kc_store.describe(_scaled(2)) == kc_store.describe(_scaled(2)) != kc_store.describe(_scaled(3))


def test_describe_tells_callables_apart_by_what_defines_them():
    class Scale:
        def __init__(self, k):
            self.k = k

        def __call__(self, images):
            return images * self.k

    d = kc_store.describe
    assert d(Scale(2)) == d(Scale(2)) != d(Scale(3))
    assert d(np.sqrt) == d(np.sqrt) != d(np.exp)
    mean = np.array([0.5, 0.4, 0.3])
    assert d(lambda images: images - mean) != d(lambda images: images - mean * 2)
    assert not d(Scale(2)).endswith(kc_store.UNCHECKED)
    assert d(Scale(object())).endswith(kc_store.UNCHECKED)  # an object without attributes to read


@pytest.mark.backends
def test_an_unreadable_preprocess_warns_on_resume(explainer, tmp_path):
    class Opaque:
        __slots__ = ("k",)

        def __init__(self):
            self.k = 1.0

        def __call__(self, images):
            return images * self.k

    folder = tmp_path / "in"
    for i, p in enumerate(random_images(N, seed=2)):
        kc.save_image(folder / f"{i:02d}.png", p)
    path = tmp_path / "maps.zarr"
    _interrupted(explainer, folder, path, after=1, batch_size=B, preprocess=Opaque())
    with pytest.warns(UserWarning, match="resuming the store .* with preprocess that cannot be compared"):
        kc.explain_dataset(explainer, folder, store=path, batch_size=B, verbose=0, preprocess=Opaque())
    assert len(kc.open_store(path)) == N  # warned, then resumed to the end


@pytest.mark.backends
@pytest.mark.parametrize("kind", ["sequential", "nested"])
def test_a_store_made_in_memory_resumes_with_the_saved_and_loaded_model(x, tmp_path, kind):
    model = tiny_cam_model(kind=kind)
    path = tmp_path / "maps.zarr"
    _interrupted(kc.GradCAM(model), x, path, after=1, batch_size=B)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert [w.path for w in loaded.weights] != [w.path for w in model.weights] or kind == "functional"
    assert kc_store.model_fingerprint(loaded) == kc_store.model_fingerprint(model)
    resumed = kc.explain_dataset(kc.GradCAM(loaded), x, store=path, batch_size=B, verbose=0)
    whole = kc.explain_dataset(kc.GradCAM(model), x, store=tmp_path / "whole.zarr", batch_size=B, verbose=0)
    _same_store(resumed, whole)
    changed = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    kernel = changed.weights[0]
    kernel.assign(keras.ops.convert_to_numpy(kernel) + np.float32(1e-3))
    _interrupted(kc.GradCAM(model), x, tmp_path / "other.zarr", after=1, batch_size=B)
    with pytest.raises(ValueError, match=r"the model \(its configuration or weights\) differs"):
        kc.explain_dataset(kc.GradCAM(changed), x, store=tmp_path / "other.zarr", batch_size=B, verbose=0)


@pytest.mark.backends
def test_a_store_of_the_automatic_layer_resumes_with_that_layer_named(explainer, x, tmp_path):
    path = tmp_path / "maps.zarr"
    _interrupted(explainer, x, path, after=1, batch_size=B)
    assert kc.open_store(path).settings["layers"] == [explainer.layer_ref.path] == ["conv2"]
    with pytest.raises(ValueError, match=r"layers is \['conv2'\] in the store and \['conv1'\] now"):
        kc.explain_dataset(kc.GradCAM(explainer.model, layer="conv1"), x, store=path, batch_size=B, verbose=0)
    store = kc.explain_dataset(kc.GradCAM(explainer.model, layer="conv2"), x, store=path, batch_size=B,
                               verbose=0)
    assert store.complete and len(store) == N


def _snapshot(root):
    """Every file and folder under `root` with its size, modification time and bytes."""
    found = {}
    for folder, _, names in os.walk(root):
        found[folder] = os.stat(folder).st_mtime_ns
        for name in names:
            p = os.path.join(folder, name)
            with open(p, "rb") as f:
                found[p] = (os.stat(p).st_mtime_ns, f.read())
    return found


@pytest.mark.backends
def test_a_complete_store_is_only_read(explainer, x, tmp_path, monkeypatch):
    path = tmp_path / "maps.zarr"
    kc.explain_dataset(explainer, x, store=path, batch_size=B, verbose=0)
    before = _snapshot(path)
    modes = []
    open_group = zarr.open_group

    def recorded(*args, mode="a", **kwargs):
        modes.append(mode)
        return open_group(*args, mode=mode, **kwargs)

    monkeypatch.setattr(zarr, "open_group", recorded)
    monkeypatch.setattr(kc.BaseCAM, "compute", lambda *a, **k: pytest.fail("a complete store was explained"))
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # a read-only folder (root may write anyway)
        for folder, _, names in os.walk(path):
            for p in [folder] + [os.path.join(folder, n) for n in names]:
                os.chmod(p, 0o555 if p == folder else 0o444)
    try:
        store = kc.explain_dataset(explainer, x, store=path, batch_size=B, verbose=0)
    finally:
        for folder, _, _ in os.walk(path):
            os.chmod(folder, 0o755)
    assert store.complete and len(store) == N and set(modes) == {"r"}
    assert _snapshot(path) == before


@pytest.mark.backends
def test_overlays_inside_the_data_folder_are_not_inputs(explainer, tmp_path):
    folder = tmp_path / "in"
    for i, p in enumerate(random_images(5, seed=2)):
        kc.save_image(folder / f"{i}.png", p)
    out = folder / "overlays"
    first = kc.explain_dataset(explainer, folder, store=tmp_path / "a.zarr", overlays_dir=out, batch_size=B,
                               verbose=0)
    assert len(os.listdir(out)) == 5
    again = kc.explain_dataset(explainer, folder, store=tmp_path / "a.zarr", overlays_dir=out, batch_size=B,
                               verbose=0)  # a resume: the same five files
    fresh = kc.explain_dataset(explainer, folder, overlays_dir=out, batch_size=B, verbose=0)
    assert list(again["paths"][:]) == list(first["paths"][:]) == fresh.paths
    assert [os.path.basename(p) for p in fresh.paths] == [f"{i}.png" for i in range(5)]


@pytest.mark.backends
def test_a_missing_path_is_one_clear_error(explainer, tmp_path):
    with pytest.raises(ValueError, match=r"`data` names a file or folder that does not exist: '.*typo_dir'"):
        kc.explain_dataset(explainer, str(tmp_path / "typo_dir"), verbose=0)
    kc.save_image(tmp_path / "a.png", random_images(1)[0])
    with pytest.raises(ValueError, match=r"does not exist: '.*b\.png' \(and 1 more\); check the path"):
        kc.explain_dataset(explainer, [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], verbose=0)
    assert not (tmp_path / "maps.zarr").exists()


def test_cli_lines_stay_one_per_file_and_skips_read_alike_with_and_without_a_store(tmp_path, capsys):
    from keras_cam import cli

    model = tmp_path / "model.keras"
    tiny_cam_model().save(model)
    folder = tmp_path / "in"
    good = [kc.save_image(folder / name, p) for name, p in zip(["a.png", "b\nc.png"], random_images(2))]
    (folder / "bad\n1.png").write_bytes(good[0].read_bytes()[:60])  # a header, then nothing: not decoded
    (folder / "bad2.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    reasons = {}
    runs = (("memory", ["--out", str(tmp_path / "out")]), ("store", ["--store", str(tmp_path / "s")]))
    for mode, extra in runs:
        assert cli.main(["explain", str(model), str(folder), *extra]) == 1
        out, err = capsys.readouterr()
        skips = [line for line in err.splitlines() if line.startswith("keras-cam: skipped ")]
        assert len(skips) == 2 and any("bad\\n1.png: " in line for line in skips), err
        reasons[mode] = sorted(line.split(".png: ", 1)[1] for line in skips)
        if mode == "memory":
            lines = out.splitlines()
            assert len(lines) == 3 and lines[1].startswith(f"{folder}/b\\nc.png: class ") and \
                lines[1].endswith("b\\nc_gradcam.png"), out
    assert os.path.exists(tmp_path / "out" / "b\nc_gradcam.png")  # the file keeps its name
    # The same words; without a store the decoder's own detail may follow (read from its stderr).
    assert all(a.startswith(b) for a, b in zip(reasons["memory"], reasons["store"])), reasons
    assert kc.open_store(tmp_path / "s")["paths"][:].tolist() == [str(p) for p in good]


def test_a_store_begun_in_python_is_finished_by_the_cli(x, tmp_path, capsys):
    from keras_cam import cli

    model = tiny_cam_model(kind="nested")  # weight paths carry the backbone's name in memory only
    folder = tmp_path / "in"
    for i, p in enumerate(x[:6]):
        kc.save_image(folder / f"{i}.png", p)
    path = tmp_path / "maps.zarr"
    _interrupted(kc.GradCAM(model), str(folder), path, after=1, batch_size=2)
    model.save(tmp_path / "model.keras")
    code = cli.main(["explain", str(tmp_path / "model.keras"), str(folder), "--store", str(path),
                     "--batch-size", "2"])
    out = capsys.readouterr().out.splitlines()[-1]
    assert code == 0 and out.startswith("explained 4 images, skipped 0") and out.endswith("(6 maps)")
    whole = kc.explain_dataset(kc.GradCAM(model), str(folder), store=tmp_path / "whole.zarr", batch_size=2,
                               verbose=0)
    _same_store(kc.open_store(path), whole)


class SubclassedNet(keras.Model):
    """conv1 -> conv2 -> GAP -> Dense without a graph: its automatic layer is found on a call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")
        self.conv2 = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")
        self.pool, self.dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)

    def call(self, x):
        return self.dense(self.pool(self.conv2(self.conv1(x))))


@pytest.mark.backends
def test_a_subclassed_models_automatic_layer_is_recorded_resolved(x, tmp_path):
    model = SubclassedNet(name="subclassed")
    model(x[:1])
    assert kc.GradCAM(model).layer_refs is None  # not known before a call
    path = tmp_path / "maps.zarr"
    _interrupted(kc.GradCAM(model), list(_batches(x)), path, after=1)  # a list of batches: read afresh
    assert kc.open_store(path).settings["layers"] == ["conv2"]
    store = kc.explain_dataset(kc.GradCAM(model, layer="conv2"), list(_batches(x)), store=path, verbose=0)
    assert store.complete and len(store) == N
    expected = kc.GradCAM(model).compute(x, batch_size=B)
    np.testing.assert_allclose(store["heatmaps"][:], expected.heatmaps, atol=1e-3)
