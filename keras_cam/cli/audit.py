"""`keras-cam audit`: audit a store of maps (from `keras-cam explain --store` or `kc.explain_dataset`)."""
from __future__ import annotations

import argparse

from keras_cam.cli._common import integer, positive_int

HELP = "audit a store of maps: per-class statistics, clusters of strategies, findings; an HTML report"
DESCRIPTION = (
    "Reads the maps of a store written by 'keras-cam explain --store' or kc.explain_dataset chunk by chunk, "
    "computes per class the mean map, where the energy lies and how concentrated it is, clusters each "
    "class's maps (spectral clustering of a k-nearest-neighbour graph, the number of clusters by the "
    "eigengap: SpRAy), prints the findings in words and writes a self-contained HTML report with PNGs and "
    "maps.csv to --out. Labels are the store's explained targets unless --labels is given. Needs "
    'scikit-learn (pip install "keras-cam[audit]").'
)


def _clusters(text: str):
    return text if text == "auto" else positive_int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE", help="a store of maps (e.g. maps.zarr)")
    parser.add_argument("--out", default="audit_report", help="report folder (default: audit_report)")
    parser.add_argument("--classes", default=None,
                        help="class names, comma-separated, label i being the i-th (default: 0, 1, ...)")
    parser.add_argument("--labels", default=None, metavar="LABELS.npy",
                        help="int (N,) class of each map, a .npy file (default: the store's targets)")
    parser.add_argument("--masks", default=None, metavar="MASKS.npy",
                        help="bool (N, *map) object masks at the maps' size, a .npy file (optional)")
    parser.add_argument("--boxes", default=None, metavar="BOXES.npy",
                        help="(N, 4) object boxes (x0, y0, x1, y1) in map pixels, a .npy file, instead of masks")
    parser.add_argument("--clusters", type=_clusters, default="auto",
                        help="clusters per class: auto (eigengap, default) or a number")
    parser.add_argument("--embedding", choices=("auto", "tsne", "umap", "spectral", "none"), default="auto",
                        help="the 2-D picture of each class: auto (UMAP when installed, else t-SNE), tsne, "
                             "umap, spectral (instant) or none")
    parser.add_argument("--seed", type=integer, default=0, help="random seed (default: 0)")


def _load(path: str, what: str):
    import numpy as np

    try:
        return np.load(path, mmap_mode="r")  # masks of a large dataset are read by rows
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} '{path}' as a .npy file: {e}") from None


def run(args: argparse.Namespace) -> int:
    try:
        from keras_cam.auditing import audit
        from keras_cam.auditing.clustering import require_sklearn
        from keras_cam.store import open_store

        require_sklearn()
        store = open_store(args.store)
    except ImportError as e:
        raise ValueError(str(e)) from None
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    labels = _load(args.labels, "--labels") if args.labels else None
    masks = _load(args.masks, "--masks") if args.masks else None
    boxes = _load(args.boxes, "--boxes") if args.boxes else None
    report = audit(store, labels=labels, masks=masks, boxes=boxes, classes=classes, clusters=args.clusters,
                   embedding=None if args.embedding == "none" else args.embedding, seed=args.seed)
    path = report.save(args.out)
    print(f"{len(report.labels)} maps, {len(report.classes)} classes, {len(report.findings)} finding(s)")
    for i, finding in enumerate(report.findings, 1):
        print(f"{i}. {finding['text']}")
    print(f"report: {path}")
    return 0
