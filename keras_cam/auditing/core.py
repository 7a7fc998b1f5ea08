"""`kc.audit`: a whole dataset's maps -> per-class statistics, strategies (clusters) and findings in words.

One pass reads the maps chunk by chunk (from a store written by `kc.explain_dataset`, or from arrays) and
keeps per map a few scores and a small copy (`statistics.py`); then each class's small copies are clustered
(`clustering.py`) and the clusters that stand out become findings (`findings.py`). Memory is
O(N * small copy) plus one chunk, never O(N * map) or O(N^2) (docs/architecture.md, "Dataset audit").
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from keras_cam.auditing.clustering import require_sklearn, embed, spectral_clusters
from keras_cam.auditing.statistics import ChunkStatistics, class_summary, masks_from_boxes
from keras_cam.auditing.findings import cluster_findings, merge_strategies, rank

__all__ = ["AuditReport", "audit"]

#: Rows read at once are capped so that one chunk of float32 maps stays under this many bytes.
CHUNK_BYTES = 16 * 2 ** 20
#: Maps per class placed in the 2-D embedding (t-SNE / UMAP cost grows faster than linearly).
EMBED_MAX = 1000
#: Least typical maps listed per class.
ATYPICAL = 8


class _Source:
    """The maps to audit: a `HeatmapStore`, a store path, a zarr-like array or a numpy array, read by rows."""

    def __init__(self, maps: Any) -> None:
        from keras_cam.store import HeatmapStore, open_store

        self.store = None
        if isinstance(maps, (str, os.PathLike)):
            maps = open_store(maps)
        if isinstance(maps, HeatmapStore):
            self.store = maps
            if "heatmaps" not in maps:
                raise ValueError(f"The store '{maps.path}' holds no maps yet (no finished batch).")
            self.array = maps["heatmaps"]
            self.n = len(maps)
            rows = int(getattr(self.array, "chunks", (256,))[0])
        elif hasattr(maps, "shape") and hasattr(maps, "__getitem__") and not isinstance(maps, np.ndarray):
            self.array, self.n = maps, int(maps.shape[0])  # zarr, h5py, memmap-like: read by slices
            rows = int(getattr(maps, "chunks", (256,))[0] or 256)
        else:
            try:
                self.array = np.asarray(maps)
            except (TypeError, ValueError) as e:
                raise ValueError(f"`maps` must be an (N, *spatial) array or a store, got {type(maps).__name__} "
                                 f"({e}).") from None
            self.n, rows = (len(self.array) if self.array.ndim else 0), 256
            if not np.issubdtype(self.array.dtype, np.number) and self.array.dtype != bool:
                raise ValueError(f"`maps` must be numeric, got dtype {self.array.dtype}.")
        self.spatial = tuple(int(s) for s in self.array.shape[1:])
        if not 1 <= len(self.spatial) <= 3 or self.n < 1:
            raise ValueError(f"`maps` must be (N, T) signals, (N, H, W) images or (N, D, H, W) volumes with "
                             f"N >= 1, got shape {tuple(self.array.shape)}; for (N, K, ...) maps of several "
                             "targets, audit one target at a time (maps[:, k]).")
        if min(self.spatial) < 3:
            raise ValueError(f"Every spatial axis of the maps must have 3 samples or more, got "
                             f"{self.spatial}.")
        per_row = 4 * int(np.prod(self.spatial))
        cap = max(1, CHUNK_BYTES // per_row)
        self.rows = max(1, (cap // rows) * rows) if rows <= cap else cap

    def chunks(self, rows: Optional[int] = None):
        rows = rows or self.rows
        for start in range(0, self.n, rows):
            yield start, np.asarray(self.array[start:start + rows], dtype=np.float32)


def _labels(labels: Any, source: _Source) -> np.ndarray:
    if labels is None:
        if source.store is not None and "targets" in source.store:
            labels = source.store["targets"][: source.n]
            name = "the store's targets"
        else:
            return np.zeros(source.n, np.int64)
    else:
        name = "`labels`"
    out = np.asarray(labels)
    if out.shape != (source.n,) or not (np.issubdtype(out.dtype, np.integer) or out.dtype == bool):
        raise ValueError(f"{name} must be {source.n} integer class indices (one per map), got an array of "
                         f"shape {out.shape} and dtype {out.dtype}"
                         + ("; for several targets per map pass `labels`." if labels is not None else "."))
    if out.size and out.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got {int(out.min())}.")
    return out.astype(np.int64)


def _regions(masks: Any, boxes: Any, source: _Source):
    """A function (start, stop) -> bool (n, *spatial) object masks, or None."""
    if masks is not None and boxes is not None:
        raise ValueError("Pass `masks` or `boxes`, not both.")
    if masks is not None:
        shape = tuple(getattr(masks, "shape", np.shape(masks)))
        if shape != (source.n,) + source.spatial:
            raise ValueError(f"`masks` must be bool {(source.n,) + source.spatial} (one mask per map, at the "
                             f"maps' size), got shape {shape}.")
        return lambda a, b: np.asarray(masks[a:b]).astype(bool)
    if boxes is not None:
        if len(source.spatial) != 2:
            raise ValueError(f"`boxes` are for 2-D maps; these maps are {len(source.spatial)}-D: pass `masks`.")
        b = np.asarray(boxes)
        if b.shape != (source.n, 4) or not np.issubdtype(b.dtype, np.number):
            raise ValueError(f"`boxes` must be ({source.n}, 4) rows (x0, y0, x1, y1) in map pixels, got shape "
                             f"{b.shape}.")
        b = np.round(b).astype(np.int64)
        return lambda s, e: masks_from_boxes(b[s:e], source.spatial)
    return None


def _class_names(classes: Any, labels: np.ndarray) -> List[str]:
    count = int(labels.max(initial=0)) + 1
    if classes is None:
        return [str(c) for c in range(count)]
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"`classes` must be a sequence of class names (str), got {classes!r}.")
    names = list(classes)
    if len(names) < count:
        raise ValueError(f"`classes` names {len(names)} classes but the labels go up to {count - 1}.")
    return names


class AuditReport:
    """What `kc.audit` found in a dataset's maps.

    Attributes:
        classes: class names (label `c` is `classes[c]`).
        labels: int (N,) class of each map.
        clusters: int (N,) each map's cluster within its class, numbered by size (0 = largest); -1 where not
            clustered (a class with too few maps, or an all-zero map).
        findings: list of dicts, most notable first: `class` (name), `class_index`, `cluster`, `share` (of
            its class), `images` (int indices of the cluster's maps), `text` (the finding in words),
            `region` (where the cluster's energy lies: "top-left", "centre", ...), `energy_in_region` and
            `energy_in_region_rest` (median shares, the cluster and the rest of its class), with masks or
            boxes `energy_in_mask` and `energy_in_mask_rest`, `fixed_spot` (the maps peak at one spot) and
            `score` (how notable). A cluster is a finding when, with masks or boxes, its maps put clearly
            less energy on the object than the rest of their class, or, without them, peak at one fixed
            spot (a watermark, a corner tag); clusters that differ only by where the object is are not.
        per_class: one dict per class: `name`, `count`, `mean_map` (float32, the maps' size),
            `energy_in_mask` (median share of energy inside the mask or box; NaN without), `pointing_game`
            (share of maps whose maximum lies on the object), `border_share` (median share of energy on the
            outer 10 % of each axis), `concentration` (median share of energy in the top 10 % of samples),
            `clusters` (how many), `eigenvalues` (of the normalized kNN Laplacian, ascending) and
            `least_typical` (indices of the maps least like their class's, most atypical first) and
            `descriptions` (every cluster described like a finding, `notable` telling which are findings).
        scores: per map, float (N,) arrays: `energy_in_mask`, `pointing`, `border_share`,
            `concentration`, `atypicality` (1 - cosine similarity of the map's small copy to its class's
            mean), `energy` (the map's positive total).
        embedding: float32 (N, 2) coordinates of each map in its class's picture (NaN where not placed).
        spatial: the maps' spatial shape.

    `save(out_dir)` writes the HTML report and its PNGs; `table()` returns the per-map scores as a pandas
    DataFrame (a dict of arrays without pandas).
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def table(self) -> Any:
        columns = {"index": np.arange(len(self.labels)), "label": self.labels,
                   "class": np.asarray(self.classes, dtype=object)[self.labels], "cluster": self.clusters}
        columns.update(self.scores)
        try:
            import pandas as pd
        except ImportError:
            return columns
        return pd.DataFrame(columns)

    def save(self, out_dir: str, images: Any = None) -> str:
        """Writes `index.html` and its PNGs (mean maps, cluster mosaics, embeddings, overlays) to `out_dir`.

        Args:
            out_dir: folder (created if needed).
            images: the inputs (N, ...) for overlays; default: those given to `kc.audit`, else the store's
                image files when it has paths, else the maps are shown alone.

        Returns:
            The path of `index.html`.
        """
        from keras_cam.auditing.html import write_report

        return write_report(self, out_dir, images if images is not None else self._images)

    def __repr__(self) -> str:
        return (f"AuditReport({len(self.labels)} maps of shape {self.spatial}, {len(self.classes)} classes, "
                f"{len(self.findings)} findings)")


def audit(
    maps: Any,
    labels: Any = None,
    masks: Any = None,
    boxes: Any = None,
    classes: Optional[Sequence[str]] = None,
    clusters: Union[str, int] = "auto",
    out: Optional[str] = None,
    *,
    images: Any = None,
    max_clusters: int = 8,
    neighbors: Union[str, int] = "auto",
    embedding: Optional[str] = "auto",
    seed: int = 0,
) -> AuditReport:
    """Audits a whole dataset's maps for the strategies a model uses, class by class (SpRAy).

    Reads the maps chunk by chunk and computes, per class: the mean map; where the energy lies (inside the
    masks or boxes, the pointing game, on the border); how concentrated the maps are; the maps least like
    their class's. Then it clusters each class's maps, downsized to 32x32 (32 samples for signals, 8^3 for
    volumes), by spectral clustering of a sparse k-nearest-neighbour graph, the number of clusters picked by
    the eigengap (Lapuschkin et al., 2019), places them in 2-D for a picture (t-SNE, or UMAP when
    umap-learn is installed), and words the clusters that put their energy where the rest of their class
    does not as findings. Needs scikit-learn: `pip install "keras-cam[audit]"`.

    Args:
        maps: (N, T), (N, H, W) or (N, D, H, W) maps (any method, signed ones count by their positive part),
            or a store written by `kc.explain_dataset` (its path or `kc.open_store(...)`).
        labels: int (N,) class of each map (default: the store's explained targets; else one class).
        masks: bool (N, *spatial) object masks at the maps' size, for the energy inside the object.
        boxes: (N, 4) object boxes (x0, y0, x1, y1) in map pixels (2-D maps), instead of masks.
        classes: class names (default "0", "1", ...).
        clusters: "auto" (eigengap) or the number of clusters per class.
        out: a folder: also write the report there (`AuditReport.save`).
        images: the inputs (N, ...) for the report's overlays (an array; only the shown rows are read).
        max_clusters: the most clusters per class "auto" picks.
        neighbors: k of the kNN graph; "auto": the square root of the class's size, within 3..10.
        embedding: "auto" (UMAP when installed, else t-SNE), "tsne", "umap", "spectral" (the clustering's
            eigenvectors: instant) or None.
        seed: seed of the PCA, k-means and embedding.

    Returns:
        An `AuditReport`: `report.clusters`, `report.findings`, `report.per_class`, `report.save(out_dir)`.

    Example:

    ```python
    import numpy as np, keras_cam as kc
    rng = np.random.default_rng(0)
    maps = rng.random((90, 32, 32)).astype("float32") * 0.1
    for i in range(90):                   # each map looks at its object, anywhere
        y, x = rng.integers(8, 20, 2)
        maps[i, y:y + 6, x:x + 6] += 1.0
    maps[45:, 1:3, 1:3] += 4.0            # half of them also at a mark in the top-left corner
    report = kc.audit(maps, embedding="spectral")
    print(report.findings[0]["text"])
    # class '0': 50% of images (45, cluster 0) put 21% of the map's energy in the top-left region
    # (rows 0-10, columns 0-10), vs 7% for the rest of the class, their maxima at one spot (row 1, column 1).
    ```
    """
    embedding = _check_options(clusters, embedding, max_clusters, neighbors)
    source = _Source(maps)
    labels = _labels(labels, source)
    names = _class_names(classes, labels)
    region_of = _regions(masks, boxes, source)
    if images is not None and len(images) != source.n:
        raise ValueError(f"`images` must hold one input per map ({source.n}), got {len(images)}.")

    stats = _statistics(source, labels, len(names), region_of)
    options = dict(clusters=clusters, max_clusters=max_clusters, neighbors=neighbors, embedding=embedding,
                   seed=seed)
    per_map, per_class = _PerMap(source.n), []
    rng = np.random.default_rng(seed)
    for c, (name, mean_map) in enumerate(zip(names, stats.mean_maps())):
        per_class.append(_audit_class(stats, labels, c, name, mean_map, per_map, rng, options))
    found = [d for entry in per_class for d in entry["descriptions"]]

    report = AuditReport(
        classes=names, labels=labels, clusters=per_map.assigned, findings=rank(found), per_class=per_class,
        scores={"energy_in_mask": stats.in_mask, "pointing": stats.pointing, "border_share": stats.border,
                "concentration": stats.concentration, "atypicality": per_map.atypical, "energy": stats.total},
        embedding=per_map.placed, spatial=source.spatial, regions=stats.regions, features=stats.features,
        embedding_method=embedding, _images=images, _source=source,
    )
    if out is not None:
        report.save(out)
    return report


def _statistics(source: _Source, labels: np.ndarray, classes: int, region_of: Any) -> ChunkStatistics:
    """One pass over the maps, chunk by chunk: the per-map scores and small copies."""
    stats = ChunkStatistics(source.n, source.spatial, classes)
    for start, chunk in source.chunks():
        stop = start + len(chunk)
        stats.add(start, chunk, labels[start:stop], region_of(start, stop) if region_of else None)
    return stats


def _check_options(clusters: Union[str, int], embedding: Optional[str], max_clusters: int,
                   neighbors: Union[str, int]) -> Optional[str]:
    """Refuses bad clustering options (and a missing scikit-learn); returns the embedding method to use."""
    if not (clusters == "auto" or (isinstance(clusters, (int, np.integer)) and not isinstance(clusters, bool)
                                   and clusters >= 1)):
        raise ValueError(f"`clusters` must be 'auto' or an integer >= 1, got {clusters!r}.")
    if embedding not in (None, "auto", "tsne", "umap", "spectral"):
        raise ValueError(f"`embedding` must be 'auto', 'tsne', 'umap', 'spectral' or None, got {embedding!r}.")
    for name, value in (("max_clusters", max_clusters), ("neighbors", neighbors)):
        if name == "neighbors" and value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
            also = "'auto' or " if name == "neighbors" else ""
            raise ValueError(f"`{name}` must be {also}an integer >= 2, got {value!r}.")
    require_sklearn()
    if embedding == "auto":
        embedding = "umap" if importlib.util.find_spec("umap") is not None else "tsne"
    return embedding


class _PerMap:
    """What the class-by-class pass fills in per map: its cluster, atypicality and place in the picture."""

    def __init__(self, n: int) -> None:
        self.assigned = np.full(n, -1, np.int64)
        self.atypical = np.full(n, np.nan)
        self.placed = np.full((n, 2), np.nan, np.float32)


def _audit_class(stats: ChunkStatistics, labels: np.ndarray, c: int, name: str, mean_map: np.ndarray,
                 per_map: _PerMap, rng: np.random.Generator, options: Dict[str, Any]) -> Dict[str, Any]:
    """One class's summary, clusters, embedding and cluster descriptions (its maps' entries of `per_map`)."""
    members = np.flatnonzero((labels == c) & (stats.total > 0))
    entry: Dict[str, Any] = {"name": name, "index": c, "count": int(stats.counts[c]),
                             "mean_map": mean_map, "clusters": 0, "eigenvalues": np.zeros(0),
                             "least_typical": np.zeros(0, np.int64), "descriptions": []}
    entry.update(class_summary(stats, np.flatnonzero(labels == c)))
    if not members.size:
        return entry
    seed = options["seed"]
    unit = stats.features[members].astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)  # in place: one copy
    centre = unit.mean(axis=0)
    atypical = per_map.atypical
    atypical[members] = 1.0 - unit @ centre / max(float(np.linalg.norm(centre)), 1e-12)
    entry["least_typical"] = members[np.argsort(-atypical[members], kind="stable")[:ATYPICAL]]
    neighbors = options["neighbors"]
    k = int(np.clip(round(np.sqrt(members.size)), 3, 10)) if neighbors == "auto" else neighbors
    result = spectral_clusters(unit, options["clusters"], options["max_clusters"], k, seed)
    merged = merge_strategies(stats, members, result.labels)
    per_map.assigned[members] = merged
    entry.update(clusters=int(merged.max()) + 1, spectral_clusters=int(result.labels.max()) + 1,
                 eigenvalues=result.eigenvalues)
    shown = members if members.size <= EMBED_MAX else np.sort(rng.choice(members, EMBED_MAX, False))
    where = np.searchsorted(members, shown)
    per_map.placed[shown] = embed(result.reduced[where], options["embedding"], result.embedding[where], seed)
    entry["descriptions"] = cluster_findings(stats, members, merged, c, name)
    return entry
