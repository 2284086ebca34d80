"""Inputs of one dataset as inputs of another's model: normalisation and size."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TransferError
from .base import Splits, normalise, unnormalise


def resize(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) images; antialiased when shrinking."""
    if tuple(raw.shape[-2:]) == tuple(size):
        return raw
    shrink = size[0] < raw.shape[-2] or size[1] < raw.shape[-1]
    return F.interpolate(raw.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)


def to_input_space(x: torch.Tensor, source: Splits, target: Splits, *, allow_resize: bool, what: str) -> torch.Tensor:
    """Inputs of ``source`` (normalised with its own statistics) as inputs of ``target``'s model."""
    want = tuple(target.input_shape)
    have = tuple(x.shape[1:])
    if have != want:
        if not allow_resize or len(have) != 3 or len(want) != 3:
            raise TransferError(
                f"{what} has input shape {have} but the pre-training data {target.name!r} has {want}; "
                "give a dataset with the same input shape.")
        if have[0] != want[0]:
            raise TransferError(
                f"{what} has {have[0]} channel(s) but the pre-training data {target.name!r} has {want[0]}; "
                "switch between datasets with the same number of channels (MNIST <-> Fashion-MNIST, "
                "CIFAR-10 <-> CIFAR-100, mnist-digits <-> digits).")
    raw = unnormalise(x, source.mean, source.std)
    if have != want:
        raw = resize(raw, want[1:])
    return normalise(raw, target.mean, target.std).contiguous()
