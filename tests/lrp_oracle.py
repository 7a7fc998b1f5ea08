"""A numpy LRP reference (docs/architecture.md, "Oracles"), written independently of keras-cam.

Every linear layer is written out as its matrix `W` (inputs x outputs, flattened channels_last: convolution
of any rank with strides, padding, dilation and groups by explicit loops over output positions and kernel
taps; average pooling as a convolution with 1/k weights), and each rule is the textbook formula on it
(Bach et al. 2015, Montavon et al. 2017 and 2019, with zennit's stabilizer and generalizations to negative
inputs). A network is a list of such layers, run forward and then backward from the relevance of the logit.
"""
import itertools

import numpy as np


def conv_matrix(kernel, in_shape, strides=1, padding="valid", dilation=1, groups=1):
    """(W (prod(in_shape), prod(out_shape)), out_shape) of a Keras convolution on one channels_last input."""
    rank = kernel.ndim - 2
    ksize, cin_g, cout = kernel.shape[:rank], kernel.shape[-2], kernel.shape[-1]
    spatial, cin = tuple(in_shape[:-1]), in_shape[-1]
    strides = (strides,) * rank if np.isscalar(strides) else tuple(strides)
    dilation = (dilation,) * rank if np.isscalar(dilation) else tuple(dilation)
    effective = [(k - 1) * d + 1 for k, d in zip(ksize, dilation)]
    if padding == "valid":
        out = [(n - e) // s + 1 for n, e, s in zip(spatial, effective, strides)]
        low = [0] * rank
    else:  # "same": TensorFlow's split, the extra pad at the end
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        low = [max((o - 1) * s + e - n, 0) // 2 for o, s, e, n in zip(out, strides, effective, spatial)]
    cout_g = cout // groups
    w = np.zeros((int(np.prod(in_shape)), int(np.prod(out)) * cout))
    for o in itertools.product(*[range(n) for n in out]):
        for tap in itertools.product(*[range(k) for k in ksize]):
            pos = [oi * s - lo + t * d for oi, s, lo, t, d in zip(o, strides, low, tap, dilation)]
            if any(p < 0 or p >= n for p, n in zip(pos, spatial)):
                continue
            for g in range(groups):
                rows = np.ravel_multi_index(tuple(pos), spatial) * cin + g * cin_g + np.arange(cin_g)
                cols = np.ravel_multi_index(o, out) * cout + g * cout_g + np.arange(cout_g)
                w[np.ix_(rows, cols)] += kernel[tap][:, g * cout_g:(g + 1) * cout_g]
    return w, tuple(out) + (cout,)


def depthwise_matrix(kernel, in_shape, strides=1, padding="valid", dilation=1):
    """A depthwise convolution (*k, C, M) as a grouped one: output channel c * M + m."""
    rank = kernel.ndim - 2
    c, m = kernel.shape[-2:]
    return conv_matrix(kernel.reshape(kernel.shape[:rank] + (1, c * m)), in_shape, strides, padding, dilation, c)


def average_matrix(in_shape, pool, strides=None):
    """Average pooling ('valid') as a depthwise convolution with 1/k weights."""
    rank = len(in_shape) - 1
    pool = (pool,) * rank if np.isscalar(pool) else tuple(pool)
    kernel = np.full(pool + (1, in_shape[-1]), 1.0 / np.prod(pool))
    return conv_matrix(kernel, in_shape, strides or pool, "valid", 1, in_shape[-1])


def stabilize(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def divide(r, z):
    return np.where(z == 0, 0.0, r / np.where(z == 0, 1.0, z))


def rule_backward(rule, x, w, b, r):
    """Relevance of the inputs `x` (N, I) of `z = x w + b` from the relevance `r` (N, O) of its outputs."""
    name, args = rule[0], rule[1:]
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    bp, bn = np.maximum(b, 0), np.minimum(b, 0)
    if name == "epsilon":
        s = divide(r, stabilize(x @ w + b, args[0]))
        return x * (s @ w.T)
    if name == "zplus":
        s = divide(r, stabilize(xp @ wp + bp + xn @ wn, 1e-6))
        return xp * (s @ wp.T) + xn * (s @ wn.T)
    if name == "alphabeta":
        alpha, beta = args
        sp = divide(r, stabilize(xp @ wp + bp + xn @ wn, 1e-6))
        sn = divide(r, stabilize(xp @ wn + bn + xn @ wp, 1e-6))
        return alpha * (xp * (sp @ wp.T) + xn * (sp @ wn.T)) - beta * (xp * (sn @ wn.T) + xn * (sn @ wp.T))
    if name == "gamma":
        g = args[0]
        up, down, bup, bdown = w + g * wp, w + g * wn, b + g * bp, b + g * bn
        z = x @ w + b
        sp = (z > 0) * divide(r, stabilize(xp @ up + bup + xn @ down, 1e-6))
        sn = (z < 0) * divide(r, stabilize(xp @ down + bdown + xn @ up, 1e-6))
        return xp * (sp @ up.T) + xn * (sp @ down.T) + xp * (sn @ down.T) + xn * (sn @ up.T)
    if name == "flat":
        mask = args[0]  # the layer's connectivity: its matrix with every weight 1
        s = divide(r, stabilize(np.ones_like(x) @ mask, 1e-6))
        return np.broadcast_to(s @ mask.T, x.shape)
    if name == "wsquare":
        s = divide(r, stabilize(np.ones_like(x) @ (w * w) + b * b, 1e-6))
        return np.broadcast_to(s @ (w * w).T, x.shape)
    if name == "zbox":
        low, high = np.broadcast_to(args[0], x.shape), np.broadcast_to(args[1], x.shape)
        s = divide(r, stabilize(x @ w + b - (low @ wp + bp) - (high @ wn + bn), 1e-6))
        return x * (s @ w.T) - low * (s @ wp.T) - high * (s @ wn.T)
    raise ValueError(name)


def run(layers, x, target):
    """LRP through `layers` (dicts: {"w", "b", "rule", "relu"} linear, {"maxpool": (in_shape, pool)}) on
    inputs `x` (N, *shape); the relevance starts as the target's logit. Returns (relevance like x, logits,
    relevance absorbed by the biases per image)."""
    n = x.shape[0]
    a = x.reshape(n, -1).astype(np.float64)
    inputs, argmax = [], []
    for layer in layers:
        inputs.append(a)
        if "maxpool" in layer:
            shape, pool = layer["maxpool"]
            windows = _windows(a.reshape((n,) + shape), pool)          # (N, positions..., C, k)
            argmax.append(windows)
            a = windows.max(-1).reshape(n, -1)
            continue
        z = a @ layer["w"] + layer["b"]
        a = np.maximum(z, 0) if layer.get("relu") else z
    logits = a
    r = np.zeros_like(logits)
    r[np.arange(n), target] = logits[np.arange(n), target]
    absorbed = np.zeros(n)
    for layer, x_in in zip(layers[::-1], inputs[::-1]):
        if "maxpool" in layer:
            shape, pool = layer["maxpool"]
            windows = _windows(x_in.reshape((n,) + shape), pool)
            win = windows == windows.max(-1, keepdims=True)
            win = win & (np.cumsum(win, -1) == 1)  # the first maximum, as every backend's gradient
            routed = win * r.reshape(windows.shape[:-1] + (1,))
            r = _unwindow(routed, shape, pool).reshape(n, -1)
            continue
        before = r.sum(1)
        r = rule_backward(layer["rule"], x_in, layer["w"], layer["b"], r)
        absorbed += before - r.sum(1)
    return r.reshape(x.shape), logits, absorbed


def _windows(a, pool):
    """(N, *spatial, C) -> (N, *out, C, prod(pool)) non-overlapping windows ('valid', stride = pool)."""
    out = [s // p for s, p in zip(a.shape[1:-1], pool)]
    parts = []
    for tap in itertools.product(*[range(p) for p in pool]):
        index = (slice(None),) + tuple(slice(t, t + o * p, p) for t, o, p in zip(tap, out, pool)) + (slice(None),)
        parts.append(a[index])
    return np.stack(parts, -1)


def _unwindow(w, shape, pool):
    n = w.shape[0]
    out = np.zeros((n,) + tuple(shape))
    o = w.shape[1:-2]
    for j, tap in enumerate(itertools.product(*[range(p) for p in pool])):
        index = (slice(None),) + tuple(slice(t, t + k * p, p) for t, k, p in zip(tap, o, pool)) + (slice(None),)
        out[index] += w[..., j]
    return out


def add_backward(parts, r, eps=1e-6):
    """Add: each branch gets its share of the sum."""
    s = divide(r, stabilize(sum(parts), eps))
    return [p * s for p in parts]


# -- transformers (AttnLRP), written out ----------------------------------------------------------------------

def epsilon_backward(x, z, r, jacobian_t, eps=1e-6):
    """`x * J^T (r / stabilize(z))` with `jacobian_t(v) = J^T v`."""
    return x * jacobian_t(r / stabilize(z, eps))


def layernorm_backward(x, gamma, beta, r, axis_eps=1e-3, eps=1e-6):
    """LN-rule over the last axis: the standard deviation held, the rest linear, epsilon rule."""
    mean = x.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(x.var(-1, keepdims=True) + axis_eps)
    y = (x - mean) * inv * gamma + (0.0 if beta is None else beta)

    def jacobian_t(v):  # y = (I - 1/n) x * inv * gamma: J^T v = g - mean(g), g = v * inv * gamma
        g = v * inv * gamma
        return g - g.mean(-1, keepdims=True)

    return epsilon_backward(x, y, r, jacobian_t, eps)


def softmax(s, mask=None):
    if mask is not None:
        s = np.where(mask, s, -1e9)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention_backward(x, weights, r, scale, mask=None, eps=1e-6):
    """AttnLRP through a self-attention layer (keras MultiHeadAttention, inputs (B, T, D)) from the relevance
    `r` of its output: projections epsilon, products uniform (halved), softmax epsilon at its input."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    proj = {name: (np.einsum("btd,dnh->btnh", x, w) + b, w) for name, w, b in
            (("q", wq, bq), ("k", wk, bk), ("v", wv, bv))}
    q, k, v = (proj[n][0] for n in "qkv")
    qs = q * scale
    s = np.einsum("bsnh,btnh->bnts", k, qs)
    a = softmax(s, mask)
    ctx = np.einsum("bnts,bsnh->btnh", a, v)
    out = np.einsum("btnh,nhd->btd", ctx, wo) + bo
    r_ctx = ctx * np.einsum("btd,nhd->btnh", r / stabilize(out, eps), wo)
    c = 0.5 * r_ctx / stabilize(ctx, eps)
    r_a = a * np.einsum("btnh,bsnh->bnts", c, v)
    r_v = v * np.einsum("btnh,bnts->bsnh", c, a)
    w = r_a / stabilize(a, eps)
    r_s = s * (a * w - a * (a * w).sum(-1, keepdims=True))
    c = 0.5 * r_s / stabilize(s, eps)
    r_q = qs * np.einsum("bnts,bsnh->btnh", c, k)
    r_k = k * np.einsum("bnts,btnh->bsnh", c, qs)
    r_x = 0.0
    for name, rel in (("q", r_q), ("k", r_k), ("v", r_v)):
        z, w = proj[name]
        r_x = r_x + x * np.einsum("btnh,dnh->btd", rel / stabilize(z, eps), w)
    return r_x, out
