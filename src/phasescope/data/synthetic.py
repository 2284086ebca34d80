"""``synthetic``: the data model of the single-layer theory as a dataset for ``phasescope run``.

Class prototypes plus noise, with a fraction of atypical samples per class (see
:class:`phasescope.theory.DataModel`). Inputs are flat ``(N, d)``, normalised with the
training split's global mean and std exactly as ``phasescope theory`` normalises them, so
a deep network and the single layer see the same numbers. Every sample's flag is kept in
``train_meta["typical"]`` / ``test_meta["typical"]`` (bool arrays aligned with the splits).

The data model's knobs come as keyword arguments (from the ``RunConfig.synthetic`` section);
``train_size`` sets ``n_train``; ``data_seed`` (default: the run's seed) picks the instance.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from .base import DataError, Splits
from .datamodel import DataModel, normalise


def load_synthetic(*, train_size: int | None = None, seed: int = 0, data_dir: Any = None, download: bool = False,
                   data_seed: int | None = None, **params: Any) -> Splits:
    """Generate the ``synthetic`` splits (``data_dir`` and ``download`` are ignored)."""
    known = {f.name for f in dataclasses.fields(DataModel)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise DataError(f"Unknown synthetic data option(s) {unknown}. Valid: {', '.join(sorted(known | {'data_seed'}))}.")
    if train_size is not None:
        params["n_train"] = int(train_size)
    try:
        model = DataModel(**params).validate()
    except (TypeError, ValueError) as e:
        raise DataError(f"synthetic: {e}") from e
    s = seed if data_seed is None else int(data_seed)
    X, y, typical = model.generate(s, "train")
    Xt, yt, typical_t = model.generate(s, "test")
    # Normalised here rather than by make_splits, whose raw-image heuristic would read
    # Gaussian values above 1.5 as 0..255 pixels.
    X, Xt, mean, std = normalise(X, Xt)
    return Splits(
        name="synthetic",
        x_train=torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
        y_train=torch.from_numpy(y.astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(Xt, dtype=np.float32)),
        y_test=torch.from_numpy(yt.astype(np.int64)),
        classes=[f"class{k}" for k in range(model.num_classes)],
        mean=[round(mean, 6)],
        std=[round(std, 6)],
        info={"source": "phasescope.theory.DataModel", "data_model": model.to_dict(), "data_seed": s,
              "atypical_train": int((~typical).sum()), "atypical_test": int((~typical_t).sum())},
        train_meta={"typical": typical},
        test_meta={"typical": typical_t},
    )
