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


class DataError(ValueError):
    """A data file is missing, corrupt, or does not match what was asked for."""


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
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 2:
        raise DataError(f"{name} has shape {x.shape}; expected (N, H, W), (N, H, W, C), (N, C, H, W) or (N, D).")
    if x.size == 0:
        raise DataError(f"{name} is empty; every split needs samples.")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{name} has dtype {x.dtype}; give real-valued pixels or features.")
    bad = int((~np.isfinite(x)).sum()) if np.issubdtype(x.dtype, np.floating) else 0
    if bad:
        raise DataError(f"{name} contains {bad} NaN or infinite values; clean or drop those samples.")
    top = float(np.abs(x).max())
    if top > MAX_ABS_INPUT:
        raise DataError(f"{name} has values up to {top:.3g}; inputs must be pixels (0..1 or 0..255) or features "
                        f"of sane scale (|x| <= {MAX_ABS_INPUT:g}). Rescale the data before saving it.")
    x = x.astype(np.float32)
    if top > 1.5:
        x = x / 255.0
    return x


MAX_ABS_INPUT = 1e6  # larger inputs overflow the float32 statistics of normalisation and decoding


def check_labels(name: str, y_train: np.ndarray, y_test: np.ndarray, num_classes: int | None = None, *,
                 all_present: bool = True) -> int:
    """The class count, after checking labels are 0..K-1 with every class present in training.

    With ``num_classes`` the labels must lie in 0..num_classes-1 and classes may be absent from
    training. One stray label (1,000,000 in a file of digits) would otherwise make a model with
    a million outputs; a single class would "complete" with accuracy 1.
    """
    for split, y in (("training", y_train), ("test", y_test)):
        if len(y) == 0:
            raise DataError(f"{name}: the {split} split is empty; every split needs samples.")
        if y.min() < 0:
            raise DataError(f"{name}: {split} labels must be class indices 0..K-1; found {int(y.min())}.")
    top = int(max(y_train.max(), y_test.max()))
    if num_classes is not None:
        if top >= num_classes:
            bad = sorted(set(np.unique(np.concatenate([y_train, y_test])).tolist()) - set(range(num_classes)))
            raise DataError(f"{name}: labels {bad[:10]} lie outside 0..{num_classes - 1} (num_classes={num_classes}); "
                            "fix the labels or raise --num-classes.")
        k = num_classes
    else:
        k = top + 1
        missing = sorted(set(range(k)) - set(np.unique(y_train).tolist())) if all_present else []
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise DataError(f"{name}: labels go up to {top} but classes {shown} have no training sample. Labels must be "
                            "0..K-1 with every class in training; relabel, or give --num-classes K if absent classes "
                            "are intended.")
    if all_present and (k < 2 or len(np.unique(y_train)) < 2):
        raise DataError(f"{name}: the training labels hold a single class; a classifier needs at least two.")
    return k


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded, stratified train/test split (same seed, same split)."""
    from sklearn.model_selection import train_test_split

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
    from sklearn.model_selection import train_test_split

    # Integer sizes: a float fraction can round to one sample fewer than asked for.
    try:
        idx, _ = train_test_split(np.arange(len(y)), train_size=size, test_size=n_drop, stratify=y, random_state=seed)
    except ValueError as e:  # e.g. a class with a single sample
        raise DataError(f"Cannot take a class-balanced subset of {size} from {len(y)} samples: {e}") from e
    return np.sort(idx)


def _int_labels(y: Any, source: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise DataError(f"{source}: labels must be integer class indices 0..K-1; found non-integer values.")
    elif not np.issubdtype(y.dtype, np.integer) and y.dtype != bool:
        raise DataError(f"{source}: labels have dtype {y.dtype}; give integer class indices 0..K-1.")
    return y.astype(np.int64)


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
    then applied to both splits.
    """
    y_train, y_test = (_int_labels(y, f"{name} {k}") for y, k in ((y_train, "y_train"), (y_test, "y_test")))
    xtr = to_nchw_unit(x_train, name=f"{name} x_train")
    xte = to_nchw_unit(x_test, name=f"{name} x_test")
    if len(xtr) != len(y_train) or len(xte) != len(y_test):
        raise DataError(
            f"{name}: {len(xtr)} training inputs but {len(y_train)} labels, "
            f"{len(xte)} test inputs but {len(y_test)} labels."
        )
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{name}: training inputs have shape {xtr.shape[1:]} but test inputs {xte.shape[1:]}.")
    n_cls = check_labels(name, y_train, y_test, num_classes, all_present=False)  # load_dataset checks the rest
    classes = list(classes) if classes is not None else [str(i) for i in range(n_cls)]
    if len(classes) < n_cls:
        raise DataError(f"{name}: labels go up to {n_cls - 1} but only {len(classes)} class names were given.")
    keep = stratified_subset(y_train, train_size, seed)
    xtr, y_train = xtr[keep], y_train[keep]
    axes = (0,) if xtr.ndim == 2 else (0, 2, 3)
    if normalise:  # statistics in float64: float32 sums of many large values overflow
        mean = xtr.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        std = xtr.std(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32) + 1e-6
        if xtr.ndim == 2:  # flat data: one global channel
            mean = np.full_like(mean, xtr.mean(dtype=np.float64))
            std = np.full_like(std, xtr.std(dtype=np.float64) + 1e-6)
    else:
        mean = np.zeros([1] * xtr.ndim, np.float32)
        std = np.ones([1] * xtr.ndim, np.float32)
    xtr = (xtr - mean) / std
    xte = (xte - mean) / std
    info = dict(info or {})
    if train_size is not None:
        info["train_size"] = int(len(keep))
    per_channel = mean.reshape(-1)[: (1 if xtr.ndim == 2 else xtr.shape[1])]
    per_channel_std = std.reshape(-1)[: len(per_channel)]
    return Splits(
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
