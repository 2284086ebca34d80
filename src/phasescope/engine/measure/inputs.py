"""User data to validated tensors: what the tracker (and extensions following their own data) accept.

``(x, y)`` arrays or tensors, or an iterable of ``(x, y)`` batches (a DataLoader); errors say what to fix.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch


def batches(data: Any, name: str) -> list[tuple[Any, Any]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list, dict)):
        return [(data[0], data[1])]
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        batches = []
        for b in data:
            if isinstance(b, dict):
                raise TypeError(f"{name} yields dicts (keys {sorted(b)}); give batches of (x, y) instead, e.g. a "
                                "DataLoader with collate_fn=lambda b: (inputs, labels), or tensors (x, y).")
            if not isinstance(b, (tuple, list)) or len(b) < 2:
                raise TypeError(f"{name} must yield (x, y) batches; got a {type(b).__name__}.")
            batches.append((b[0], b[1]))
        return batches
    raise TypeError(f"{name} must be (x, y) arrays/tensors or an iterable of (x, y) batches; got {type(data).__name__}.")


def as_tensors(data: Any, name: str, *, tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (x float32, y int64) tensors from (x, y) arrays/tensors or an iterable of (x, y) batches;
    with ``tokens`` the inputs are token ids and stay integers (int64)."""
    xs, ys = [], []
    for x, y in batches(data, name):
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        y = y if torch.is_tensor(y) else torch.as_tensor(np.asarray(y))
        if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                                torch.int32, torch.int64, torch.bool)):
            raise TypeError(f"{name}: inputs have dtype {x.dtype}; give real numbers (float or integer pixels).")
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu().reshape(-1) if y.dim() > 1 and y.shape[1:].numel() == 1 else y.detach().cpu())
    x = torch.cat(xs) if xs else torch.zeros(0)
    y = torch.cat(ys) if ys else torch.zeros(0)
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
    x = x.float()
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} input values are NaN or infinite; clean or drop those samples.")
    return x, y.long()
