"""A checkpoint's measurement shared by the ranks of a ``torch.distributed`` process group.

Every rank runs the same :class:`~phasescope.engine.tracker.PhaseTracker` on the same model weights
(DDP keeps its replicas equal) and the same fit/test samples; a :class:`Shard` gives each rank
its share of the samples and does the collectives that make the result exact:

* **shares**: whole measurement batches, contiguous, split as evenly as batch boundaries allow
  (:meth:`Shard.share`), so that each rank forwards exactly the batches one process would and
  rank 0 always holds the first (whose mean is the ridge statistics' shift in one process);
* **sums** (ridge statistics, BatchNorm averages) are all-reduced in float64 (:meth:`Shard.all_reduce`);
* **per-sample values** (errors, logits, features) are all-gathered, padded to the largest
  share, and concatenated in rank order, i.e. in the samples' own order (:meth:`Shard.gather`).

Deadlock safety: collectives are entered by every rank in the same order whatever the data.
Each local phase (a forward pass, a solve, an extension) runs inside :meth:`Shard.agree`,
which all-reduces an error flag before the next collective: a rank that raised re-raises its
own exception and every other rank raises :class:`~phasescope.errors.RankFailed` naming it
(or :class:`~phasescope.errors.NonFiniteActivations` when that rank's activations were not
finite, so that training loops handle it as one process would). Every wait has a ``timeout``:
a rank that never arrives (it crashed, or does not measure) makes the others raise instead of
hanging.
"""
from __future__ import annotations

import datetime
import pickle
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ...errors import NonFiniteActivations, NonFiniteInput, RankFailed

DEFAULT_TIMEOUT = 600.0  # seconds any rank waits for the others at a collective


def _dist():
    return dist


def initialised() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def resolve_group(distributed: Any) -> Any:
    """The process group a tracker shards over, or None to measure in this process alone.

    ``"auto"``: the default group when torch.distributed is initialised with more than one rank;
    ``True``: the same, but torch.distributed must be initialised; ``False``/``None``: none;
    a ``ProcessGroup``: that group (when it has more than one rank)."""
    if distributed is False or distributed is None:
        return None
    if distributed == "auto" or distributed is True:
        if not initialised():
            if distributed is True:
                raise RuntimeError("distributed=True but torch.distributed is not initialised; call "
                                   "torch.distributed.init_process_group() first (or launch with torchrun).")
            return None
        group = _dist().group.WORLD
    else:
        group = distributed
    return group if _dist().get_world_size(group) > 1 else None


def sharded(distributed: Any = "auto") -> bool:
    """Whether a tracker with this ``distributed`` argument shards its measurement now."""
    return resolve_group(distributed) is not None


def check_distributed(distributed: Any) -> None:
    """Fail early on an argument that is none of "auto", True, False or a process group."""
    if distributed is True or distributed is False or distributed is None \
            or (isinstance(distributed, str) and distributed == "auto"):
        return
    dist = _dist()
    if dist.is_available() and isinstance(distributed, dist.ProcessGroup):
        return
    raise ValueError(f"distributed={distributed!r}: give 'auto' (shard across torch.distributed ranks when it is "
                     "initialised), False (measure in this process alone) or a torch.distributed ProcessGroup.")


def local_module(model: nn.Module) -> nn.Module:
    """The rank's own module inside DistributedDataParallel (or DataParallel); FSDP is refused:
    its parameters are sharded, and a frozen copy of one rank's shard is not the model."""
    fsdp = _fsdp_classes()
    if fsdp and any(isinstance(m, fsdp) for m in model.modules()):
        raise ValueError("PhaseTracker cannot measure an FSDP model: its parameters are sharded across ranks. "
                         "Measure the unsharded model (e.g. with DDP), or gather its full state dict into a "
                         "plain copy of the model and measure that copy.")
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _fsdp_classes() -> tuple[type, ...]:
    fsdp = sys.modules.get("torch.distributed.fsdp")  # an FSDP model has imported it; importing it costs seconds
    if fsdp is None:
        return ()
    return tuple(c for c in (getattr(fsdp, "FullyShardedDataParallel", None), getattr(fsdp, "FSDPModule", None))
                 if isinstance(c, type))


class Shard:
    """This rank's part of one checkpoint's measurement (see the module docstring).

    ``iteration`` only names the checkpoint in error messages; ``timeout`` (seconds) bounds
    every wait for the other ranks."""

    def __init__(self, group: Any, batch_size: int, iteration: int = 0, timeout: float = DEFAULT_TIMEOUT):
        dist = _dist()
        self.group, self.batch_size, self.iteration = group, int(batch_size), int(iteration)
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.timeout = datetime.timedelta(seconds=float(timeout))
        backend = str(dist.get_backend(group))
        # NCCL moves only CUDA tensors; gloo (and the rest) CPU ones.
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------ shares
    def counts(self, n: int, batch_size: int | None = None) -> list[int]:
        """Samples of each rank: contiguous runs of whole batches (of ``batch_size``, default the shard's),
        ending at the batch boundaries nearest to equal shares of the samples (a short last batch counts
        for what it holds); rank 0 holds the first batch."""
        bs = int(batch_size or self.batch_size)
        bounds = np.minimum(np.arange(0, n + bs, bs), n)
        bounds = np.unique(np.append(bounds, n))
        ends = [int(bounds[np.argmin(np.abs(bounds - n * (r + 1) / self.world))]) for r in range(self.world)]
        ends[0] = max(ends[0], int(bounds[1]) if len(bounds) > 1 else 0)  # the first batch is rank 0's
        ends = list(np.maximum.accumulate(ends))
        ends[-1] = n
        return [int(e - s) for s, e in zip([0, *ends[:-1]], ends)]

    def share(self, n: int, batch_size: int | None = None) -> slice:
        """This rank's rows of ``n`` samples (whole batches of ``batch_size``, default the shard's)."""
        counts = self.counts(n, batch_size)
        start = sum(counts[: self.rank])
        return slice(start, start + counts[self.rank])

    # ------------------------------------------------------------------ collectives
    def _wait(self, work: Any, what: str) -> None:
        try:
            work.wait(self.timeout)
        except RuntimeError as e:
            raise RankFailed(
                f"rank {self.rank} of {self.world}: the other ranks did not answer within "
                f"{self.timeout.total_seconds():.0f} s while {what} at iteration {self.iteration} ({e}). Every rank "
                "must measure at the same iterations (build the tracker and call measure on every rank, or pass "
                "distributed=False to measure in one process); a rank may also have failed outside the measurement."
            ) from None

    def _to_comm(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device).contiguous()

    def all_reduce(self, tensors: Sequence[torch.Tensor], what: str = "summing statistics",
                   op: str = "sum") -> list[torch.Tensor]:
        """The sums (``op="max"``: maxima) over ranks of ``tensors`` (any shapes), computed in float64
        with one collective; returned in their own dtypes and devices."""
        if not tensors:
            return []
        flat = self._to_comm(torch.cat([t.detach().reshape(-1).to(torch.float64).to(self.device) for t in tensors]))
        dist = _dist()
        red = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        self._wait(dist.all_reduce(flat, op=red, group=self.group, async_op=True), what)
        out, i = [], 0
        for t in tensors:
            out.append(flat[i : i + t.numel()].reshape(t.shape).to(t.device, t.dtype))
            i += t.numel()
        return out

    def broadcast(self, tensors: Sequence[torch.Tensor], src: int = 0, what: str = "sharing values") -> list[torch.Tensor]:
        """``tensors`` as rank ``src`` (a rank of the group) holds them, on every rank (float64 transport)."""
        if not tensors:
            return []
        flat = self._to_comm(torch.cat([t.detach().reshape(-1).to(torch.float64).to(self.device) for t in tensors]))
        dist = _dist()
        self._wait(dist.broadcast(flat, dist.get_global_rank(self.group, src), group=self.group, async_op=True), what)
        out, i = [], 0
        for t in tensors:
            out.append(flat[i : i + t.numel()].reshape(t.shape).to(t.device, t.dtype))
            i += t.numel()
        return out

    def gather(self, local: torch.Tensor | np.ndarray, n: int, what: str = "gathering per-sample values") -> Any:
        """The (n, ...) rows of every rank's share, in sample order, from this rank's (n_r, ...) share."""
        as_numpy = isinstance(local, np.ndarray)
        t = torch.from_numpy(np.ascontiguousarray(local)) if as_numpy else local.detach()
        counts = self.counts(n)
        if len(t) != counts[self.rank]:
            raise RuntimeError(f"rank {self.rank} holds {len(t)} rows but its share of {n} is {counts[self.rank]}.")
        dtype, home = t.dtype, t.device
        wire = torch.uint8 if dtype == torch.bool else dtype
        pad = max(counts)
        buf = torch.zeros((pad, *t.shape[1:]), dtype=wire, device=self.device)
        buf[: len(t)] = t.to(self.device, wire)
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        self._wait(_dist().all_gather(parts, buf, group=self.group, async_op=True), what)
        full = torch.cat([p[:c] for p, c in zip(parts, counts)]).to(home, dtype)
        return full.numpy() if as_numpy else full

    def gather_rows(self, local: torch.Tensor | None, n: int, what: str = "gathering per-sample values") -> torch.Tensor:
        """:meth:`gather` of float32 rows whose shape a rank with an empty share cannot know (``local``
        None there): the shape is agreed on first (one more collective)."""
        meta = torch.zeros(9, dtype=torch.float64)
        if local is not None:
            meta[0] = local.dim()
            meta[1 : local.dim()] = torch.tensor(local.shape[1:], dtype=torch.float64)
        meta = self.all_reduce([meta], f"{what} (their shape)", op="max")[0]
        shape = tuple(int(v) for v in meta[1 : int(meta[0])].tolist())
        if local is None:
            local = torch.zeros((0, *shape))
        return self.gather(local.float(), n, what)

    def broadcast_object(self, obj: Any, src: int = 0, what: str = "sharing a result") -> Any:
        """A picklable ``obj`` as rank ``src`` holds it, on every rank (two collectives: size, bytes)."""
        data = pickle.dumps(obj) if self.rank == src else b""
        size = self.broadcast([torch.tensor([float(len(data))])], src, what)[0]
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.rank == src:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist = _dist()
        self._wait(dist.broadcast(buf, dist.get_global_rank(self.group, src), group=self.group, async_op=True), what)
        return obj if self.rank == src else pickle.loads(buf.cpu().numpy().tobytes())

    # ------------------------------------------------------------------ failures
    @contextmanager
    def agree(self, what: str) -> Iterator[None]:
        """Run a local phase; then every rank learns whether any rank raised in it, and all raise
        together (the rank that failed its own exception, the others :class:`RankFailed`)."""
        error: BaseException | None = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
        flag = torch.zeros(self.world, dtype=torch.float64, device=self.device)
        flag[self.rank] = 0.0 if error is None else 2.0 if isinstance(error, (NonFiniteActivations, NonFiniteInput)) \
            else 1.0
        flags = self.all_reduce([flag], f"checking that every rank finished {what}")[0].tolist()
        if not any(flags):
            return
        bad = [r for r, f in enumerate(flags) if f]
        first = bad[0]
        mine = None
        if self.rank == first:
            where = getattr(error, "where", None)  # NonFiniteActivations: what was not finite
            mine = where if where else f"{type(error).__name__}: {error}"
        text = self.broadcast_object(mine, first, f"sharing rank {first}'s error")
        if error is not None:
            raise error
        if flags[first] == 2.0:
            raise NonFiniteActivations(self.iteration, f"{text} on rank {first} ({what})")
        raise RankFailed(f"rank {', '.join(map(str, bad))} of {self.world} failed {what} at iteration "
                         f"{self.iteration}: {text}; every rank stops measuring there.")
