"""ROAD, Remove And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods"): remove the most (MoRF) or least (LeRF) relevant pixels and fill them by *noisy linear imputation*
from their neighbours, so that the removal itself leaks no information about which pixels were removed (the
flaw of blacking them out, as deletion does).

Like deletion and insertion (`keras_cam.metrics.faithfulness`), every perturbed image goes through the
model's forward pass compiled once per model and chunk shape, and heatmaps are checked and resized the same
way (`keras_cam.metrics.scoring`); classes are read as the explainers read them.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, List, Optional, Sequence, Tuple

import keras
import numpy as np

from keras_cam._validation import check_number
from keras_cam.metrics.scoring import (ClassScorer, channels_last_inputs, heatmaps_at, model_layout,
                                       predict_outputs)

#: The percentages of removed pixels of the ROAD paper (and of pytorch-grad-cam's `ROADCombined`).
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_MODES = {"morf": ("morf",), "lerf": ("lerf",), "both": ("morf", "lerf")}


# -- noisy linear imputation ----------------------------------------------------------------------------


def _stencil(rank: int) -> Tuple[np.ndarray, np.ndarray]:
    """Neighbour offsets and weights: 1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours in 2-D
    (the paper's reference code); in any rank, a neighbour sharing fewer axes weighs half as much."""
    offsets = np.array([o for o in itertools.product((-1, 0, 1), repeat=rank) if any(o)])
    weights = 2.0 ** (1 - np.count_nonzero(offsets, axis=1))
    return offsets, weights / weights.sum()


def _system(removed: np.ndarray, values: np.ndarray):
    """The sparse system `diag_i x_i - sum_j w_ij x_j = sum_k w_ik v_k` of the removed positions i (j removed,
    k known neighbours): each removed value is the weighted mean of its in-bounds neighbours."""
    shape = removed.shape
    flat = removed.ravel()
    unknown = np.flatnonzero(flat)
    var = np.full(flat.size, -1, np.int64)
    var[unknown] = np.arange(unknown.size)
    coords = np.stack(np.unravel_index(unknown, shape))
    diag = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, values.shape[-1]))
    rows, cols, vals = [], [], []
    for offset, weight in zip(*_stencil(len(shape))):
        nb = coords + offset[:, None]
        inside = np.all((nb >= 0) & (nb < np.array(shape)[:, None]), axis=0)
        src = np.flatnonzero(inside)
        idx = np.ravel_multi_index(tuple(nb[:, inside]), shape)
        diag[src] += weight  # out-of-bounds neighbours drop out of the mean
        known = ~flat[idx]
        rhs[src[known]] += weight * values[idx[known]]
        rows.append(src[~known])
        cols.append(var[idx[~known]])
        vals.append(np.full(int((~known).sum()), weight))
    return diag, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), rhs


def _solve(diag, rows, cols, vals, rhs, use_scipy: bool = True) -> np.ndarray:
    """Solves the (symmetric positive definite) system: scipy's sparse direct solver when scipy is installed,
    else Jacobi-preconditioned conjugate gradients in numpy, all channels at once."""
    k = len(diag)
    if use_scipy:
        try:
            from scipy import sparse
            from scipy.sparse.linalg import spsolve
        except ImportError:
            use_scipy = False
    if use_scipy:
        a = sparse.csc_matrix((-vals, (rows, cols)), shape=(k, k)) + sparse.diags(diag, format="csc")
        return np.asarray(spsolve(a, rhs)).reshape(rhs.shape)

    def matvec(x: np.ndarray) -> np.ndarray:
        off = np.stack([np.bincount(rows, vals * x[cols, c], minlength=k) for c in range(x.shape[1])], 1)
        return diag[:, None] * x - off

    x = rhs / diag[:, None]
    r = rhs - matvec(x)
    z = r / diag[:, None]
    p, rz = z, (r * z).sum(0)
    scale = np.maximum(np.abs(rhs).max(), 1e-30)
    for _ in range(10 * k + 10):
        if np.abs(r).max() <= 1e-10 * scale:
            break
        ap = matvec(p)
        alpha = rz / np.where((p * ap).sum(0) == 0, 1.0, (p * ap).sum(0))
        x, r = x + alpha * p, r - alpha * ap
        z = r / diag[:, None]
        rz, previous = (r * z).sum(0), rz
        p = z + rz / np.where(previous == 0, 1.0, previous) * p
    return x


def noisy_linear_imputation(image: Any, removed: Any, noise: float = 0.01, seed: Any = 0,
                            use_scipy: bool = True) -> np.ndarray:
    """Fills the `removed` positions of one example with the noisy linear imputation of ROAD.

    Each removed value is the weighted mean of its neighbours (known ones fixed, removed ones solved for
    together: one sparse linear system per example, every channel at once); then Gaussian noise of standard
    deviation `noise` is added to the filled values. Weights: 1/6 for the 4 direct and 1/12 for the 4 diagonal
    neighbours of a pixel, as in the paper's reference code; signals (1/2 each side) and volumes (face 1 :
    edge 1/2 : corner 1/4) follow the same rule. Neighbours outside the example drop out of the mean.

    Args:
        image: one channels_last example, (H, W, C) (or (T, C), (D, H, W, C)).
        removed: bool array of its spatial shape, True where the value is replaced.
        noise: standard deviation of the added noise, in the image's units (0: none).
        seed: seed of the noise, or a `numpy.random.Generator`.
        use_scipy: solve with `scipy.sparse` when it is installed (else, or with False, conjugate gradients
            in numpy).

    Returns:
        A new float32 array like `image`.

    Example:

    >>> import numpy as np
    >>> from keras_cam.metrics.imputation import noisy_linear_imputation
    >>> ramp = np.tile(np.arange(5.0), (5, 1))[..., None]
    >>> removed = np.zeros((5, 5), bool); removed[2, 2] = True
    >>> float(noisy_linear_imputation(ramp, removed, noise=0.0)[2, 2, 0])   # a ramp stays linear
    2.0
    """
    img = np.array(image, np.float64, copy=True)
    mask = np.asarray(removed, bool)
    if img.ndim not in (2, 3, 4) or mask.shape != img.shape[:-1]:
        raise ValueError(f"`removed` must have the spatial shape of `image` (one channels_last example, e.g. "
                         f"(H, W, C) and (H, W)); got {img.shape} and {mask.shape}.")
    if mask.all():
        raise ValueError("Every position is removed: ROAD imputes removed values from known neighbours, so "
                         "keep at least one (percentages below 100).")
    noise = check_number("noise", noise, 0.0)
    if not mask.any():
        return img.astype(np.float32)
    diag, rows, cols, vals, rhs = _system(mask, img.reshape(-1, img.shape[-1]))
    filled = _solve(diag, rows, cols, vals, rhs, use_scipy)
    if noise:
        filled = filled + noise * np.random.default_rng(seed).standard_normal(filled.shape)
    img[mask] = filled
    return img.astype(np.float32)



# -- ROAD -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ROADResult:
    """What `road` measured.

    Attributes:
        percentiles: float (P,) percentages of removed pixels.
        morf: float (P,) mean class score with the most relevant pixels removed (lower is better), or None.
        lerf: float (P,) mean class score with the least relevant pixels removed (higher is better), or None.
        morf_curves, lerf_curves: float (N, P) the same per image, or None.
        original: float (N,) the class score on the intact images.
        targets: int (N,) the class scored per image.
    """

    percentiles: np.ndarray
    morf: Optional[np.ndarray]
    lerf: Optional[np.ndarray]
    morf_curves: Optional[np.ndarray]
    lerf_curves: Optional[np.ndarray]
    original: np.ndarray
    targets: np.ndarray

    @property
    def morf_score(self) -> Optional[float]:
        """The MoRF curve's mean over the percentiles (lower is better)."""
        return None if self.morf is None else float(self.morf.mean())

    @property
    def lerf_score(self) -> Optional[float]:
        """The LeRF curve's mean over the percentiles (higher is better)."""
        return None if self.lerf is None else float(self.lerf.mean())

    @property
    def combined(self) -> Optional[float]:
        """mean(LeRF - MoRF) / 2, higher is better: pytorch-grad-cam's `ROADCombined` value."""
        if self.morf is None or self.lerf is None:
            return None
        return float((self.lerf - self.morf).mean() / 2)


def _check_percentiles(percentiles: Any) -> np.ndarray:
    try:
        p = np.asarray(percentiles, np.float64).reshape(-1)
    except (TypeError, ValueError):
        p = np.array([np.nan])
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any((p <= 0) | (p >= 100)):
        raise ValueError(f"`percentiles` must be numbers strictly between 0 and 100 (the percentage of "
                         f"pixels removed), e.g. {PERCENTILES}; got {percentiles!r}.")
    return p


def _removal_outputs(model: keras.Model, x: np.ndarray, channels_first: bool, hm: np.ndarray,
                     modes: Tuple[str, ...], counts: np.ndarray, noise: float, seed: Any,
                     batch_size: Any) -> np.ndarray:
    """The model's outputs on every imputed example, image by image: (N * len(modes) * len(counts), K), in
    the order image, mode, count. The noise of all images comes from one generator seeded with `seed`."""
    spatial, positions = x.shape[1:-1], int(np.prod(x.shape[1:-1]))
    rng = np.random.default_rng(seed)
    outputs: List[np.ndarray] = []
    for i in range(len(x)):
        order = np.argsort(-hm[i].ravel(), kind="stable")  # most relevant first
        batch = []
        for m in modes:
            ranked = order if m == "morf" else order[::-1]
            for c in counts:
                removed = np.zeros(positions, bool)
                removed[ranked[:c]] = True
                batch.append(noisy_linear_imputation(x[i], removed.reshape(spatial), noise, rng))
        outputs.append(predict_outputs(model, np.stack(batch), channels_first, batch_size))
    return np.concatenate(outputs)


def road(
    model: keras.Model,
    images: Any,
    heatmaps: Any,
    targets: Any = None,
    percentiles: Sequence[float] = PERCENTILES,
    mode: str = "both",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 32,
) -> ROADResult:
    """ROAD, Remove And Debias (Rong et al. 2022): the class score as the map's top (MoRF) or bottom (LeRF)
    pixels are replaced by the noisy linear imputation of their neighbours.

    For each percentage p, the `round(p / 100 * pixels)` pixels the heatmap ranks highest (MoRF) or lowest
    (LeRF) are removed (ties broken in row-major order) and filled by `noisy_linear_imputation`; the model
    then scores the explained class. A faithful map makes the MoRF scores fall fast and the LeRF scores stay
    high. "Pixels" are spatial positions: all channels of one are removed together. Works on images, signals
    and volumes, channels last or first.

    Where this differs from pytorch-grad-cam's `road.py`: there a percentile p *keeps* p % of the pixels (its
    `ROADMostRelevantFirst(80)` removes the top 20 %) and removal is by threshold (ties all go together);
    here p is the share removed, as in the paper, and counts are exact. Its scores are differences to the
    intact score; here they are the scores themselves (`original` holds the intact ones), and
    `ROADResult.combined` equals its `ROADCombined`. Its imputation is 2-D only; here also 1-D and 3-D. The
    noise is drawn by numpy from `seed`: the same on every backend.

    Args:
        model: a classifier with one (N, classes) output; its outputs are scored as they are (probabilities
            for a softmax model, like `deletion_auc`).
        images: (N, H, W, C) images as the model expects them; or (N, T, C) signals, (N, D, H, W, C) volumes.
        heatmaps: (N, h, w) maps (or (N, t), (N, d, h, w)), resized to the inputs when sizes differ.
        targets: None (the predicted class on the intact image), an int, or one int per image.
        percentiles: percentages of pixels removed, each strictly between 0 and 100.
        mode: "morf" (most relevant first), "lerf" (least relevant first) or "both".
        noise: standard deviation of the imputation noise, in the inputs' units (the reference uses 0.01).
        seed: seed of the noise.
        batch_size: perturbed images per forward pass.

    Returns:
        A `ROADResult` (per-percentile means `morf`, `lerf`, per-image curves, `combined`).

    Example:

    ```python
    result = kc.metrics.road(model, images, kc.GradCAM(model)(images))
    print(result.morf_score, result.lerf_score)
    ```
    """
    modes = _MODES.get(mode) if isinstance(mode, str) else None
    if modes is None:
        raise ValueError(f"`mode` must be 'morf', 'lerf' or 'both', got {mode!r}.")
    p = _check_percentiles(percentiles)
    check_number("noise", noise, 0.0)
    x, first = channels_last_inputs(model, images)
    hm = heatmaps_at(heatmaps, x.shape[0], x.shape[1:-1])
    positions = int(np.prod(x.shape[1:-1]))
    counts = np.round(p / 100 * positions).astype(np.int64)
    if counts.max() >= positions:
        raise ValueError(f"Removing {p.max():g} % of {positions} positions removes them all; use smaller "
                         "percentages or larger inputs.")
    intact = predict_outputs(model, x, first, batch_size)
    scorer = ClassScorer(model, model_layout(x[:1], first), intact, targets)
    outputs = _removal_outputs(model, x, first, hm, modes, counts, noise, seed, batch_size)
    # Scores read once for every image (eager backend ops cost a compilation per shape on JAX).
    scores, _ = scorer(outputs, np.repeat(scorer.targets, len(modes) * len(p)))
    curves = dict(zip(modes, np.moveaxis(scores.reshape(len(x), len(modes), len(p)), 1, 0)))
    morf, lerf = curves.get("morf"), curves.get("lerf")
    means = [None if c is None else c.mean(axis=0) for c in (morf, lerf)]
    return ROADResult(p, *means, morf, lerf, scorer.original, scorer.targets)
