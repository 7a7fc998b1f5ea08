"""Spectral clustering of one class's small maps on a sparse k-nearest-neighbour graph (SpRAy).

Lapuschkin et al. (2019) cluster the downsized heatmaps of one class with spectral clustering and pick the
number of clusters by the eigengap of the graph Laplacian. Here the graph is a symmetric kNN graph with
self-tuning Gaussian weights (Zelnik-Manor & Perona, 2004: sigma_i is the distance to the i-th point's k-th
neighbour), built on a 16-component PCA of the L2-normalized maps, so the cost grows near linearly with the
number of maps and memory stays O(N * k): no dense N x N matrix is ever formed. The eigenvectors of the
normalized affinity come from `scipy.sparse.linalg.eigsh`; k-means on their normalized rows gives the
clusters (Ng, Jordan & Weiss, 2001). Differences from CoRelAy's SpRAy pipeline: CoRelAy builds the kNN graph
on the full downsized maps with binary or Gaussian weights of one global sigma; the PCA and the self-tuning
sigma keep the graph meaningful at any map size and scale (docs/architecture.md, "Dataset audit").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

#: PCA components the neighbour search works in.
COMPONENTS = 16


def require_sklearn() -> None:
    """Raises one clear ImportError naming the extra to install when scikit-learn or SciPy is missing."""
    try:
        import scipy.sparse  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        raise ImportError('kc.audit needs scikit-learn (and SciPy): pip install "keras-cam[audit]"') from None


@dataclass
class Clustering:
    """One class's clusters: `labels` (n,) ints, clusters numbered by size (0 = largest); `eigenvalues` of
    the normalized Laplacian, ascending; `embedding` (n, 2) spectral coordinates (for pictures)."""

    labels: np.ndarray
    eigenvalues: np.ndarray
    embedding: np.ndarray
    reduced: np.ndarray


def reduce(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """L2-normalized rows projected on their first COMPONENTS principal components (float32)."""
    from sklearn.decomposition import PCA

    x = features.astype(np.float32, copy=False)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.allclose(norms[norms > 0], 1.0, atol=1e-4):
        x = x / np.where(norms > 0, norms, 1.0)
    q = min(COMPONENTS, x.shape[1], x.shape[0] - 1)
    if q < 1:
        return x
    solver = "randomized" if x.shape[0] > 500 else "full"
    return PCA(n_components=q, svd_solver=solver, random_state=seed).fit_transform(x).astype(np.float32)


def knn_affinity(z: np.ndarray, neighbors: int):
    """The symmetric sparse (n, n) affinity of the kNN graph, self-tuning Gaussian weights."""
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = len(z)
    k = min(neighbors, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1, algorithm="kd_tree").fit(z).kneighbors(z)
    dist, idx = dist[:, 1:], idx[:, 1:]  # drop each point itself
    sigma = np.maximum(dist[:, -1], 1e-6)
    weights = np.exp(-dist ** 2 / (sigma[:, None] * sigma[idx]))
    w = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    return w.maximum(w.T).tocsr()


def spectral_clusters(features: np.ndarray, clusters: Union[str, int] = "auto", max_clusters: int = 8,
                      neighbors: int = 10, seed: int = 0) -> Clustering:
    """Clusters (n, d) small maps of one class; `clusters` = "auto" (eigengap) or a number.

    BLAS and OpenMP run on one thread here: the matrices are small (n x 16, n x 9), and thread pools thrash
    on a busy machine (measured on 2 shared cores: 18 s instead of 3.1 s for 4,000 maps).
    """
    require_sklearn()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _spectral_clusters(features, clusters, max_clusters, neighbors, seed)


def _spectral_clusters(features: np.ndarray, clusters: Union[str, int], max_clusters: int, neighbors: int,
                       seed: int) -> Clustering:
    import scipy.sparse as sp
    from scipy.linalg import eigh
    from scipy.sparse.linalg import eigsh
    from sklearn.cluster import KMeans

    n = len(features)
    z = reduce(features, seed)
    if n < 4:
        return Clustering(np.zeros(n, np.int64), np.zeros(0), np.zeros((n, 2), np.float32), z)
    w = knn_affinity(z, neighbors)
    degree = np.asarray(w.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    s = sp.diags(scale) @ w @ sp.diags(scale)  # D^-1/2 W D^-1/2: eigenvalues 1 - those of the Laplacian
    m = min(max_clusters + 1, n - 1)
    if n <= 200:  # small classes: a dense solve is exact and cheap
        mu, vectors = eigh(s.toarray())
        mu, vectors = mu[::-1][:m], vectors[:, ::-1][:, :m]
    else:
        v0 = np.random.default_rng(seed).random(n)
        # A wide Krylov space and a tolerance of 1e-4 (eigenvalues matter to ~1e-3 for the eigengap): the
        # top eigenvalues of a kNN graph crowd near 1, where ARPACK's defaults take tens of thousands of
        # iterations (measured: 20 s instead of 0.5 s for 4,000 maps; benchmarks/bench_audit.py).
        mu, vectors = eigsh(s, k=m, which="LA", v0=v0, tol=1e-4, ncv=min(n, max(2 * m + 1, 60)),
                            maxiter=max(1000, 20 * n))
        order = np.argsort(-mu)
        mu, vectors = mu[order], vectors[:, order]
    eigenvalues = np.clip(1.0 - mu, 0.0, 2.0)
    if clusters == "auto":
        gaps = np.diff(eigenvalues)  # gaps[k - 1] = lambda_k - lambda_(k-1): the gap after k clusters
        k = int(np.argmax(gaps[: max_clusters])) + 1
    else:
        k = int(min(clusters, n))
    spectral = vectors * scale[:, None]  # eigenvectors of the random-walk Laplacian
    embedding = spectral[:, 1:3] if spectral.shape[1] >= 3 else np.zeros((n, 2))
    if k == 1:
        return Clustering(np.zeros(n, np.int64), eigenvalues, embedding.astype(np.float32), z)
    rows = vectors[:, :k]
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(rows)
    return Clustering(by_size(raw), eigenvalues, embedding.astype(np.float32), z)


def by_size(labels: np.ndarray) -> np.ndarray:
    """Renumbers cluster labels by size, largest first (ties: by first appearance)."""
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = values[np.lexsort((first, -counts))]
    mapping = np.empty(values.max() + 1, np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


def embed(z: np.ndarray, method: Optional[str], fallback: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D coordinates for the picture: "tsne" (scikit-learn), "umap" (umap-learn), "spectral" (the
    clustering's own eigenvectors, free), or "auto" (UMAP when installed, else t-SNE)."""
    n = len(z)
    if method in (None, "spectral") or n < 5:
        return fallback
    if method == "auto":
        try:
            import umap  # noqa: F401

            method = "umap"
        except ImportError:
            method = "tsne"
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(z).astype(np.float32)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z) \
        .astype(np.float32)
