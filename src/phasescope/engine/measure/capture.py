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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...defaults import BN_MODES, TOKENS, check_choice
from ..layers import CHANNELS_FIRST_1D, Forward, call_model, parse_layer, select_output, to_channels_last
from ...errors import ModelError
from ..layers import resolve_layers
from .distributed import Shard, local_module
from .inputs import RowSubset


class _LocalBatchNorm(_BatchNorm):
    """What a SyncBatchNorm becomes in a frozen copy: the same statistics, computed in this process
    (a measurement's batches are not the other ranks' training batches; they must not be synchronised)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


CHANNELS_LAST = True  # measure conv nets on a CPU in channels-last memory order (channels_last_helps); False: never


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off; the original is not modified. Of a model
    wrapped in DistributedDataParallel, the rank's own module (see :func:`~.distributed.local_module`)."""
    frozen = copy.deepcopy(local_module(model))
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    for m in frozen.modules():
        if isinstance(m, nn.SyncBatchNorm):
            m.__class__ = _LocalBatchNorm
    return frozen


def channels_last_helps(model: nn.Module, x: torch.Tensor, device: torch.device,
                        forward: Forward | None = None) -> bool:
    """Whether measuring ``model`` in channels-last memory order is safe and worth it: on a CPU
    (where oneDNN's convolutions are measured faster in it; GPUs keep the model's order), for a
    model with 2-D convolutions on 4-D float inputs, when a frozen copy in that order runs on the
    samples ``x`` (a few) and gives the logits it gives in the usual order (a model that calls
    ``.view`` on a convolution's output fails in channels-last order: it is then measured as is)."""
    if (not CHANNELS_LAST or device.type != "cpu" or x.dim() != 4 or not x.is_floating_point()
            or not any(isinstance(m, nn.Conv2d) for m in model.modules())):
        return False
    frozen = frozen_copy(model).to(device)
    try:
        with torch.no_grad():
            usual = call_model(frozen, x, forward).float()
            converted = call_model(to_channels_last(frozen), x, forward).float()
    except Exception:  # noqa: BLE001 - any failure in that order: measure in the usual one
        return False
    return usual.shape == converted.shape and bool(torch.allclose(usual, converted, rtol=1e-4,
                                                                   atol=1e-5 * (1.0 + float(usual.abs().max()))))


def bn_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor | RowSubset, batch_size: int, device: torch.device,
                   forward: Forward | None = None, shard: Shard | None = None) -> None:
    """Recompute BatchNorm running statistics on ``x``: the mean over batches of each batch's mean
    and (unbiased) variance, what ``momentum=None`` (a cumulative average) computes, here summed
    in float64 so that the order of the sum does not matter.

    With a ``shard`` each rank forwards its share of the batches (the same batches one process
    would: in train mode a batch is normalised with its own statistics, so they depend on that
    batch alone) and the sums are all-reduced: the result is one process's, exactly."""
    bns = [m for m in bn_layers(model) if m.track_running_stats and m.running_mean is not None]
    if not bns:  # the same model on every rank: all return here, or none
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = 1.0  # after each batch the running statistics are that batch's
    sums = [torch.zeros(2, *m.running_mean.shape, dtype=torch.float64, device=m.running_mean.device) for m in bns]
    model.train()
    local = x if shard is None else x[shard.share(len(x), batch_size)]  # whole batches of this batch_size
    batches = 0
    with nullcontext() if shard is None else shard.agree("recalibrating BatchNorm"):
        for i in range(0, len(local), batch_size):
            call_model(model, local[i : i + batch_size].to(device, non_blocking=True), forward)
            batches += 1
            for m, acc in zip(bns, sums):
                acc[0] += m.running_mean
                acc[1] += m.running_var
    if shard is not None:  # every rank's sums (one collective)
        *sums, total = shard.all_reduce([*sums, torch.tensor([float(batches)])], "combining the BatchNorm statistics")
        batches = int(total.item())
    for m, acc, mom in zip(bns, sums, saved):
        if batches:
            m.running_mean.copy_(acc[0] / batches)
            m.running_var.copy_(acc[1] / batches)
        m.num_batches_tracked.fill_(batches)
        m.momentum = mom
    model.eval()


def prepare(model: nn.Module, bn_mode: str, x_calib: torch.Tensor | RowSubset | None, batch_size: int,
            device: torch.device, forward: Forward | None = None, shard: Shard | None = None,
            channels_last: bool = False) -> nn.Module:
    """The frozen, BatchNorm-prepared copy that every measurement at a checkpoint uses (with a
    ``shard``, BatchNorm recalibrated by all its ranks together, see :func:`recalibrate_bn`;
    ``channels_last``: in channels-last memory order, see :func:`~..layers.to_channels_last`)."""
    frozen = frozen_copy(model).to(device)
    if channels_last:
        frozen = to_channels_last(frozen)
    if bn_mode == "recalibrate":
        recalibrate_bn(frozen, x_calib, batch_size, device, forward, shard)
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


@dataclass(frozen=True)
class FeatureMap:
    """How one layer's output (B, ...) becomes (B, p) features, decided once from its shape.

    * (C, H, W) outputs: flattened, or average-pooled to a ``grid`` x ``grid`` map first when
      C*H*W exceeds the feature budget (:func:`pool_grid`).
    * (N, D) outputs, N tokens of D features (transformer blocks with ``batch_first``):
      ``tokens="mean"`` averages the tokens, ``"cls"`` takes the first (class) token, ``"last"``
      the last (where a causal language model predicts the next token), ``"pool"``
      keeps all tokens, average-pooled along the token axis to ``kept`` tokens when N*D exceeds
      the budget. For channels-first 1-D modules (Conv1d, BatchNorm1d, ... : (C, L) outputs)
      the token axis is the last one, and C the features.
    * anything else: flattened.
    """

    shape: tuple[int, ...]
    grid: int | None = None  # spatial side after pooling, (C, H, W) outputs
    tokens: str | None = None  # mean | cls | last | pool, (N, D) outputs
    token_axis: int = 1  # axis of the tokens in the (B, ., .) output
    kept: int | None = None  # tokens kept by "pool"

    @property
    def features(self) -> int:
        if self.grid is not None:
            return self.shape[0] * self.grid * self.grid
        if self.tokens is not None:
            d = self.shape[1] if self.token_axis == 1 else self.shape[0]
            return d * (self.kept if self.tokens == "pool" else 1)
        return int(math.prod(self.shape))

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape))
        if self.grid is not None:
            return f"{shape} average-pooled to {self.shape[0]}x{self.grid}x{self.grid}: {self.features} features"
        if self.tokens is not None:
            n = self.shape[self.token_axis - 1]
            what = {"mean": f"mean of {n} tokens", "cls": f"token 0 of {n}", "last": f"token {n - 1} of {n} (the last)",
                    "pool": f"all {n} tokens" if self.kept == n else f"{n} tokens average-pooled to {self.kept}"}
            return f"{shape}, tokens on axis {self.token_axis}: {what[self.tokens]}: {self.features} features"
        return f"{shape} flattened: {self.features} features"

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if self.grid is not None:
            out = nn.functional.adaptive_avg_pool2d(out, self.grid)
        elif self.tokens is not None:
            t = out if self.token_axis == 1 else out.transpose(1, 2)  # (B, N, D)
            if self.tokens == "mean":
                out = t.mean(1)
            elif self.tokens == "cls":
                out = t[:, 0]
            elif self.tokens == "last":
                out = t[:, -1]
            elif self.kept != t.shape[1]:
                out = nn.functional.adaptive_avg_pool1d(t.transpose(1, 2), self.kept)  # (B, D, kept)
            else:
                out = t
        return out.reshape(out.shape[0], -1).float()


def feature_map(shape: tuple[int, ...], max_features: int, tokens: str = "mean",
                module: nn.Module | None = None) -> FeatureMap:
    """The :class:`FeatureMap` of an output of per-sample ``shape`` (from ``module``, if known)."""
    check_choice("tokens", tokens, TOKENS)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return FeatureMap(shape, grid=pool_grid(shape, max_features))
    if len(shape) == 2:
        axis = 2 if isinstance(module, CHANNELS_FIRST_1D) else 1
        n, d = (shape[0], shape[1]) if axis == 1 else (shape[1], shape[0])
        kept = min(n, max(1, max_features // d)) if tokens == "pool" else None
        return FeatureMap(shape, tokens=tokens, token_axis=axis, kept=kept)
    return FeatureMap(shape)


def flatten_features(out: torch.Tensor, grid: "int | FeatureMap | None") -> torch.Tensor:
    """(B, ...) layer output to (B, p) float32 features: through a :class:`FeatureMap`, or
    average-pooled to ``grid`` (an int) first when given."""
    if isinstance(grid, FeatureMap):
        return grid(out)
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
    """Register forward hooks on ``layers``; the yielded dict holds the latest outputs (the tensor
    a layer's selectors pick, e.g. ``blocks.3[0]``; an error names the layer if there is none)."""
    store: dict[str, torch.Tensor] = {}
    selectors = {n: parse_layer(n)[1] for n in layers}
    with _hooks(model, layers, lambda n, _inp, out: store.__setitem__(n, select_output(n, out, selectors[n]).detach())):
        yield store


@torch.no_grad()
def iter_batches(
    model: nn.Module,
    layers: list[str],
    x: torch.Tensor,
    batch_size: int,
    device: torch.device,
    forward: Forward | None = None,
) -> Iterator[tuple[slice, torch.Tensor, dict[str, torch.Tensor]]]:
    """Yield ``(rows, logits, {layer: raw output})`` over ``x`` in batches (one forward each;
    ``forward(model, x)`` calls the model when given, see :mod:`phasescope.engine.layers`)."""
    with capture(model, layers) as store:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device, non_blocking=True)
            store.clear()
            logits = call_model(model, xb, forward)
            missing = [n for n in layers if n not in store]
            if missing:
                raise ModelError(f"Layer(s) {missing} did not run in this forward pass (a branch the forward "
                                 "skipped, or a fused fast path); track the enclosing module instead.")
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
def capture_inputs(model: nn.Module, names: list[str],
                   last_position: Sequence[str] = ()) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks that append the (first) *input* of each named module, flattened to
    (B, d), to a list per name, for every forward run while the context is open. Names in
    ``last_position`` whose input is (B, T, d) keep its last position only: the head of a causal
    language model, applied at every position, whose logits are read at the last."""
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    last = set(last_position)

    def keep(n: str, inp: tuple, _out: Any) -> None:
        a = inp[0].detach()
        if n in last and a.dim() == 3:
            a = a[:, -1]
        store[n].append(a.reshape(a.shape[0], -1))

    with _hooks(model, names, keep):
        yield store
