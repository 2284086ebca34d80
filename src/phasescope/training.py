"""Training: seeded, resumable mini-batch SGD/Adam with a measurement hook per iteration.

The loop is deliberately plain. ``on_iteration(model, t)`` is called with the model
after ``t`` optimiser steps (t = 0 is the initialisation), which is where a
:class:`~phasescope.tracker.PhaseTracker` measures. Batches come from a
:class:`BatchStream` with its own generator, so nothing else that draws random
numbers can change the order of the data.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .errors import TrainingDiverged  # noqa: F401  (re-exported: raised by train())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use --device cpu.")
    return torch.device(name)


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class BatchStream:
    """Endless seeded mini-batches: a fresh permutation per epoch, the last partial batch dropped."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
        if batch_size > len(x):
            batch_size = len(x)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(len(x), generator=self.gen)
        self.pos = 0
        self.epoch = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch_size > len(self.perm):
            self.perm = torch.randperm(len(self.x), generator=self.gen)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.x[idx], self.y[idx]

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos, self.epoch = s["perm"], s["pos"], s["epoch"]


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: BatchStream,
    iterations: int,
    device: torch.device,
    *,
    start: int = 0,
    on_iteration: Callable[[nn.Module, int], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> int:
    """Run optimiser steps ``start+1 .. iterations``; returns the last iteration reached.

    ``on_iteration(model, t)`` runs at every t in ``start .. iterations`` before step t+1;
    ``on_step(t, loss)`` after each step (progress bars).
    """
    model.train()
    for t in range(start, iterations + 1):
        if on_iteration is not None:
            on_iteration(model, t)
            model.train()
        if t == iterations:
            break
        xb, yb = stream.next()
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(t + 1, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(t + 1, value)
    return iterations
