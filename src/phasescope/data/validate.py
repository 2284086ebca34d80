"""Checks every dataset passes before training, so that nonsense fails early and clearly.

- labels are integer class indices 0..K-1, K >= 2, with every class present in the training
  split; K is ``num_classes`` when given (classes may then be absent from training, with a
  warning), else the number of class names, else the largest label + 1;
- inputs are numbers, finite, and sanely scaled (``|x| <= MAX_ABS_INPUT``);
- neither split is empty, and inputs and labels pair up.

:func:`check_splits` is applied to whatever a loader returns (``load_dataset``) and to
everything :func:`~phasescope.data.base.make_splits` builds; the array-level helpers run
while files are read, so that their errors name the file. Every error says what to do.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError

# Inputs above this magnitude are not pixels or standardised features; they also overflow
# float32 statistics (values near 1e30 turn the normalisation into inf).
MAX_ABS_INPUT = 1e6
_RELABEL = "relabel them to 0..K-1, e.g. classes, y = np.unique(y, return_inverse=True)"


class DataWarning(UserWarning):
    """The data are usable but probably not what was meant (e.g. classes absent from training)."""


def as_labels(y, *, source: str) -> np.ndarray:
    """Integer class indices ``(N,)`` as int64 from ``(N,)`` or ``(N, 1)`` integer(-valued) labels."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot? store y.argmax(1))" if y.ndim == 2 else ""
        raise DataError(f"{source}: labels have shape {y.shape}; expected class indices of shape (N,){hint}.")
    if y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.integer):
        if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
            raise DataError(f"{source}: label {int(y.max())} is not a class index; {_RELABEL}.")
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y)
        if bad.any():
            raise DataError(f"{source}: {int(bad.sum())} label(s) are NaN or infinite (first at index "
                            f"{int(np.flatnonzero(bad)[0])}); drop those samples or give them a class.")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise DataError(f"{source}: label {float(y[i]):g} at index {i} is not an integer ({int(frac.sum())} such "
                            f"label(s)); labels are class indices 0..K-1, not scores or probabilities.")
        if y.size and float(np.abs(y).max()) >= 2.0**53:
            raise DataError(f"{source}: label {float(np.abs(y).max()):g} is not a class index; {_RELABEL}.")
        return y.astype(np.int64)
    kind = "strings" if y.dtype.kind in "US" else "not numbers"
    raise DataError(f"{source}: labels are {y.dtype} ({kind}); expected integer class indices 0..K-1. "
                    f"Store the names separately: {_RELABEL}.")


def check_inputs(x: np.ndarray, *, source: str) -> None:
    """Raise unless ``x`` (``(N, ...)``) holds real numbers, all finite and of magnitude <= :data:`MAX_ABS_INPUT`."""
    if x.dtype.kind not in "biuf":
        kind = "strings" if x.dtype.kind in "US" else "complex numbers" if x.dtype.kind == "c" else "not plain numbers"
        raise DataError(f"{source} holds {x.dtype} ({kind}); store inputs as uint8 pixels 0..255 or floats, "
                        "e.g. np.asarray(x, dtype=np.float32).")
    if not x.size or x.dtype.kind == "b":
        return
    low, high = x.min(), x.max()  # NaN propagates; no full-size temporaries on the usual path
    if x.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        bad = ~np.isfinite(x)
        per_sample = bad.reshape(len(x), -1).any(axis=1)
        n_nan = int(np.isnan(x).sum())
        raise DataError(
            f"{source} holds {n_nan} NaN and {int(bad.sum()) - n_nan} infinite value(s), in {int(per_sample.sum())} "
            f"of {len(x)} samples (first: sample {int(np.flatnonzero(per_sample)[0])}); replace them "
            "(e.g. np.nan_to_num) or drop those samples."
        )
    top = max(abs(float(low)), abs(float(high)))
    if top > MAX_ABS_INPUT:
        raise DataError(
            f"{source} holds values up to {top:.3g} in magnitude; inputs must be pixels (0..255 or 0..1) or "
            f"features of moderate scale (|x| <= {MAX_ABS_INPUT:g}). Rescale them first, e.g. x / np.abs(x).max()."
        )


def _ranges(present: np.ndarray, k: int, limit: int = 5) -> tuple[int, str]:
    """How many of 0..k-1 are not in sorted ``present``, and the first ``limit`` gaps as 'a-b, c'.

    Works from the gaps between present labels, so a stray huge label costs nothing.
    """
    edges = np.concatenate([[-1], present[present < k], [k]])
    gaps = [(int(a) + 1, int(b) - 1) for a, b in zip(edges[:-1], edges[1:]) if b - a > 1]
    count = sum(b - a + 1 for a, b in gaps)
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in gaps[:limit])
    return count, text + (", ..." if len(gaps) > limit else "")


def _largest(y_train: np.ndarray, y_test: np.ndarray, n: int = 3) -> str:
    values, counts = np.unique(np.concatenate([y_train, y_test]), return_counts=True)
    return ", ".join(f"{v} ({c} sample{'s' if c != 1 else ''})" for v, c in zip(values[::-1][:n], counts[::-1][:n]))


def class_names(
    y_train: np.ndarray,
    y_test: np.ndarray,
    *,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    source: str,
) -> tuple[list[str], str]:
    """Validate int64 labels; return the K class names and the classes absent from training ('' if none).

    Names beyond the given ones are ``str(i)``; with ``num_classes`` the names are cut or padded to it.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                    or num_classes < 2):
        raise DataError(f"num_classes must be an integer >= 2 (or None to count the labels); got {num_classes!r}.")
    for split, y in (("y_train", y_train), ("y_test", y_test)):
        if y.size and y.min() < 0:
            raise DataError(f"{source} {split}: label {int(y.min())} ({int((y < 0).sum())} negative label(s)) is not a "
                            f"class index; labels must be 0..K-1: {_RELABEL}.")
    present = np.unique(y_train)
    if len(present) < 2:
        what = f"a single class (label {int(present[0])})" if len(present) else "no labels"
        raise DataError(f"{source} y_train holds {what}; a classifier needs at least two classes in the training "
                        "split. Add samples of the other classes.")
    if num_classes is not None:
        k, basis, fix = int(num_classes), f"--num-classes {num_classes}", "or raise --num-classes (num_classes)"
    elif classes is not None:
        k, basis, fix = len(classes), f"{len(classes)} class names", "or give a name for every class"
    else:
        k = int(max(y_train.max(), y_test.max(initial=0))) + 1
        basis = fix = ""
    for split, y in (("y_train", y_train), ("y_test", y_test)):
        over = y >= k
        if over.any():
            values = np.unique(y[over])
            shown = ", ".join(map(str, values[-5:][::-1])) + (", ..." if len(values) > 5 else "")
            raise DataError(f"{source} {split}: label(s) {shown} ({int(over.sum())} sample(s)) lie outside 0..{k - 1} "
                            f"({basis}). Fix those labels, {fix}.")
    n_absent, absent = _ranges(present, k)
    if n_absent and num_classes is None:
        raise DataError(
            f"{source} y_train: labels must be 0..K-1 with every class in the training split, but {n_absent} of the "
            f"{k} classes 0..{k - 1} have no training samples ({absent}); largest labels: "
            f"{_largest(y_train, y_test)}. Fix stray labels and {_RELABEL}; or, if those classes are really "
            "absent, pass --num-classes (num_classes) to train with them anyway."
        )
    names = [str(c) for c in classes][:k] if classes is not None else []
    return names + [str(i) for i in range(len(names), k)], absent


def check_splits(s: "Splits", *, num_classes: int | None = None) -> "Splits":  # data.base.Splits (base imports this module)
    """Raise a :class:`DataError` unless ``s`` makes sense to train on; return it (class names set to K).

    With ``num_classes``, classes absent from training raise a :class:`DataWarning` once and are
    recorded in ``s.info["absent_train_classes"]`` (saved in config.json).
    """
    source = str(s.info.get("source") or s.name)
    for split in ("train", "test"):
        x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
        if len(x) == 0 or len(y) == 0:
            raise DataError(f"{source}: the {split} split is empty ({len(x)} inputs, {len(y)} labels); "
                            f"phasescope needs {split} samples. Check the files, or the options that select samples.")
        if len(x) != len(y):
            raise DataError(f"{source}: {len(x)} {split} inputs but {len(y)} labels; give one label per input.")
        if y.dtype.is_floating_point or y.dtype.is_complex or y.ndim != 1:
            raise DataError(f"{source}: {split} labels are {y.dtype} of shape {tuple(y.shape)}; expected int64 (N,).")
        low, high = (float(v) for v in torch.aminmax(x))  # NaN propagates; no full-size temporaries
        if not (np.isfinite(low) and np.isfinite(high)):
            bad = int((~torch.isfinite(x)).sum())
            raise DataError(f"{source}: {bad} {split} input value(s) are NaN or infinite after loading; "
                            "replace or drop those samples.")
        top = max(abs(low), abs(high))
        if top > MAX_ABS_INPUT:
            raise DataError(f"{source}: {split} inputs reach {top:.3g} after normalisation; rescale the data "
                            f"(|x| <= {MAX_ABS_INPUT:g}).")
    if s.x_train.shape[1:] != s.x_test.shape[1:]:
        raise DataError(f"{source}: training inputs have shape {tuple(s.x_train.shape[1:])} but test inputs "
                        f"{tuple(s.x_test.shape[1:])}; both splits must have one input shape.")
    names, absent = class_names(s.y_train.numpy().astype(np.int64), s.y_test.numpy().astype(np.int64),
                                classes=s.classes, num_classes=num_classes, source=source)
    s.classes = names
    if absent and s.info.get("absent_train_classes") != absent:
        s.info["absent_train_classes"] = absent
        warnings.warn(f"{source}: classes {absent} have no training samples; the model still has {len(names)} "
                      f"outputs (num_classes={num_classes}), and never sees those classes in training.",
                      DataWarning, stacklevel=2)
    return s
