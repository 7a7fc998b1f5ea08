"""PyTorch implementation of the backend seam (see `keras_cam/backend/__init__.py`).

Runs eagerly: `torch.compile` costs more to compile than it saves on these one-pass workloads.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

import torch

from keras_cam.backend.common import check_recorded
from keras_cam.capture import intercept_all


def _forward_recording(model, inputs, layers: Sequence):
    """(recorded layer outputs, model outputs); call it under `torch.no_grad()`. Autograd records from the
    first captured layer's output (a fresh leaf) on only: upstream there is no autograd graph through the
    backbone (whose weights require grads), so that part costs what an inference pass costs."""
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            if not torch.is_grad_enabled():
                torch.set_grad_enabled(True)  # the first captured layer: autograd records from here on
                out = out.detach().requires_grad_(True)
            recorded[i] = out
            return out

        return transform

    with intercept_all(layers, transform_for):
        outputs = model(inputs, training=False)
    check_recorded(recorded, layers)
    return recorded, outputs


def activation_grads(model, inputs, layers: Sequence, score_fn: Callable):
    with torch.no_grad():
        recorded, outputs = _forward_recording(model, inputs, layers)
        scores, aux = score_fn(outputs)
        torch.set_grad_enabled(True)  # also when the layers' outputs do not reach the scores
        grads = _grads(scores, recorded)
    acts = [a.detach() for a in recorded]
    grads = [torch.zeros(a.shape[:1] + scores.shape[1:] + a.shape[1:], dtype=a.dtype) if g is None
             else g.detach() for a, g in zip(acts, grads)]
    return acts, grads, _detach(outputs), _detach(aux)


def _grads(scores, recorded):
    if scores.ndim == 1:
        return torch.autograd.grad(scores.sum(), recorded, allow_unused=True)
    # (N, K): K backward passes through the part after the layers, batched when autograd can vmap them.
    k = scores.shape[1]
    cotangents = torch.eye(k, dtype=scores.dtype)[:, None, :].expand((k,) + tuple(scores.shape))
    try:
        grads = torch.autograd.grad(scores, recorded, grad_outputs=cotangents, is_grads_batched=True,
                                    allow_unused=True, retain_graph=True)
    except RuntimeError:  # an op without a batching rule: one backward pass per target
        grads = list(zip(*[torch.autograd.grad(scores, recorded, grad_outputs=cotangents[j], allow_unused=True,
                                               retain_graph=True) for j in range(k)]))
        grads = [None if parts[0] is None else torch.stack(parts) for parts in grads]
    return [None if g is None else g.movedim(0, 1) for g in grads]


def input_grads(model, inputs, loss_fn: Callable):
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        loss = loss_fn(model, x)
        (grads,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    if grads is None:
        grads = torch.zeros_like(x)
    return loss.detach(), grads.detach()


def compile(fn: Callable, model, split: bool = False) -> Callable:
    # Eager: nothing to trace. One device (see `devices`), so `split` has nothing to split.
    def call(*args):
        with torch.no_grad():
            return fn(*args)

    return call


def devices(model) -> tuple:
    """PyTorch runs on one device here (a process per GPU is the PyTorch way to use several)."""
    return None, 1


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


def release_memory() -> None:
    """Called when compiled functions are dropped; nothing beyond them to release here."""


def input_layer_grads(model, x, layers: Sequence, forward: Callable):
    """`(d sum(scores) / d x, activations, grads, aux)` from one forward pass `(scores, aux) = forward(x)`,
    with `layers` intercepted: `grads[i]` is the gradient w.r.t. layer i's output, nothing stopped
    (None for a layer that did not run). See `keras_cam/backend/__init__.py`."""
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            recorded[i] = out
            return out

        return transform

    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        with intercept_all(layers, transform_for):
            scores, aux = forward(leaf)
        found = [i for i, r in enumerate(recorded) if r is not None and r.requires_grad]
        grads = [None] * (1 + len(found))
        if scores.requires_grad:
            grads = list(torch.autograd.grad(scores.sum(), [leaf] + [recorded[i] for i in found],
                                             allow_unused=True))
    x_grad = torch.zeros_like(leaf) if grads[0] is None else grads[0].detach()
    layer_grads: List[Any] = [None] * len(layers)
    for i, r in enumerate(recorded):
        if r is not None:
            g = grads[1 + found.index(i)] if i in found else None
            layer_grads[i] = torch.zeros_like(r).detach() if g is None else g.detach()
    acts = [None if r is None else r.detach() for r in recorded]
    return x_grad, acts, layer_grads, _detach(aux)


def activation_hvp(model, inputs, layers: Sequence, score_fn: Callable):
    """`activation_grads` plus `hvps`: per layer, `H A = d (g . A) / dA` (A held constant), the gradient taken
    with `create_graph=True` and differentiated again with A as `grad_outputs`; (N, K, ...) for (N, K)
    scores, one pair of backward passes per target.

    Attention runs in PyTorch's reference ("math") kernel here: its fused CPU kernels have no second
    derivative (`_scaled_dot_product_flash_attention_for_cpu_backward`)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        recorded, outputs = _forward_recording(model, inputs, layers)
        scores, aux = score_fn(outputs)
        torch.set_grad_enabled(True)
        columns = [scores] if scores.ndim == 1 else [scores[:, k] for k in range(scores.shape[1])]
        grads, hvps = [], []
        for column in columns:
            g = [None] * len(recorded)
            if column.requires_grad:
                g = list(torch.autograd.grad(column.sum(), recorded, create_graph=True, retain_graph=True,
                                             allow_unused=True))
            h = []
            for gi, a in zip(g, recorded):
                hv = None
                if gi is not None and gi.requires_grad:
                    (hv,) = torch.autograd.grad(gi, a, grad_outputs=a.detach(), retain_graph=True,
                                                allow_unused=True)
                h.append(hv)
            grads.append([torch.zeros_like(a) if v is None else v.detach() for v, a in zip(g, recorded)])
            hvps.append([torch.zeros_like(a) if v is None else v.detach() for v, a in zip(h, recorded)])
    acts = [a.detach() for a in recorded]
    if scores.ndim == 1:
        return acts, grads[0], hvps[0], _detach(outputs), _detach(aux)
    stack_k = lambda parts: [torch.stack(p, dim=1) for p in zip(*parts)]  # noqa: E731  (N, K, ...)
    return acts, stack_k(grads), stack_k(hvps), _detach(outputs), _detach(aux)


def check_model(model: Any) -> None:
    """Every model this backend builds, it runs (channels_first convolutions included)."""
