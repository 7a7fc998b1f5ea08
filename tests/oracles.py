"""Numpy references for the explainer tests (docs/architecture.md, "Oracles").

Convolution with im2col and its backpropagation (as in the classic numpy exercise), global average pooling, dense, and the
heatmap formulas of each method written out independently of the library.
"""
import cv2
import numpy as np


def im2col(x, kh, kw):
    """(N, H, W, C) -> (N, H, W, kh*kw*C) patches of a 'same'-padded stride-1 convolution."""
    n, h, w, c = x.shape
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    cols = np.empty((n, h, w, kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i : i + h, j : j + w, :]
    return cols.reshape(n, h, w, kh * kw * c)


def col2im(dcols, x_shape, kh, kw):
    """Backprop of `im2col`: scatter-adds patch gradients back onto the input."""
    n, h, w, c = x_shape
    ph, pw = kh // 2, kw // 2
    dxp = np.zeros((n, h + kh - 1, w + kw - 1, c), dcols.dtype)
    d = dcols.reshape(n, h, w, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i : i + h, j : j + w, :] += d[:, :, :, i, j, :]
    return dxp[:, ph : ph + h, pw : pw + w, :]


def conv_forward(x, kernel, bias):
    kh, kw, cin, cout = kernel.shape
    return im2col(x, kh, kw) @ kernel.reshape(-1, cout) + bias


def conv_backward_input(dy, x_shape, kernel):
    kh, kw, cin, cout = kernel.shape
    return col2im(dy @ kernel.reshape(-1, cout).T, x_shape, kh, kw)


def two_conv_forward_backward(x, k1, b1, k2, b2, w, b, targets):
    """x -> relu(conv1) = A -> relu(conv2) -> GAP -> dense (logits).

    Returns A, dlogit[target]/dA and the logits.
    """
    x = x.astype(np.float64)
    a = np.maximum(conv_forward(x, k1, b1), 0)
    y2 = conv_forward(a, k2, b2)
    f = np.maximum(y2, 0)
    pooled = f.mean(axis=(1, 2))
    logits = pooled @ w + b
    hw = f.shape[1] * f.shape[2]
    dpooled = w[:, targets].T  # (N, C2)
    df = np.broadcast_to(dpooled[:, None, None, :] / hw, f.shape)
    dy2 = df * (y2 > 0)
    da = conv_backward_input(dy2, a.shape, k2)
    return a, da, logits


def minmax(cam):
    lo = cam.min(axis=(1, 2), keepdims=True)
    hi = cam.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    flat = span <= 1e-5 * np.maximum(np.abs(hi), np.abs(lo))
    return np.where(flat, 0.0, (cam - lo) / np.where(flat, 1, span))


def upsample(cams, size):
    return np.stack([cv2.resize(c.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                     for c in cams])


def finish(cam, size=None):
    cam = np.maximum(cam, 0)
    if size is not None and cam.shape[1:3] != tuple(size):
        cam = np.maximum(upsample(cam, size), 0)
    return minmax(cam)


def gradcam(a, g):
    return np.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2)))


def gradcam_pp(a, g):
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.where(g != 0, g2 / np.where(np.abs(denom) > 1e-7, denom, 1e-7), 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    return np.einsum("nhwc,nc->nhw", a, weights)


def hirescam(a, g):
    return (a * g).sum(-1)


def xgradcam(a, g):
    weights = (a * g).sum(axis=(1, 2)) / (a.sum(axis=(1, 2)) + 1e-7)
    return np.einsum("nhwc,nc->nhw", a, weights)


def layercam(a, g):
    return (np.maximum(g, 0) * a).sum(-1)


def eigencam(a):
    n, h, w, c = a.shape
    out = []
    for x in a.reshape(n, h * w, c).astype(np.float64):
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        p = x @ vt[0]
        if (p * x.sum(-1)).sum() < 0:
            p = -p
        out.append(p.reshape(h, w))
    return np.stack(out)
