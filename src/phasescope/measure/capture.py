"""Frozen copies, BatchNorm handling and activation capture with forward hooks.

Measurement never touches the training model: it works on a deep copy whose
parameters are frozen. ``bn_mode`` decides what BatchNorm layers do in that copy:

* ``recalibrate`` (default): reset the running statistics and recompute them with a
  pass over training data in train mode with cumulative averaging (as
  ``torch.optim.swa_utils.update_bn`` does), then measure in eval mode. Early in
  training the running statistics lag far behind the weights; measuring with them
  gives a spurious early *increase* of the reconstruction loss.
* ``running``: eval mode with the running statistics the training loop accumulated.
* ``batch``: every measurement batch is normalised with its own statistics
  (train-mode BatchNorm with the running statistics left untouched); results then
  depend on ``measure_batch_size``, which is recorded.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..defaults import BN_MODES, check_choice
from ..models import resolve_layers


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off; the original is not modified."""
    frozen = copy.deepcopy(model)
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def bn_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> None:
    """Recompute BatchNorm running statistics on ``x`` (cumulative average over batches)."""
    bns = bn_layers(model)
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over batches
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size].to(device, non_blocking=True))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def prepare(model: nn.Module, bn_mode: str, x_calib: torch.Tensor, batch_size: int, device: torch.device) -> nn.Module:
    """The frozen, BatchNorm-prepared copy that every measurement at a checkpoint uses."""
    frozen = frozen_copy(model).to(device)
    if bn_mode == "recalibrate":
        recalibrate_bn(frozen, x_calib, batch_size, device)
    elif bn_mode == "batch":
        for m in bn_layers(frozen):
            m.train()
            m.momentum = 0.0  # batch statistics are used; running statistics stay as they are
    else:
        check_choice("bn_mode", bn_mode, BN_MODES)
    return frozen


def pool_grid(shape: tuple[int, ...], max_features: int) -> int | None:
    """Side of the square grid a (C, H, W) output is average-pooled to, or None to keep it.

    The grid is the largest g <= min(H, W) with C*g*g <= max_features (at least 1).
    """
    if len(shape) != 3:
        return None
    c, h, w = shape
    if c * h * w <= max_features:
        return None
    g = max(1, int(math.floor(math.sqrt(max_features / c))))
    return min(g, h, w)


def flatten_features(out: torch.Tensor, grid: int | None) -> torch.Tensor:
    """(B, ...) layer output to (B, p) float32 features, pooled to ``grid`` when given."""
    if grid is not None:
        out = nn.functional.adaptive_avg_pool2d(out, grid)
    return out.reshape(out.shape[0], -1).float()


@contextmanager
def _hooks(model: nn.Module, names: list[str], hook) -> Iterator[None]:
    """``hook(name, inputs, output)`` on every forward of each named module while open."""
    handles = [m.register_forward_hook(lambda _m, inp, out, n=n: hook(n, inp, out))
               for n, m in resolve_layers(model, names).items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture(model: nn.Module, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Register forward hooks on ``layers``; the yielded dict holds the latest outputs."""
    store: dict[str, torch.Tensor] = {}
    with _hooks(model, layers, lambda n, _inp, out: store.__setitem__(n, out.detach())):
        yield store


@torch.no_grad()
def iter_batches(
    model: nn.Module,
    layers: list[str],
    x: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[slice, torch.Tensor, dict[str, torch.Tensor]]]:
    """Yield ``(rows, logits, {layer: raw output})`` over ``x`` in batches (one forward each)."""
    with capture(model, layers) as store:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device, non_blocking=True)
            logits = model(xb)
            yield slice(i, i + len(xb)), logits, dict(store)


def final_linear_name(model: nn.Module) -> str | None:
    """Name of the classifier's final ``nn.Linear`` (the last one registered), or None.

    For phasescope's models that is the last module of ``head``; for other models it
    assumes modules are registered in forward order, which callers can check by
    comparing ``W a + b`` with the logits.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


@contextmanager
def capture_inputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks that append the (first) *input* of each named module, flattened to
    (B, d), to a list per name, for every forward run while the context is open."""
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with _hooks(model, names, lambda n, inp, _out: store[n].append(inp[0].detach().reshape(inp[0].shape[0], -1))):
        yield store
