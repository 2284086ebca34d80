"""The data container every part of phasescope consumes, and helpers to build it.

A dataset is a pair of splits held as tensors in memory: inputs as float32
``(N, C, H, W)`` (or ``(N, D)`` for flat data) normalised per channel with the
*training* split's statistics, and int64 labels. The normalisation is recorded so
that reconstructions can be read in the same units as the paper (per-pixel MSE
on the normalised input).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch


from .validate import as_labels, check_inputs, check_splits, class_names
from ..errors import DataError  # noqa: E402  (defined with the other exceptions; imported from here too)


@dataclass
class Splits:
    """Normalised train/test splits, ready for training and measurement."""

    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: list[float]  # per-channel mean of the raw training split (in [0, 1] units)
    std: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    # Optional per-sample annotations (for example the synthetic data's typical/atypical
    # flag); arrays aligned with the splits, keyed by name.
    train_meta: dict[str, np.ndarray] = field(default_factory=dict)
    test_meta: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict[str, Any]:
        """What a run records about its data in config.json."""
        return {
            "name": self.name,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "normalisation": {"mean": self.mean, "std": self.std},
            **self.info,
        }


def _channel_view(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """Per-channel ``values`` shaped to broadcast over ``x`` (N, C, H, W) or (N, D), in x's float type."""
    v = torch.as_tensor(list(values), dtype=x.dtype if x.is_floating_point() else torch.float32)
    return v.reshape(1, -1, *([1] * (x.dim() - 2))) if x.dim() > 2 else v.reshape(1, -1)[:, :1]


def unnormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised inputs (N, C, H, W) or (N, D) back to raw [0, 1] pixel units, per channel:
    the inverse of the normalisation :func:`make_splits` applies (``Splits.mean``/``std``)."""
    return x * _channel_view(std, x) + _channel_view(mean, x)


def normalise(raw: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Raw inputs (N, C, H, W) or (N, D) normalised per channel with ``mean``/``std``."""
    return (raw - _channel_view(mean, raw)) / _channel_view(std, raw)



def to_nchw_unit(x: np.ndarray, *, name: str = "x") -> np.ndarray:
    """Raw images to float32 NCHW in [0, 1].

    Accepts ``(N, H, W)`` (grey), ``(N, H, W, C)`` with C in {1, 3, 4} (channels last)
    or ``(N, C, H, W)``; uint8 is divided by 255, floats above 1.5 are taken as 0..255.
    Values must be finite real numbers of moderate size (:func:`~phasescope.data.validate.check_inputs`).
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 2:
        raise DataError(f"{name} has shape {x.shape}; expected (N, H, W), (N, H, W, C), (N, C, H, W) or (N, D).")
    check_inputs(x, source=name)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.size and float(x.max()) > 1.5:
        x = x / 255.0
    return x


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded, stratified train/test split (same seed, same split)."""
    from sklearn.model_selection import train_test_split  # lazy: scikit-learn is heavy and only this function needs it

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    return np.sort(tr), np.sort(te)


def stratified_subset(y: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of ``size`` samples (all when None)."""
    y = np.asarray(y)
    if size is None or size >= len(y):
        return np.arange(len(y))
    labels, counts = np.unique(y, return_counts=True)
    if size < len(labels):
        raise DataError(f"train_size={size} is smaller than the number of classes ({len(labels)}).")
    n_drop = len(y) - size
    if n_drop < len(labels):
        # Too few samples left out for sklearn's stratified split: drop one sample from each
        # of the n_drop largest classes (ties broken by the seed).
        rng = np.random.RandomState(seed)
        largest = np.lexsort((rng.permutation(len(labels)), -counts))[:n_drop]
        drop = [rng.choice(np.flatnonzero(y == labels[k])) for k in largest]
        return np.setdiff1d(np.arange(len(y)), drop)
    from sklearn.model_selection import train_test_split  # lazy: scikit-learn is heavy and only this function needs it

    # Integer sizes: a float fraction can round to one sample fewer than asked for.
    try:
        idx, _ = train_test_split(np.arange(len(y)), train_size=size, test_size=n_drop, stratify=y, random_state=seed)
    except ValueError as e:  # e.g. a class with a single sample
        raise DataError(f"Cannot take a class-balanced subset of {size} from {len(y)} samples: {e}") from e
    return np.sort(idx)


def make_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: list[str] | None = None,
    *,
    train_size: int | None = None,
    seed: int = 0,
    info: dict[str, Any] | None = None,
    normalise: bool = True,
    num_classes: int | None = None,
) -> Splits:
    """Validate raw arrays, optionally subsample the training split, and normalise.

    Per-channel mean and std are computed on the (subsampled) training split only,
    then applied to both splits. Labels, inputs and sizes are checked as
    :mod:`phasescope.data.validate` describes; errors name ``info["source"]`` (the file).
    """
    info = dict(info or {})
    source = str(info.get("source") or name)
    y_train = as_labels(y_train, source=f"{source} y_train")
    y_test = as_labels(y_test, source=f"{source} y_test")
    xtr = to_nchw_unit(x_train, name=f"{source} x_train")
    xte = to_nchw_unit(x_test, name=f"{source} x_test")
    for split, x, y in (("train", xtr, y_train), ("test", xte, y_test)):
        if len(x) != len(y):
            raise DataError(f"{source}: x_{split} has {len(x)} samples but y_{split} has {len(y)} labels; "
                            "give exactly one label per input.")
        if len(x) == 0:
            raise DataError(f"{source}: the {split} split is empty (x_{split} has 0 samples); "
                            f"phasescope needs {split} samples of at least two classes.")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{source}: training inputs have shape {xtr.shape[1:]} but test inputs {xte.shape[1:]}.")
    classes, _ = class_names(y_train, y_test, classes=classes, num_classes=num_classes, source=source)
    if train_size is not None and train_size > len(y_train):
        raise DataError(f"{source}: train_size={train_size} is larger than the {len(y_train)} training samples; "
                        f"use at most {len(y_train)}, or leave --train-size unset to use them all.")
    keep = stratified_subset(y_train, train_size, seed)
    xtr, y_train = xtr[keep], y_train[keep]
    axes = (0,) if xtr.ndim == 2 else (0, 2, 3)
    if normalise:
        mean = xtr.mean(axis=axes, keepdims=True)
        std = xtr.std(axis=axes, keepdims=True) + 1e-6
        if xtr.ndim == 2:  # flat data: one global channel
            mean = np.full_like(mean, xtr.mean())
            std = np.full_like(std, xtr.std() + 1e-6)
    else:
        mean = np.zeros([1] * xtr.ndim, np.float32)
        std = np.ones([1] * xtr.ndim, np.float32)
    xtr = (xtr - mean) / std
    xte = (xte - mean) / std
    if train_size is not None:
        info["train_size"] = int(len(keep))
    per_channel = mean.reshape(-1)[: (1 if xtr.ndim == 2 else xtr.shape[1])]
    per_channel_std = std.reshape(-1)[: len(per_channel)]
    splits = Splits(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(xtr, dtype=np.float32)),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(np.ascontiguousarray(xte, dtype=np.float32)),
        y_test=torch.from_numpy(y_test),
        classes=classes,
        mean=[round(float(v), 6) for v in per_channel],
        std=[round(float(v), 6) for v in per_channel_std],
        info=info,
    )
    return check_splits(splits, num_classes=num_classes)
