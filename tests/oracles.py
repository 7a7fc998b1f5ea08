"""Numpy references for the explainer tests (docs/architecture.md, "Oracles").

Convolution with im2col and its backpropagation (as in the classic numpy exercise; any number of spatial
axes), global average pooling, dense, and the heatmap formulas of each method written out independently of
the library.
"""
import itertools

import cv2
import numpy as np


def im2col(x, *ksize):
    """(N, *spatial, C) -> (N, *spatial, prod(ksize) * C) patches of a 'same'-padded stride-1 convolution, in
    the order of a Keras kernel (*ksize, C_in, C_out) reshaped to (-1, C_out). Any number of spatial axes."""
    spatial = x.shape[1:-1]
    pads = [(k // 2, k - 1 - k // 2) for k in ksize]
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    cols = [xp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offsets, spatial)) + (slice(None),)]
            for offsets in itertools.product(*[range(k) for k in ksize])]
    return np.stack(cols, axis=-2).reshape(x.shape[:-1] + (-1,))


def col2im(dcols, x_shape, *ksize):
    """Backprop of `im2col`: scatter-adds patch gradients back onto the input."""
    spatial, c = x_shape[1:-1], x_shape[-1]
    pads = [(k // 2, k - 1 - k // 2) for k in ksize]
    dxp = np.zeros((x_shape[0],) + tuple(n + k - 1 for n, k in zip(spatial, ksize)) + (c,), dcols.dtype)
    d = dcols.reshape(tuple(x_shape[:-1]) + (int(np.prod(ksize)), c))
    for j, offsets in enumerate(itertools.product(*[range(k) for k in ksize])):
        dxp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offsets, spatial)) + (slice(None),)] += \
            d[..., j, :]
    return dxp[(slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial)) + (slice(None),)]


def conv_forward(x, kernel, bias):
    *ksize, cin, cout = kernel.shape
    return im2col(x, *ksize) @ kernel.reshape(-1, cout) + bias


def conv_backward_input(dy, x_shape, kernel):
    *ksize, cin, cout = kernel.shape
    return col2im(dy @ kernel.reshape(-1, cout).T, x_shape, *ksize)


def two_conv_forward_backward(x, k1, b1, k2, b2, w, b, targets):
    """x -> relu(conv1) = A -> relu(conv2) -> GAP -> dense (logits).

    Returns A, dlogit[target]/dA and the logits.
    """
    x = x.astype(np.float64)
    a = np.maximum(conv_forward(x, k1, b1), 0)
    y2 = conv_forward(a, k2, b2)
    f = np.maximum(y2, 0)
    axes = tuple(range(1, f.ndim - 1))
    pooled = f.mean(axis=axes)
    logits = pooled @ w + b
    positions = int(np.prod(f.shape[1:-1]))
    dpooled = w[:, targets].T  # (N, C2)
    df = np.broadcast_to(dpooled.reshape((len(dpooled),) + (1,) * len(axes) + (-1,)) / positions, f.shape)
    dy2 = df * (y2 > 0)
    da = conv_backward_input(dy2, a.shape, k2)
    return a, da, logits


def minmax(cam):
    axes = tuple(range(1, cam.ndim))
    lo = cam.min(axis=axes, keepdims=True)
    hi = cam.max(axis=axes, keepdims=True)
    span = hi - lo
    flat = span <= 1e-5 * np.maximum(np.abs(hi), np.abs(lo))
    return np.where(flat, 0.0, (cam - lo) / np.where(flat, 1, span))


def upsample(cams, size):
    """2-D with OpenCV; 1-D and 3-D with separable linear interpolation at half-pixel centres (np.interp)."""
    if len(size) == 2:
        return np.stack([cv2.resize(c.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                         for c in cams])
    out = cams.astype(np.float64)
    for axis, new in enumerate(size, start=1):
        old = out.shape[axis]
        centres = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
        out = np.apply_along_axis(lambda v: np.interp(centres, np.arange(old), v), axis, out)
    return out


def finish(cam, size=None):
    cam = np.maximum(cam, 0)
    if size is not None and cam.shape[1:] != tuple(size):
        cam = np.maximum(upsample(cam, size), 0)
    return minmax(cam)


def _spatial(x):
    return tuple(range(1, x.ndim - 1))


def gradcam(a, g):
    return np.einsum("n...c,nc->n...", a, g.mean(axis=_spatial(g)))


def gradcam_pp(a, g):
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum(axis=_spatial(a), keepdims=True) * g3
    alpha = np.where(g != 0, g2 / np.where(np.abs(denom) > 1e-7, denom, 1e-7), 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=_spatial(g))
    return np.einsum("n...c,nc->n...", a, weights)


def hirescam(a, g):
    return (a * g).sum(-1)


def xgradcam(a, g):
    weights = (a * g).sum(axis=_spatial(a)) / (a.sum(axis=_spatial(a)) + 1e-7)
    return np.einsum("n...c,nc->n...", a, weights)


def layercam(a, g):
    return (np.maximum(g, 0) * a).sum(-1)


def eigencam(a):
    n, c = a.shape[0], a.shape[-1]
    out = []
    for x in a.reshape(n, -1, c).astype(np.float64):
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        p = x @ vt[0]
        if (p * x.sum(-1)).sum() < 0:
            p = -p
        out.append(p.reshape(a.shape[1:-1]))
    return np.stack(out)
