"""The audit's report: one self-contained HTML page with PNGs beside it, readable without a server or network.

`index.html` shows the findings, then per class its statistics, mean map, cluster galleries (the maps
closest to each cluster's centre) and the 2-D embedding, then a sortable table of the notable images with
their scores, each linking to its overlay. The same pictures are plain PNGs for people who do not open HTML,
and `maps.csv` lists every map's scores. The page checks itself: a small script counts the images that did
not load and says so on the page (`data-broken` on `<body>`), which the browser test reads.
"""
from __future__ import annotations

import csv
import functools
import html
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

from keras_cam import visualize
from keras_cam.visualize.overlays import colormap_code

#: Maps shown per cluster in the galleries.
GALLERY = 6
#: Rows of the page's table (the full list is maps.csv).
MAX_ROWS = 300
#: Images of each finding listed in the table.
PER_FINDING = 24
#: Tile side of the pictures, in pixels.
TILE = 96
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _colored(values: np.ndarray) -> np.ndarray:
    """A map in [0, 1] (or any scale: divided by its maximum) as uint8 RGB in the jet colormap."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0, None)
    top = float(v.max())
    v = v / top if top > 0 else v
    bgr = cv2.applyColorMap(np.round(v * 255).astype(np.uint8), colormap_code("jet"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _fit(picture: np.ndarray, side: int = TILE) -> np.ndarray:
    """Resized (nearest) so its longer edge is `side`."""
    h, w = picture.shape[:2]
    scale = side / max(h, w)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(picture, size, interpolation=cv2.INTER_NEAREST)


def _display(image: Any) -> Optional[np.ndarray]:
    """An input as float32 in [0, 1] for pictures (min-max scaled when it is not already in range)."""
    if image is None:
        return None
    x = np.asarray(image)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if lo < 0 or hi > 1:
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return x


def picture(heatmap: np.ndarray, image: Optional[np.ndarray] = None) -> np.ndarray:
    """One map as a uint8 RGB picture about TILE pixels wide: over its input when given (2-D `overlay`,
    1-D `overlay_signal`, 3-D `volume_montage`), else the colored map (a band for signals, the maximum
    along depth for volumes)."""
    rank = heatmap.ndim
    m = np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0, None)
    m = m / m.max() if m.max() > 0 else m
    image = _display(image)
    if rank == 1:
        if image is not None:
            return visualize.overlay_signal(image, m, height=TILE // 2, width=2 * TILE)
        return cv2.resize(_colored(m[None]), (2 * TILE, TILE // 2), interpolation=cv2.INTER_NEAREST)
    if rank == 3:
        if image is not None:
            return _fit(visualize.volume_montage(image, m, count=4, cols=2, labels=False), 2 * TILE)
        return _fit(_colored(m.max(axis=0)))
    if image is not None:
        return _fit(visualize.overlay(image, m, alpha=0.5))
    return _fit(_colored(m))


def _pad_to(tiles: Sequence[np.ndarray]) -> List[np.ndarray]:
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    return [np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]), (0, 0))) for t in tiles]


def _scatter(points: np.ndarray, clusters: np.ndarray, title: str, side: int = 360) -> np.ndarray:
    """The embedding as a scatter plot: one colour per cluster, a legend; drawn with OpenCV."""
    legend = 90
    canvas = np.full((side, side + legend, 3), 255, np.uint8)
    ok = np.isfinite(points).all(axis=1)
    pts, cl = points[ok], clusters[ok]
    if len(pts):
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        xy = 20 + (pts - lo) / span * (side - 40)
        for (x, y), c in zip(xy, cl):
            color = (160, 160, 160) if c < 0 else _PALETTE[c % len(_PALETTE)]
            cv2.circle(canvas, (int(x), int(side - y)), 3, color, -1, cv2.LINE_AA)
    cv2.putText(canvas, title, (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(int(cl.max(initial=-1)) + 1):
        y = 30 + 14 * k
        cv2.circle(canvas, (side + 8, y - 4), 4, _PALETTE[k % len(_PALETTE)], -1, cv2.LINE_AA)
        cv2.putText(canvas, f"cluster {k}", (side + 16, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas


class _Inputs:
    """The inputs behind the maps, read only for the rows shown: an array, the store's image files, or none."""

    def __init__(self, report: Any, images: Any) -> None:
        self.images = images
        store = report._source.store
        self.paths = store["paths"] if images is None and store is not None and "paths" in store else None

    def __call__(self, i: int) -> Optional[np.ndarray]:
        if self.images is not None:
            return np.asarray(self.images[i])
        if self.paths is not None:
            try:
                return visualize.read_image(str(self.paths[i]))
            except (OSError, ValueError):
                return None  # moved or unreadable since: the map alone
        return None


def _gallery(report: Any, members: np.ndarray, clusters: np.ndarray) -> Dict[int, np.ndarray]:
    """Per cluster, up to GALLERY maps closest (cosine) to the cluster's mean small map."""
    x = report.features[members].astype(np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = {}
    for c in range(int(clusters.max(initial=-1)) + 1):
        inside = np.flatnonzero(clusters == c)
        centre = x[inside].mean(axis=0)
        closest = np.argsort(-(x[inside] @ centre), kind="stable")[:GALLERY]
        out[c] = members[inside[closest]]
    return out


_SCRIPT = """
function sortTable(th) {
  var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
  var up = th.dataset.order !== 'asc';
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { delete c.dataset.order; });
  th.dataset.order = up ? 'asc' : 'desc';
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
    var nx = parseFloat(x), ny = parseFloat(y), r;
    if (isNaN(nx) && isNaN(ny)) { r = String(x).localeCompare(String(y)); }
    else if (isNaN(nx)) { r = 1; } else if (isNaN(ny)) { r = -1; } else { r = nx - ny; }
    return up ? r : -r;
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
window.addEventListener('load', function () {
  var broken = Array.prototype.filter.call(document.images, function (img) {
    return !(img.complete && img.naturalWidth > 0);
  });
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.broken = String(broken.length);
  if (broken.length) {
    var note = document.getElementById('broken');
    note.textContent = broken.length + ' picture(s) did not load: keep the PNG files beside index.html.';
    note.hidden = false;
  }
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.finding { margin: 6px 0; } .meta { color: #666; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[data-order=asc]::after { content: ' \\25B2'; } th[data-order=desc]::after { content: ' \\25BC'; }
td.name { text-align: left; } .pictures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
#broken { background: #fee; border: 1px solid #c33; padding: 6px; }
"""


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _cell(value: Any, text: Optional[str] = None, name: bool = False) -> str:
    v = "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else value
    cls = ' class="name"' if name else ""
    return f'<td{cls} data-v="{html.escape(str(v))}">{text if text is not None else html.escape(str(v))}</td>'


def write_report(report: Any, out_dir: str, images: Any = None) -> str:
    """Writes index.html, the PNGs and maps.csv; returns the path of index.html."""
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "overlays"), exist_ok=True)
    inputs = _Inputs(report, images)
    save = functools.partial(_save, out_dir)

    sections, mean_tiles, mean_names, shown = [], [], [], []
    for entry in report.per_class:
        if not entry["count"]:
            continue
        mean_tiles.append(picture(entry["mean_map"]))
        mean_names.append(f"{report.classes[entry['index']]} ({entry['count']})")
        sections.append(_class_section(report, entry, inputs, save, shown))
    if mean_tiles:
        save("mean_maps.png", visualize.image_grid(_pad_to(mean_tiles), cols=min(len(mean_tiles), 8), margin=3,
                                                  labels=mean_names))
    findings = []
    for f in report.findings:
        shown += list(f["images"][:PER_FINDING])
        findings.append(f'<li class="finding">{html.escape(f["text"])} <a href="#class-{f["class_index"]}">'
                        f"see the class</a></li>")
    # The table: the images shown above, each finding's first ones, the least typical; in that order.
    rows = list(dict.fromkeys(int(i) for i in shown))[:MAX_ROWS]
    body = [_table_row(report, i, inputs, save) for i in rows]
    _write_csv(report, os.path.join(out_dir, "maps.csv"))
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(_page(report, sections, findings, body))
    return path


def _save(out_dir: str, name: str, image: np.ndarray) -> str:
    """Writes `image` as `out_dir/name`; returns `name` (the page's relative link)."""
    visualize.save_image(os.path.join(out_dir, name), image)
    return name


def _class_section(report: Any, entry: Dict[str, Any], inputs: "_Inputs", save: Callable,
                   shown: List[int]) -> str:
    """One class's section: statistics, mean map, cluster galleries, embedding, cluster descriptions and the
    least typical maps. The maps it shows are appended to `shown` (the table lists them)."""
    c, name = entry["index"], report.classes[entry["index"]]
    mean_png = save(f"class_{c}_mean.png", picture(entry["mean_map"]))
    figures = [f'<figure><img src="{mean_png}" alt="mean map of {html.escape(name)}">'
               f"<figcaption>mean map</figcaption></figure>"]
    members = np.flatnonzero((report.labels == c) & (report.clusters >= 0))
    if members.size:
        figures += _cluster_figures(report, c, members, inputs, save, shown)
    shown += list(entry["least_typical"])
    stats = (f"{entry['count']} maps; energy inside the object (median) {_fmt(entry['energy_in_mask'])}; "
             f"pointing game {_fmt(entry['pointing_game'])}; energy on the border (median) "
             f"{_fmt(entry['border_share'])}; concentration (energy in the top 10% of samples, median) "
             f"{_fmt(entry['concentration'])}; {entry['clusters']} cluster(s)")
    atypical = ", ".join(f'<a href="overlays/{i}.png">{i}</a>' for i in entry["least_typical"])
    described = "".join(f'<li>{"<b>finding:</b> " if d["notable"] else ""}{html.escape(d["text"])}</li>'
                        for d in entry.get("descriptions", []))
    return (f'<section id="class-{c}"><h2>class {html.escape(name)}</h2><p class="meta">{stats}.</p>'
            f'<div class="pictures">{"".join(figures)}</div>'
            + (f"<p>Clusters:</p><ul>{described}</ul>" if described else "") +
            f"<p>Least typical maps: {atypical or '–'}</p></section>")


def _cluster_figures(report: Any, c: int, members: np.ndarray, inputs: "_Inputs", save: Callable,
                     shown: List[int]) -> List[str]:
    """A class's cluster galleries (a row of the maps closest to each centre) and its embedding."""
    name, clusters = report.classes[c], report.clusters
    tiles, tile_names = [], []
    for k, rows in _gallery(report, members, clusters[members]).items():
        for j, i in enumerate(rows):
            tiles.append(picture(_map(report, i), inputs(i)))
            size = int(np.sum(clusters[members] == k))
            tile_names.append(f"cluster {k} ({size})" if j == 0 else "")
        tiles += [np.zeros_like(tiles[-1])] * (GALLERY - len(rows))
        tile_names += [""] * (GALLERY - len(rows))
        shown += list(rows)
    mosaic = visualize.image_grid(_pad_to(tiles), cols=GALLERY, margin=3, labels=tile_names)
    clusters_png = save(f"class_{c}_clusters.png", mosaic)
    figures = [f'<figure><img src="{clusters_png}" alt="clusters of {html.escape(name)}">'
               f"<figcaption>clusters: the {GALLERY} maps closest to each cluster's centre, one "
               "row per cluster</figcaption></figure>"]
    method = {"tsne": "t-SNE", "umap": "UMAP"}.get(report.embedding_method, "spectral")
    if report.embedding_method is not None:
        scatter = _scatter(report.embedding[members], clusters[members], f"{name}: {method}")
        embed_png = save(f"class_{c}_embedding.png", scatter)
        figures.append(f'<figure><img src="{embed_png}" alt="embedding of {html.escape(name)}">'
                       f"<figcaption>{method} embedding, coloured by cluster</figcaption></figure>")
    return figures


def _table_row(report: Any, i: int, inputs: "_Inputs", save: Callable) -> str:
    """Map `i`'s row of the table; writes its overlay."""
    scores = report.scores
    save(f"overlays/{i}.png", picture(_map(report, i), inputs(i)))
    return ("<tr>" + _cell(i, f'<a href="overlays/{i}.png">{i}</a>')
            + _cell(report.classes[report.labels[i]], name=True) + _cell(int(report.clusters[i]))
            + "".join(_cell(float(scores[k][i]), _fmt(float(scores[k][i])))
                      for k in ("energy_in_mask", "pointing", "border_share", "concentration", "atypicality"))
            + "</tr>")


def _page(report: Any, sections: List[str], findings: List[str], body: List[str]) -> str:
    """The whole HTML page."""
    head = "".join(f'<th onclick="sortTable(this)">{h}</th>' for h in
                   ("image", "class", "cluster", "energy in object", "pointing", "border", "concentration",
                    "atypicality"))
    source, names = getattr(report._source.store, "path", None), report.classes
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>keras-cam audit</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head>
<body>
<h1>What the model relies on: audit of {len(report.labels)} maps</h1>
<p class="meta">Maps of shape {report.spatial}{f" from {html.escape(str(source))}" if source else ""};
{len(names)} classes; clusters by spectral clustering of the maps downsized, on a k-nearest-neighbour graph,
their number picked by the eigengap (SpRAy).</p>
<figure><img src="mean_maps.png" alt="mean map per class"><figcaption>mean map per class</figcaption></figure>
<p id="broken" hidden></p>
<h2>Findings</h2>
{"<ol>" + "".join(findings) + "</ol>" if findings else "<p>No cluster stands out: within each class the maps put their energy in the same places.</p>"}
{"".join(sections)}
<h2>Images</h2>
<p class="meta">{len(body)} images (the galleries, the findings and the least typical maps; every map's
scores are in <a href="maps.csv">maps.csv</a>). Click a column to sort; an image's number opens its overlay.</p>
<table id="images"><thead><tr>{head}</tr></thead><tbody>
{"".join(body)}
</tbody></table>
</body></html>
"""


def _map(report: Any, i: int) -> np.ndarray:
    return np.asarray(report._source.array[int(i)], dtype=np.float32)


def _write_csv(report: Any, path: str) -> None:
    keys = list(report.scores)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "class", "cluster"] + keys)
        for i in range(len(report.labels)):
            writer.writerow([i, report.classes[report.labels[i]], int(report.clusters[i])]
                            + [f"{float(report.scores[k][i]):.4g}" for k in keys])
