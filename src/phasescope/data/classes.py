"""Class-split data: one dataset's classes divided into a pre-training and a transfer part."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from ..errors import TransferError
from .base import Splits, normalise, unnormalise


def select_classes(data: Splits, keep: list[int], split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Inputs of ``split`` whose label is in ``keep``, labels renumbered 0.. in ``keep``'s order, and their rows."""
    y = getattr(data, f"y_{split}")
    idx = np.flatnonzero(np.isin(y.numpy(), keep))
    remap = torch.full((data.num_classes,), -1, dtype=torch.long)
    remap[torch.as_tensor(keep)] = torch.arange(len(keep))
    return getattr(data, f"x_{split}")[idx], remap[y[idx]], idx


def split_classes(data: Splits, pretrain_classes: Sequence[int] | None = None) -> tuple[Splits, Splits]:
    """Split ``data`` by class into pre-training and transfer datasets.

    ``pretrain_classes`` (label indices) default to the first half, ``0 .. k//2 - 1``; the
    others are the transfer classes. Both parts are relabelled ``0..`` in the original
    order and normalised with the statistics of the *pre-training* part's training split
    (so not even the normalisation sees the transfer classes). ``train_meta``/``test_meta``
    gain ``original_label`` and ``original_index`` (rows of ``data``'s splits); ``info`` of
    the pre-training part records which classes are which.
    """
    k = data.num_classes
    pre = sorted({int(c) for c in (pretrain_classes if pretrain_classes is not None else range(k // 2))})
    post = [c for c in range(k) if c not in pre]
    if len(pre) < 2 or len(post) < 2 or not all(0 <= c < k for c in pre):
        raise TransferError(f"class-split needs at least 2 pre-training and 2 transfer classes among the {k} "
                            f"classes 0..{k - 1} of {data.name!r}; got pre-training classes {pre}.")
    # Statistics of the pre-training part's raw training images: both parts are normalised with them.
    raw_pre = unnormalise(data.x_train[np.isin(data.y_train.numpy(), pre)], data.mean, data.std).double()
    axes = (0, 2, 3) if raw_pre.dim() == 4 else (0, 1)
    mean = [round(float(v), 6) for v in raw_pre.mean(axes).reshape(-1)]
    std = [round(float(v) + 1e-6, 6) for v in raw_pre.std(axes, unbiased=False).reshape(-1)]
    names = list(data.classes)
    record = {"pretrain_classes": [names[c] for c in pre], "transfer_classes": [names[c] for c in post],
              "pretrain_labels": pre, "transfer_labels": post, "source": data.name}

    def renorm(x: torch.Tensor) -> torch.Tensor:
        return normalise(unnormalise(x, data.mean, data.std), mean, std).contiguous()

    def meta(m: dict, idx: np.ndarray, y: torch.Tensor) -> dict:
        return {**{key: v[idx] for key, v in m.items()}, "original_label": y[idx].numpy(), "original_index": idx}

    out = []
    for role, keep in (("pretrain", pre), ("transfer", post)):
        xtr, ytr, itr = select_classes(data, keep, "train")
        xte, yte, ite = select_classes(data, keep, "test")
        out.append(dataclasses.replace(
            data, name=f"{data.name}[{role} classes]", x_train=renorm(xtr), y_train=ytr, x_test=renorm(xte),
            y_test=yte, classes=[names[c] for c in keep], mean=mean, std=std,
            info={**data.info, "class_split": {**record, "role": role}},
            train_meta=meta(data.train_meta, itr, data.y_train), test_meta=meta(data.test_meta, ite, data.y_test),
        ))
    return out[0], out[1]
