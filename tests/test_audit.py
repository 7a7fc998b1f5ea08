"""kc.audit: planted shortcuts are found, per-class statistics match hand-computed numbers, every layout,
stores read chunk by chunk, the HTML report in a real browser, the CLI and make_shapes(shortcut=...)."""
import os
import re
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

import keras_cam as kc
from keras_cam.auditing import core, statistics

pytest.importorskip("sklearn")


def planted_maps(n=240, size=32, seed=0, corner=(0, 0), share=0.5, layout=2):
    """Maps peaked on a random object (its mask given); `share` of class 0's maps put most of their energy
    in a corner instead (the planted shortcut). Returns maps, labels, masks, planted."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    shape = (size,) * layout
    grids = np.meshgrid(*[np.arange(size)] * layout, indexing="ij")
    maps = np.zeros((n,) + shape, np.float32)
    masks = np.zeros((n,) + shape, bool)
    planted = np.zeros(n, bool)
    class0 = np.flatnonzero(labels == 0)
    planted[rng.choice(class0, int(round(share * class0.size)), replace=False)] = True
    for i in range(n):
        centre = rng.integers(size // 4, 3 * size // 4 - 4, layout)
        box = tuple(slice(c, c + max(2, size // 6)) for c in centre)
        masks[(i,) + box] = True
        d2 = sum((g - c - 2) ** 2 for g, c in zip(grids, centre))
        m = np.exp(-d2 / (size / 4)) + 0.05 * rng.random(shape)
        if planted[i]:
            spot = [corner[k % len(corner)] * (size - 1) for k in range(layout)]
            m = 0.2 * m + np.exp(-sum((g - s) ** 2 for g, s in zip(grids, spot)) / 4.0)
        maps[i] = m / m.max()
    return maps, labels, masks, planted


def precision_recall(finding, planted):
    picked = np.zeros(planted.size, bool)
    picked[finding["images"]] = True
    return planted[picked].mean(), picked[planted].mean()


def test_planted_corner_is_found_and_named():
    maps, labels, masks, planted = planted_maps()
    before = maps.copy(), labels.copy(), masks.copy()
    report = kc.audit(maps, labels, masks=masks, classes=["circle", "square", "triangle"], embedding="spectral")
    top = report.findings[0]
    precision, recall = precision_recall(top, planted)
    assert precision >= 0.9 and recall >= 0.9
    assert top["class"] == "circle" and top["region"] == "top-left" and "top-left" in top["text"]
    assert abs(top["share"] - 0.5) < 0.06
    # the clusters agree with the finding, and the figures in its text are the ones in the dict
    assert set(np.flatnonzero((report.clusters == top["cluster"]) & (labels == 0))) == set(top["images"])
    assert f"{top['energy_in_mask']:.2f} vs {top['energy_in_mask_rest']:.2f}" in top["text"]
    assert top["energy_in_mask"] < top["energy_in_mask_rest"]
    assert all(np.array_equal(a, b) for a, b in zip(before, (maps, labels, masks)))  # inputs untouched


def test_bottom_right_corner_and_boxes_instead_of_masks():
    maps, labels, masks, planted = planted_maps(seed=1, corner=(1, 1), share=0.3)
    ys, xs = np.nonzero(masks.any(axis=2)), np.nonzero(masks.any(axis=1))
    boxes = np.stack([[np.flatnonzero(m.any(0))[0], np.flatnonzero(m.any(1))[0],
                       np.flatnonzero(m.any(0))[-1] + 1, np.flatnonzero(m.any(1))[-1] + 1] for m in masks])
    report = kc.audit(maps, labels, boxes=boxes, embedding=None)
    top = report.findings[0]
    assert top["region"] == "bottom-right" and "bottom-right" in top["text"]
    precision, recall = precision_recall(top, planted)
    assert precision >= 0.9 and recall >= 0.9
    # a box around a box-shaped mask is the mask: the same energy inside
    with_masks = kc.audit(maps, labels, masks=masks, embedding=None)
    np.testing.assert_allclose(report.scores["energy_in_mask"], with_masks.scores["energy_in_mask"])


def test_no_shortcut_no_corner_finding():
    maps, labels, masks, _ = planted_maps(seed=2, share=0.0)
    report = kc.audit(maps, labels, masks=masks, embedding=None)
    corners = ("top-left", "top-right", "bottom-left", "bottom-right")
    assert not any(f["region"] in corners and f["energy_in_region"] > 0.3 for f in report.findings)


def test_per_class_statistics_against_hand_computed_numbers():
    maps = np.zeros((4, 10, 10), np.float32)
    maps[0, 0, 0] = 1.0                       # all on the border, on the object
    maps[1, 5, 5], maps[1, 5, 6] = 3.0, 1.0   # inside; 3/4 of it on the object
    maps[2, 4:6, 4:6] = 1.0                   # a 2x2 block in the middle
    maps[3] = 1.0                              # uniform
    masks = np.zeros((4, 10, 10), bool)
    masks[0, 0, 0] = True
    masks[1, 5, 5] = True
    masks[2, 0, 0] = True                     # the map misses it
    masks[3, :5] = True                       # the top half
    labels = np.array([0, 0, 1, 1])
    report = kc.audit(maps, labels, masks=masks, embedding=None, clusters=1)
    s = report.scores
    np.testing.assert_allclose(s["energy_in_mask"], [1.0, 0.75, 0.0, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(s["pointing"], [1, 1, 0, 1])  # a flat map points at its first sample
    np.testing.assert_allclose(s["border_share"], [1.0, 0.0, 0.0, 36 / 100], rtol=1e-6)  # band of 1 of 10 per axis
    # top 10 % of the samples = 10 samples
    np.testing.assert_allclose(s["concentration"], [1.0, 1.0, 1.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(s["energy"], [1, 4, 4, 100])
    a, b = report.per_class
    assert a["energy_in_mask"] == pytest.approx(0.875) and a["pointing_game"] == 1.0
    assert b["energy_in_mask"] == pytest.approx(0.25) and b["pointing_game"] == 0.5
    assert b["border_share"] == pytest.approx(0.18) and a["concentration"] == 1.0
    np.testing.assert_allclose(a["mean_map"], maps[:2].mean(axis=0))
    np.testing.assert_allclose(b["mean_map"], maps[2:].mean(axis=0))
    assert np.array_equal(report.clusters, [0, 0, 0, 0])
    # regions: thirds of each axis (4, 3, 3 samples of 10); the uniform map's top-left ninth holds 16 %
    np.testing.assert_allclose(report.regions[3].reshape(3, 3), np.outer([4, 3, 3], [4, 3, 3]) / 100)
    assert statistics.region_names((10, 10))[0] == "top-left" and statistics.region_names((10,)) == \
        ["start", "centre", "end"]


def test_signed_maps_count_by_their_positive_part():
    maps, labels, masks, _ = planted_maps(n=90, seed=7)
    signed = maps - 0.3  # e.g. LRP relevance: negative evidence is not where the model looks
    a = kc.audit(signed, labels, masks=masks, embedding=None)
    b = kc.audit(np.clip(signed, 0, None), labels, masks=masks, embedding=None)
    np.testing.assert_array_equal(a.clusters, b.clusters)
    for key in a.scores:
        np.testing.assert_allclose(a.scores[key], b.scores[key], rtol=1e-6)
    assert [f["text"] for f in a.findings] == [f["text"] for f in b.findings]


def test_kc_audit_is_the_function_whatever_was_imported_first():
    import keras_cam.auditing as package

    assert kc.audit is package.audit and kc.audit.__name__ == "audit"
    maps = np.random.default_rng(0).random((8, 6, 6)).astype(np.float32)
    report = kc.audit(maps, embedding=None, clusters=1)
    assert isinstance(report, core.AuditReport) and len(report.table()["cluster"]) == 8


def test_docstring_example(capsys):
    code = core.audit.__doc__.split("```python")[1].split("```")[0]
    exec(textwrap.dedent(code), {})
    assert capsys.readouterr().out.startswith("class '0': 50% of images (45, cluster 0) put 21% of the map's "
                                              "energy in the top-left region (rows 0-10, columns 0-10)")


def test_least_typical_maps_and_all_zero_maps():
    maps = np.zeros((12, 8, 8), np.float32)
    maps[:, 3:5, 3:5] = 1.0
    maps[7, 0, 7] = 5.0        # one odd map
    maps[9] = 0.0              # empty: no scores, not clustered
    report = kc.audit(maps, embedding=None)
    assert report.per_class[0]["least_typical"][0] == 7
    assert report.clusters[9] == -1 and np.isnan(report.scores["border_share"][9])
    assert np.isnan(report.scores["energy_in_mask"]).all()  # no masks given


def test_area_downsizing_keeps_energy():
    m = statistics.area_matrix(10, 4)
    x = np.random.default_rng(0).random((3, 10))
    np.testing.assert_allclose((x @ m * 2.5).sum(axis=1), x.sum(axis=1), rtol=1e-5)
    p = np.random.default_rng(1).random((2, 64, 48)).astype(np.float32)
    small = statistics.downsize(p, (32, 32))
    np.testing.assert_allclose(small.sum(axis=(1, 2)), p.sum(axis=(1, 2)), rtol=1e-4)
    np.testing.assert_allclose(small[:, 0, 0], p[:, :2, 0].sum(axis=1) + 0.5 * p[:, :2, 1].sum(axis=1),
                               rtol=1e-4)


@pytest.mark.parametrize("layout, corner, name", [(1, (1,), "end"), (3, (0,), "front-top-left")])
def test_signals_and_volumes(layout, corner, name):
    size = 48 if layout == 1 else 12
    maps, labels, masks, planted = planted_maps(n=180, size=size, corner=corner, layout=layout, seed=3)
    report = kc.audit(maps, labels, masks=masks, embedding=None)
    top = report.findings[0]
    assert top["region"] == name and name in top["text"]
    precision, recall = precision_recall(top, planted)
    assert precision >= 0.9 and recall >= 0.9
    assert report.features.shape[1] == (32 if layout == 1 else 8 ** 3)


def test_store_read_chunk_by_chunk_equals_arrays(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    from keras_cam.store import StoreWriter

    maps, labels, masks, planted = planted_maps(n=150, seed=4)
    writer = StoreWriter(tmp_path / "maps.zarr", {"method": "test"}, resume=False, dtype="float32")
    for start in range(0, 150, 32):
        rows = slice(start, start + 32)
        writer.write(maps[rows], labels[rows], np.zeros(len(maps[rows])), None, [], chunk=32)
    writer.finish()
    reads = []
    original = core._Source.chunks

    def counted(self, rows=None):
        for start, chunk in original(self, rows):
            reads.append(len(chunk))
            yield start, chunk

    monkeypatch.setattr(core._Source, "chunks", counted)
    monkeypatch.setattr(core, "CHUNK_BYTES", 70 * 32 * 32 * 4)  # at most 70 maps a chunk: 64 (2 store chunks)
    from_store = kc.audit(str(tmp_path / "maps.zarr"), masks=masks, embedding=None)  # labels: the targets
    assert reads == [64, 64, 22]
    from_arrays = kc.audit(maps, labels, masks=masks, embedding=None)
    np.testing.assert_array_equal(from_store.clusters, from_arrays.clusters)
    for key in from_arrays.scores:
        np.testing.assert_allclose(from_store.scores[key], from_arrays.scores[key], rtol=1e-5)
    precision, recall = precision_recall(from_store.findings[0], planted)
    assert precision >= 0.9 and recall >= 0.9


@pytest.mark.backends
def test_explain_dataset_store_to_audit(tmp_path):
    pytest.importorskip("zarr")
    from tests.models import random_images, tiny_cam_model

    model = tiny_cam_model((16, 16, 3))
    x = random_images(24, 16)
    kc.explain_dataset(kc.GradCAM(model), x, targets=np.arange(24) % 3, store=tmp_path / "m.zarr",
                       batch_size=8, verbose=0)
    report = kc.audit(kc.open_store(tmp_path / "m.zarr"), embedding="spectral", out=tmp_path / "report")
    direct = kc.GradCAM(model)(x, targets=np.arange(24) % 3)
    np.testing.assert_array_equal(report.labels, np.arange(24) % 3)
    for c in range(3):
        np.testing.assert_allclose(report.per_class[c]["mean_map"], direct[c::3].mean(axis=0), atol=2e-3)
    assert os.path.isfile(tmp_path / "report" / "index.html")


def test_bad_input_one_clear_error(tmp_path):
    maps = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    cases = [
        (dict(maps=maps, labels=np.zeros(9, int)), "`labels` must be 10 integer class indices"),
        (dict(maps=maps, labels=-np.ones(10, int)), ">= 0"),
        (dict(maps=maps, masks=np.zeros((10, 4, 4), bool)), "`masks` must be bool"),
        (dict(maps=maps, masks=np.zeros((10, 8, 8), bool), boxes=np.zeros((10, 4))), "not both"),
        (dict(maps=maps[:, 0], boxes=np.zeros((10, 4))), "`boxes` are for 2-D maps"),
        (dict(maps=maps, clusters=0), "`clusters` must be 'auto'"),
        (dict(maps=maps, classes=["a"], labels=np.arange(10) % 2), "labels go up to 1"),
        (dict(maps=maps[:, :2]), "3 samples or more"),
        (dict(maps=np.zeros((4, 2, 8, 8, 8))), "audit one target at a time"),
        (dict(maps=maps, embedding="pca"), "`embedding` must be"),
        (dict(maps=str(tmp_path)), "not a heatmap store"),
    ]
    for kwargs, text in cases:
        with pytest.raises(ValueError, match=re.escape(text)):
            kc.audit(**kwargs)


# ------------------------------------------------------------------------------------------------------
# make_shapes(shortcut=...)


def test_make_shapes_shortcut_marks_a_share_and_changes_nothing_else():
    plain = kc.datasets.make_shapes(60, size=48, seed=3)
    images, labels, masks, marked = kc.datasets.make_shapes(60, size=48, seed=3,
                                                            shortcut=dict(class_index=1, share=0.8))
    assert marked.dtype == bool and marked.shape == (60,)
    assert int(marked.sum()) == 16 and (labels[marked] == 1).all()  # round(0.8 * 20)
    np.testing.assert_array_equal(labels, plain[1])
    np.testing.assert_array_equal(images[~marked], plain[0][~marked])
    np.testing.assert_array_equal(masks[~marked], plain[2][~marked])
    side = 4  # max(4, 48 // 10)
    patch = images[marked][:, 1:1 + side, 1:1 + side]
    expected = (np.arange(side)[:, None] + np.arange(side)[None]) % 2
    assert (patch == expected[None, :, :, None]).all()
    rest = images[marked].copy()
    rest[:, 1:1 + side, 1:1 + side] = plain[0][marked][:, 1:1 + side, 1:1 + side]
    np.testing.assert_array_equal(rest, plain[0][marked])  # only the mark differs
    assert not masks[marked][:, 1:1 + side, 1:1 + side].any()
    *_, boxes, again = kc.datasets.make_shapes(60, size=48, seed=3, return_boxes=True,
                                               shortcut=dict(class_index=1, share=0.8, corner="bottom-right"))
    np.testing.assert_array_equal(again, marked)
    assert boxes.shape == (60, 4)
    assert (images[marked][:, -5:-1, -5:-1] != 0).any()  # drawn elsewhere in the first call


def test_make_shapes_shortcut_errors():
    for shortcut, text in [(dict(class_index=3), "`shortcut['class_index']` must be an integer in 0..2"), (dict(share=1.5), "[0, 1]"),
                           (dict(corner="top"), "top-left"), (dict(size=40), "`shortcut['size']`"),
                           (dict(where=1), "keys among"), ("top-left", "must be a dict")]:
        with pytest.raises(ValueError, match=re.escape(text)):
            kc.datasets.make_shapes(6, size=48, shortcut=shortcut)


# ------------------------------------------------------------------------------------------------------
# The HTML report, in a real browser


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium or Chrome on PATH (Debian: apt-get install -y chromium; .ci/run installs it): "
                "the report's browser test needs one")


def _run_browser(browser, page, *args):
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=5000", *args, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    # What the page's scripts report (errors, uncaught exceptions) comes as "...:CONSOLE..." lines.
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done, console


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    images, labels, masks, marked = kc.datasets.make_shapes(90, size=32, seed=0,
                                                            shortcut=dict(class_index=0, share=0.5))
    yy, xx = np.mgrid[:32, :32]
    maps = np.zeros((90, 32, 32), np.float32)
    for i in range(90):
        ys, xs = np.nonzero(masks[i])
        m = np.exp(-((yy - ys.mean()) ** 2 + (xx - xs.mean()) ** 2) / 20.0)
        if marked[i]:
            m = 0.3 * m + np.exp(-((yy - 2) ** 2 + (xx - 2) ** 2) / 4.0)
        maps[i] = m / m.max()
    out = tmp_path_factory.mktemp("audit") / "report"
    report = kc.audit(maps, labels, masks=masks, classes=["circle", "square", "triangle"], images=images,
                      embedding="tsne", out=str(out))
    return out, report, marked


def test_report_files_and_page(report_dir):
    out, report, marked = report_dir
    precision, recall = precision_recall(report.findings[0], marked)
    assert precision >= 0.9 and recall >= 0.9
    assert len(report.findings) == 1  # clusters that differ by where the object is are no findings
    page = (out / "index.html").read_text()
    for c in range(3):
        for kind in ("mean", "clusters", "embedding"):
            assert f'src="class_{c}_{kind}.png"' in page and (out / f"class_{c}_{kind}.png").is_file()
    assert (out / "mean_maps.png").is_file()
    assert report.findings[0]["text"].replace("'", "&#x27;") in page
    assert "http://" not in page and "https://" not in page  # nothing from the network
    linked = re.findall(r'href="(overlays/\d+\.png)"', page)
    assert linked and all((out / link).is_file() for link in linked)
    rows = (out / "maps.csv").read_text().splitlines()
    assert len(rows) == 91 and rows[0].startswith("index,class,cluster,energy_in_mask")
    overlay = kc.visualize.read_image(str(out / linked[0]))
    assert overlay.shape[0] >= 96 and overlay.std() > 0.05  # a picture, not a blank tile


def test_report_opens_in_a_browser_without_errors(report_dir):
    browser = _browser()
    out, _, _ = report_dir
    done, console = _run_browser(browser, out / "index.html", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body[^>]*>", done.stdout).group(0)
    loaded = int(re.search(r'data-images="(\d+)"', body).group(1))
    assert loaded >= 10 and 'data-broken="0"' in body, body  # the page's own check: every <img> resolved
    assert console == []
    shot = out.parent / "screenshot.png"
    done, console = _run_browser(browser, out / "index.html", f"--screenshot={shot}", "--window-size=1280,1600")
    assert done.returncode == 0 and console == []
    picture = kc.visualize.read_image(str(shot))
    assert picture.shape[:2] == (1600, 1280) and picture.std() > 0.05


def test_browser_check_can_fail(report_dir, tmp_path):
    """The checks above do see a script error and a missing picture."""
    browser = _browser()
    out, _, _ = report_dir
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    page = (broken / "index.html").read_text()
    (broken / "index.html").write_text(page.replace("<h2>Findings</h2>", '<h2>Findings</h2><img src="gone.png">'
                                                    "<script>undefinedFunction();</script>"))
    done, console = _run_browser(browser, broken / "index.html", "--dump-dom")
    assert 'data-broken="1"' in done.stdout and any("undefinedFunction" in line for line in console)


# ------------------------------------------------------------------------------------------------------
# keras-cam audit


def _write_store(path, maps, labels, chunk=32):
    from keras_cam.store import StoreWriter

    writer = StoreWriter(path, {"method": "test"}, resume=False, dtype="float16")
    for start in range(0, len(maps), chunk):
        rows = slice(start, start + chunk)
        writer.write(maps[rows], labels[rows], np.zeros(len(maps[rows])), None, [], chunk=chunk)
    writer.finish()


def test_cli_audit_store(tmp_path, capsys):
    pytest.importorskip("zarr")
    from keras_cam import cli

    maps, labels, masks, planted = planted_maps(n=150, seed=5)
    _write_store(tmp_path / "maps.zarr", maps, labels)
    np.save(tmp_path / "masks.npy", masks)
    out = tmp_path / "report"
    assert cli.main(["audit", str(tmp_path / "maps.zarr"), "--out", str(out), "--masks",
                     str(tmp_path / "masks.npy"), "--classes", "circle,square,triangle",
                     "--embedding", "spectral"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("150 maps, 3 classes, 1 finding(s)\n1. class 'circle': 50% of images")
    assert "top-left region" in text and f"report: {out / 'index.html'}" in text
    assert (out / "index.html").is_file() and (out / "class_0_clusters.png").is_file()
    page = (out / "index.html").read_text()
    assert "from " + str(tmp_path / "maps.zarr") in page


def test_cli_audit_errors_are_one_line(tmp_path, capsys):
    pytest.importorskip("zarr")
    from keras_cam import cli

    maps, labels, masks, _ = planted_maps(n=30, seed=6)
    _write_store(tmp_path / "maps.zarr", maps, labels)
    np.save(tmp_path / "masks.npy", masks[:, :8])
    (tmp_path / "junk.npy").write_text("not numpy")
    cases = [
        (["audit", str(tmp_path / "nowhere.zarr")], "is not a heatmap store written by kc.explain_dataset"),
        (["audit", str(tmp_path / "maps.zarr"), "--masks", str(tmp_path / "masks.npy")], "`masks` must be bool"),
        (["audit", str(tmp_path / "maps.zarr"), "--labels", str(tmp_path / "junk.npy")],
         "cannot read --labels"),
        (["audit", str(tmp_path / "maps.zarr"), "--clusters", "0"], "expected a positive integer"),
        (["audit", str(tmp_path / "maps.zarr"), "--masks", str(tmp_path / "masks.npy"), "--boxes",
          str(tmp_path / "masks.npy")], "Pass `masks` or `boxes`, not both"),
    ]
    for argv, text in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(("keras-cam: error: ", "keras-cam audit: error: ")), err
        assert text in err and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------------------
# keras-cam demo --data shortcut (small sizes)


@pytest.mark.slow
def test_shortcut_demo_finds_the_planted_mark(tmp_path):
    pytest.importorskip("zarr")
    from keras_cam.demo import run_shortcut_demo

    summary = run_shortcut_demo(str(tmp_path), epochs=4, n_train=600, n_val=150, size=32, verbose=0)
    assert summary["precision"] >= 0.9 and summary["recall"] >= 0.9
    assert summary["corner_named"] and summary["region"] == "top-left" and "top-left" in summary["finding"]
    assert summary["accuracy"]["marked"] == 1.0 and summary["marked_held_out"] == 25
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "summary.json").is_file()


@pytest.mark.parametrize("layout", [1, 3])
def test_report_for_signals_and_volumes(layout, tmp_path):
    size = 48 if layout == 1 else 12
    maps, labels, masks, planted = planted_maps(n=90, size=size, layout=layout, seed=8)
    inputs = np.random.default_rng(0).random(maps.shape + (1,)).astype(np.float32)
    for images, name in ((None, "alone"), (inputs, "over")):
        out = tmp_path / name
        report = kc.audit(maps, labels, masks=masks, images=images, embedding="spectral", out=str(out))
        page = (out / "index.html").read_text()
        pictures = re.findall(r'src="([^"]+\.png)"', page)
        assert len(pictures) == 1 + 3 * 3 and all((out / p).is_file() for p in pictures)
        gallery = kc.visualize.read_image(str(out / "class_0_clusters.png"))
        assert gallery.std() > 0.05
        overlays = re.findall(r'href="(overlays/\d+\.png)"', page)
        assert overlays and all((out / o).is_file() for o in overlays)
        precision, recall = precision_recall(report.findings[0], planted)
        assert precision >= 0.9 and recall >= 0.9
