"""User data to validated tensors: what the tracker (and extensions following their own data) accept.

``(x, y)`` arrays or tensors, or an iterable of ``(x, y)`` batches (a DataLoader); errors say what to fix.
A float32 CPU tensor of inputs is kept as given (not copied): the tracker reads it at every checkpoint,
so it must not be changed in place while the tracker is in use. A DataLoader's batches are written
into one float32 buffer as they come; when that buffer would exceed ``SPILL_BYTES`` (224 x 224 x 3
images: some 1,800 of them) it is a memory-mapped temporary file instead of memory, so that inputs
a loader makes on the fly (decoded, resized) do not have to fit in the process's memory: the
operating system pages them in as each checkpoint reads them, and can drop them again.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Iterable, Iterator

import numpy as np
import torch

SPILL_BYTES = 1 << 30  # a DataLoader's inputs over this size go to a memory-mapped temporary file (TMPDIR)


def iter_batches(data: Any, name: str) -> Iterator[tuple[Any, Any]]:
    """The ``(x, y)`` batches of ``data``, one at a time (an ``(x, y)`` pair is one batch)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list, dict)):
        yield data[0], data[1]
        return
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        for b in data:
            if isinstance(b, dict):
                raise TypeError(f"{name} yields dicts (keys {sorted(b)}); give batches of (x, y) instead, e.g. a "
                                "DataLoader with collate_fn=lambda b: (inputs, labels), or tensors (x, y).")
            if not isinstance(b, (tuple, list)) or len(b) < 2:
                raise TypeError(f"{name} must yield (x, y) batches; got a {type(b).__name__}.")
            yield b[0], b[1]
        return
    raise TypeError(f"{name} must be (x, y) arrays/tensors or an iterable of (x, y) batches; got {type(data).__name__}.")


def batches(data: Any, name: str) -> list[tuple[Any, Any]]:
    return list(iter_batches(data, name))


def _batch_count(data: Any) -> int | None:
    """How many batches an iterable of batches (a DataLoader) says it yields, or None."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list, dict)):
        return 1
    try:
        return int(len(data))
    except (TypeError, NotImplementedError):
        return None


def mapped_buffer(shape: tuple[int, ...], name: str) -> torch.Tensor | None:
    """An uninitialised float32 tensor of ``shape`` backed by a temporary file in
    ``tempfile.gettempdir()`` (``TMPDIR``), or None (with a warning) when the disk has no room for it.
    The file is unlinked at once: its space returns to the disk when the tensor is freed. (Where
    ``TMPDIR`` is a tmpfs, the file is memory too, though swappable: point it at a disk.) Its space
    is reserved up front, so a full disk is an error now, not a crash (SIGBUS) at a later write;
    where that cannot be done (no ``os.posix_fallocate``: macOS, Windows) the inputs stay in memory."""
    nbytes = int(np.prod(shape)) * 4
    if not hasattr(os, "posix_fallocate"):
        return None
    try:
        with tempfile.NamedTemporaryFile(prefix="phasescope-inputs-", suffix=".f32") as f:
            os.posix_fallocate(f.fileno(), 0, nbytes)
            array = np.memmap(f.name, dtype=np.float32, mode="r+", shape=shape)
    except OSError as e:
        warnings.warn(f"{name}: no room for {nbytes / 2**30:.1f} GiB of inputs in {tempfile.gettempdir()} ({e}); "
                      "they are held in memory instead. Point TMPDIR at a disk with room to keep them out of memory.",
                      stacklevel=5)  # the caller of PhaseTracker(...)
        return None
    return torch.from_numpy(array)


class _Rows:
    """Input batches written into one float32 buffer as they arrive, when the number of batches is
    known (a DataLoader): ``count`` batches of the first batch's size at most; the inputs then take
    their own size once (plus at most one batch), not twice as batches and their concatenation. A
    buffer over ``SPILL_BYTES`` is a memory-mapped temporary file (:func:`mapped_buffer`). Anything
    else (more rows than that, other shapes) falls back to concatenating."""

    def __init__(self, count: int | None, float_inputs: bool, name: str = "inputs"):
        self.count, self.float_inputs, self.name = count, float_inputs, name
        self.buf, self.rows, self.rest = None, 0, []

    def add(self, x: torch.Tensor) -> None:
        if self.buf is None and not self.rest and self.float_inputs and (self.count or 0) > 1 and x.dim() >= 1:
            shape = (len(x) * self.count, *x.shape[1:])
            if int(np.prod(shape)) * 4 > SPILL_BYTES:
                self.buf = mapped_buffer(shape, self.name)
            if self.buf is None:
                self.buf = torch.empty(shape, dtype=torch.float32)
        if (self.buf is not None and not self.rest and x.shape[1:] == self.buf.shape[1:]
                and self.rows + len(x) <= len(self.buf)):
            self.buf[self.rows:self.rows + len(x)] = x  # the float32 conversion .float() would do
            self.rows += len(x)
            return
        self.rest.append(x)

    def tensor(self) -> torch.Tensor:
        parts = ([self.buf[:self.rows]] if self.buf is not None else []) + self.rest
        if not parts:
            return torch.zeros(0)
        # One tensor (the usual (x, y) case) is used as given, not copied: at 224 x 224 x 3 the fit and
        # test inputs are gigabytes, and a copy would double them.
        return parts[0] if len(parts) == 1 else torch.cat([p.float() if self.float_inputs else p for p in parts])


def as_tensors(data: Any, name: str, *, tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (x float32, y int64) tensors from (x, y) arrays/tensors or an iterable of (x, y) batches;
    with ``tokens`` the inputs are token ids and stay integers (int64). A DataLoader's batches are
    written into one buffer as they come (see :class:`_Rows`)."""
    xs, ys = _Rows(_batch_count(data), float_inputs=not tokens, name=name), []
    for x, y in iter_batches(data, name):
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        y = y if torch.is_tensor(y) else torch.as_tensor(np.asarray(y))
        if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                                torch.int32, torch.int64, torch.bool)):
            raise TypeError(f"{name}: inputs have dtype {x.dtype}; give real numbers (float or integer pixels).")
        xs.add(x.detach().cpu())
        ys.append(y.detach().cpu().reshape(-1) if y.dim() > 1 and y.shape[1:].numel() == 1 else y.detach().cpu())
    x = xs.tensor()
    y = (ys[0] if len(ys) == 1 else torch.cat(ys)) if ys else torch.zeros(0)
    if len(x) == 0:
        raise ValueError(f"{name} is empty; give at least two samples per split.")
    if y.dim() != 1:
        raise ValueError(f"{name}: labels must be a 1-D vector of class indices; got shape {tuple(y.shape)} "
                         "(one-hot labels: pass y.argmax(1)).")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels; give one label per input.")
    if y.dtype.is_floating_point:
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise ValueError(f"{name}: labels must be integer class indices 0..K-1; got non-integer values.")
    if (y < 0).any():
        raise ValueError(f"{name}: labels must be class indices 0..K-1; found {int(y.min())}.")
    if tokens:
        if x.dtype.is_floating_point:
            raise TypeError(f"{name}: token inputs must be integer token ids (N, T); got {x.dtype}.")
        return x.long(), y.long()
    x = x.float().contiguous()  # no copy when already float32 and contiguous (flattening stays a view)
    step = max(1, (1 << 24) // max(1, x[0].numel()))  # rows checked at a time: no input-sized mask
    bad = sum(int((~torch.isfinite(b)).sum()) for b in x.split(step))
    if bad:
        raise ValueError(f"{name}: {bad} input values are NaN or infinite; clean or drop those samples.")
    return x, y.long()


class RowSubset:
    """Rows ``rows`` (indices) of inputs ``x``, copied out only a batch at a time: a subset of large
    inputs (BatchNorm recalibration's 1,024 samples: 0.6 GB at 224 x 224 x 3) costs no copy of its
    own. Supports what recalibration does with its inputs: ``len``, slicing (a subset of the
    subset) and ``.to(device)`` (the rows, as a tensor)."""

    def __init__(self, x: torch.Tensor, rows: torch.Tensor):
        self.x, self.rows = x, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> "RowSubset":
        return RowSubset(self.x, self.rows[part])

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.x[self.rows].to(*args, **kwargs)
