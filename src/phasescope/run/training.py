"""Training: seeded, resumable mini-batch SGD/Adam/AdamW with a measurement hook per iteration.

The loop is deliberately plain. ``on_iteration(model, t)`` is called with the model
after ``t`` optimiser steps (t = 0 is the initialisation), which is where a
:class:`~phasescope.engine.tracker.PhaseTracker` measures. Batches come from a
:class:`BatchStream` with its own generator, so nothing else that draws random
numbers can change the order of the data.

Language models: a model whose training-mode output holds logits at every position of its
token windows, ``(B, T, vocab)`` (the zoo's GPT), is trained on the next-token loss at all
positions: the target of position t is the window's token t+1, and of the last position the
window's label. ``warmup`` steps raise the learning rate linearly to its value.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..errors import TrainingDiverged  # noqa: F401  (re-exported: raised by train())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use --device cpu.")
    return torch.device(name)


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # weight decay on matrices and embeddings, not on biases and norms (GPT-2)
        params = list(params)
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.99))
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warm_up(optimizer: torch.optim.Optimizer, step: int, warmup: int) -> None:
    """Learning rate of optimiser step ``step`` (1-based): ``lr * min(1, step / warmup)``. The target
    lr is kept in each group's ``initial_lr`` (saved with the optimiser's state, so a resumed run
    warms up from the same value)."""
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"] * min(1.0, step / warmup)


def loss_of(logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a batch: of the labels, or, for logits at every position of token windows
    (B, T, vocab), of the next token at every position (the window shifted by one, then the label)."""
    if logits.dim() == 3 and xb.dim() == 2 and logits.shape[:2] == xb.shape:
        targets = torch.cat([xb[:, 1:], yb[:, None]], 1)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return F.cross_entropy(logits, yb)


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
    warmup: int = 0,
) -> int:
    """Run optimiser steps ``start+1 .. iterations``; returns the last iteration reached.

    ``on_iteration(model, t)`` runs at every t in ``start .. iterations`` before step t+1;
    ``on_step(t, loss)`` after each step (progress bars); ``warmup``: steps of linear
    learning-rate warm-up (:func:`warm_up`).
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
        loss = loss_of(model(xb), xb, yb)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(t + 1, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if warmup:
            warm_up(optimizer, t + 1, warmup)
        optimizer.step()
        if on_step is not None:
            on_step(t + 1, value)
    return iterations
