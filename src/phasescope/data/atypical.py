"""Controlled atypical samples in the training split: ``--atypical KIND:FRACTION``.

The single-layer theory (docs/theory.md) says the rise of the reconstruction error comes
from the few atypical samples that dominate the gradient late in training. On real data
the claim can be tested by making a known fraction of the training samples atypical and
watching the rise grow with it. Three kinds:

* ``label-noise:F``: a fraction F of the training labels is replaced by a uniformly random
  *other* class (every made-atypical label differs from its original one); F < 1;
* ``random-labels:F``: a fraction F of the training labels is redrawn uniformly from *all* K
  classes, as in the random-label experiments of Zhang et al. (2017), so about 1/K of the
  redrawn labels equal the original by chance; F = 1 (every label random) is allowed.
  ``atypical.npz``'s ``changed`` and config.json's ``n_changed`` tell which redrawn labels differ;
* ``foreign:F[@PATH]``: a fraction F of the training images is replaced by images of another
  source, labels kept, converted to the run's input shape (bilinear resize with antialiasing,
  grey tiled to 3 channels or RGB averaged to grey) and normalised with the run's own
  per-channel mean and std (those of the clean training split). The source:

  - ``@PATH``: the training images of an ``.npz`` file (the ``npz`` dataset's format, e.g. the
    CIFAR-10 subset) or of an image-folder tree, for any dataset;
  - else, for 3-channel data (CIFAR and the like): the embedded MNIST digits (``mnist-digits``),
    resized and tiled to 3 channels;
  - else (digit datasets and other 1-channel data): synthetic noise images, uniform noise on a
    grid of a quarter of the resolution, upsampled bilinearly (smooth blobs in [0, 1]).

Only the training split is touched; the test split, the classes and the normalisation stay
the clean data's. The chosen samples are a uniformly random ``round(F * n_train)`` of the
training split, drawn from the run's seed (the same seed gives the same samples, labels and
images). ``apply_atypical`` records what it did in ``Splits.info["atypical"]`` (so in
config.json's ``data``) and the per-sample mask in ``Splits.train_meta["atypical"]``;
:func:`mask_arrays` are what a run saves as ``atypical.npz`` (``mask`` over the training split, ``index`` of the
made-atypical samples, their ``original_label``, ``label`` and ``changed`` = label differs from the original) into
the run folder, and the
per-sample table (samples.parquet) marks the followed fit samples in its ``atypical`` column.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import load_dataset
from .base import DataError, Splits, normalise, unnormalise

KINDS = ("label-noise", "random-labels", "foreign")
FULL_FRACTION_KINDS = ("random-labels",)  # kinds for which F = 1 makes sense (every label random)
NONE = "none"
MASK_FILE = "atypical.npz"
_STREAM = 0xA7F1  # separates this module's random stream from the run's other uses of the seed


@dataclass(frozen=True)
class AtypicalSpec:
    kind: str  # label-noise | random-labels | foreign
    fraction: float
    path: str | None = None  # foreign: the source file or folder

    def __str__(self) -> str:
        return f"{self.kind}:{self.fraction:g}" + (f"@{self.path}" if self.path else "")


def parse_atypical(text: str | None) -> AtypicalSpec | None:
    """``none`` (or None) -> None; ``label-noise:0.1``, ``random-labels:1``, ``foreign:0.2``,
    ``foreign:0.2@data.npz`` -> a spec. Raises ValueError with the accepted forms."""
    if text is None or str(text).strip().lower() in (NONE, ""):
        return None
    hint = ("give none, label-noise:F or foreign:F[@PATH] with a fraction 0 <= F < 1, or random-labels:F with "
            "0 <= F <= 1, e.g. label-noise:0.1, random-labels:1 or foreign:0.2@cifar10_subset.npz")
    kind, sep, rest = str(text).strip().partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(f"atypical={text!r}: {hint}.")
    frac, at, path = rest.partition("@")
    if at and kind != "foreign":
        raise ValueError(f"atypical={text!r}: only foreign takes a @PATH; {hint}.")
    if at and not path:
        raise ValueError(f"atypical={text!r}: the @ is not followed by a path; {hint}.")
    try:
        f = float(frac)
    except ValueError:
        raise ValueError(f"atypical={text!r}: {frac!r} is not a fraction; {hint}.") from None
    full = kind in FULL_FRACTION_KINDS
    if not (0 <= f <= 1 if full else 0 <= f < 1):
        raise ValueError(f"atypical={text!r}: the fraction of {kind} must be in {'[0, 1]' if full else '[0, 1)'}; "
                         f"{hint}.")
    return AtypicalSpec(kind, f, path or None)


def choose(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``round(fraction * n)`` of ``n`` samples, drawn from ``seed``."""
    k = int(round(fraction * n))
    return np.sort(np.random.default_rng([_STREAM, seed]).choice(n, k, replace=False))


def other_labels(y: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """For each label a uniformly random different class (needs num_classes >= 2)."""
    shift = np.random.default_rng([_STREAM, seed, 1]).integers(1, num_classes, size=len(y))
    return (y + shift) % num_classes


def random_labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """``n`` labels drawn uniformly from all ``num_classes`` classes (the original may come back)."""
    return np.random.default_rng([_STREAM, seed, 4]).integers(0, num_classes, size=n)


def noise_images(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``n`` smooth noise images in [0, 1] of ``shape`` (C, H, W): uniform noise on a grid of a
    quarter of the resolution (at least 2x2), upsampled bilinearly."""
    c, h, w = shape
    g = torch.Generator().manual_seed(int(np.random.default_rng([_STREAM, seed, 2]).integers(2**31)))
    coarse = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def convert(raw: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Raw [0, 1] images (N, C', H', W') to ``shape`` (C, H, W): bilinear resize with antialiasing,
    1 -> C channels by tiling, C' -> 1 by averaging (any other change of channels is refused)."""
    c, h, w = shape
    x = raw.float()
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.repeat(1, c, 1, 1)
        elif c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise DataError(f"foreign images have {x.shape[1]} channels and the run's inputs {c}; "
                            "give a source with 1 or the same number of channels.")
    return x.clamp(0, 1)


def foreign_source(data: Splits, path: str | None, seed: int) -> tuple[str, torch.Tensor | None]:
    """(description, raw [0, 1] training images of the source, or None for synthetic noise)."""
    if path:
        p = Path(path).expanduser()
        name = "folder" if p.is_dir() else "npz"
        src = load_dataset(name, data_dir=str(p), seed=seed)
        return f"{name} {p}", unnormalise(src.x_train, src.mean, src.std)
    if data.input_shape[0] == 3:
        src = load_dataset("mnist-digits", seed=seed)
        return "mnist-digits (embedded MNIST digits, resized, tiled to 3 channels)", unnormalise(
            src.x_train, src.mean, src.std)
    return "noise (uniform noise at a quarter of the resolution, upsampled bilinearly)", None


def apply_atypical(data: Splits, spec: AtypicalSpec | str | None, seed: int) -> Splits:
    """``data`` with the training samples that ``spec`` names made atypical (a new Splits; the
    input is not changed). ``None``/``none`` returns ``data`` unchanged."""
    spec = parse_atypical(spec) if not isinstance(spec, AtypicalSpec) and spec is not None else spec
    if spec is None:
        return data
    if len(data.x_train) == 0 or data.x_train.dim() != 4:
        raise DataError(f"--atypical needs image data (N, C, H, W); {data.name} has inputs {data.input_shape}.")
    n, k = len(data.y_train), data.num_classes
    idx = choose(n, spec.fraction, seed)
    y = data.y_train.clone()
    x = data.x_train
    info: dict[str, Any] = {"kind": spec.kind, "fraction": spec.fraction, "n": int(len(idx)), "n_train": int(n),
                            "seed": int(seed), "mask_file": MASK_FILE}
    if spec.kind == "label-noise":
        y[torch.as_tensor(idx)] = torch.as_tensor(other_labels(data.y_train.numpy()[idx], k, seed), dtype=y.dtype)
    elif spec.kind == "random-labels":
        y[torch.as_tensor(idx)] = torch.as_tensor(random_labels(len(idx), k, seed), dtype=y.dtype)
        info["n_changed"] = int((y[torch.as_tensor(idx)] != data.y_train[torch.as_tensor(idx)]).sum())
    else:
        desc, raw = foreign_source(data, spec.path, seed)
        if raw is None:
            imgs = noise_images(len(idx), data.input_shape, seed)
        else:
            pick = np.random.default_rng([_STREAM, seed, 3]).choice(len(raw), len(idx), replace=len(idx) > len(raw))
            imgs = convert(raw[torch.as_tensor(pick, dtype=torch.long)], data.input_shape)
        x = x.clone()
        x[torch.as_tensor(idx)] = normalise(imgs, data.mean, data.std).to(x.dtype)
        info["source"] = desc
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return replace(data, x_train=x, y_train=y, info={**data.info, "atypical": info},
                   train_meta={**data.train_meta, "atypical": mask,
                               "original_label": data.y_train.numpy().copy()})


def mask_arrays(data: Splits) -> dict[str, np.ndarray] | None:
    """The arrays of atypical.npz (``mask`` over the training split, ``index``, ``label``,
    ``original_label`` and ``changed`` = label differs from the original, of the made-atypical
    samples), or None when ``data`` has none."""
    mask = data.train_meta.get("atypical")
    if mask is None or "atypical" not in data.info:
        return None
    idx = np.flatnonzero(mask)
    label, original = data.y_train.numpy()[idx], data.train_meta["original_label"][idx]
    return {"mask": mask, "index": idx, "label": label, "original_label": original, "changed": label != original}
