"""PyTorch implementation of the backend seam (see `keras_cam/backend/__init__.py`).

Runs eagerly: `torch.compile` costs more to compile than it saves on these one-pass workloads.
"""
from __future__ import annotations

from typing import Callable

import torch

from keras_cam.capture import intercept


def activation_grads(model, inputs, layer, score_fn: Callable):
    recorded = {}

    def transform(out):
        # From here on autograd records: a fresh leaf, so the backward pass ends at the captured layer.
        torch.set_grad_enabled(True)
        out = out.detach().requires_grad_(True)
        recorded["a"] = out
        return out

    # Upstream of the layer nothing is recorded: no autograd graph through the backbone (whose weights
    # require grads), so the forward costs what an inference pass costs and saves no activations.
    with torch.no_grad():
        with intercept(layer, transform):
            outputs = model(inputs, training=False)
        scores, aux = score_fn(outputs)
        torch.set_grad_enabled(True)  # also when the layer's output does not reach the scores
        (grads,) = torch.autograd.grad(scores.sum(), recorded["a"], allow_unused=True)
    a = recorded["a"].detach()
    if grads is None:
        grads = torch.zeros_like(a)
    return a, grads.detach(), _detach(outputs), _detach(aux)


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
