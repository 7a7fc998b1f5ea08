"""PyTorch implementation of the backend seam (see `keras_cam/backend/__init__.py`).

Runs eagerly: `torch.compile` costs more to compile than it saves on these one-pass workloads.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, List, Sequence

import torch

from keras_cam.backend.common import check_recorded
from keras_cam.capture import intercept


def activation_grads(model, inputs, layers: Sequence, score_fn: Callable):
    recorded: List[Any] = [None] * len(layers)

    def transform_for(i: int) -> Callable:
        def transform(out):
            if not torch.is_grad_enabled():
                # The first captured layer: a fresh leaf, and autograd records from here on only.
                torch.set_grad_enabled(True)
                out = out.detach().requires_grad_(True)
            recorded[i] = out
            return out

        return transform

    # Upstream of the layers nothing is recorded: no autograd graph through the backbone (whose weights
    # require grads), so the forward costs what an inference pass costs and saves no activations.
    with torch.no_grad():
        with contextlib.ExitStack() as stack:
            for i, layer in enumerate(layers):
                stack.enter_context(intercept(layer, transform_for(i)))
            outputs = model(inputs, training=False)
        check_recorded(recorded, layers)
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


def compile(fn: Callable, model) -> Callable:
    def call(*args):
        with torch.no_grad():
            return fn(*args)

    return call


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
