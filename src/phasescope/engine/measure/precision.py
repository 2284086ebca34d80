"""Full float32 precision inside measurement, whatever the training loop set.

A user's loop may enable TF32 (``torch.backends.cuda.matmul.allow_tf32 = True`` or
``torch.set_float32_matmul_precision("high")``) for speed. TF32 keeps 10 mantissa bits:
Gram products H^T H over thousands of samples would then carry relative errors near 1e-3,
enough to move a ridge solution by more than the differences between checkpoints. The
context manager below switches full precision on and restores the caller's settings.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def full_precision() -> Iterator[None]:
    # set_float32_matmul_precision is the one switch for float32 matmuls (it is what the
    # legacy ``cuda.matmul.allow_tf32`` flag maps to); cudnn's flag covers convolutions.
    matmul = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
