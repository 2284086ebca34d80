"""The measurement sets: the seeded, class-balanced subsets the decoders and probes use.

The fit set is a subset of the training split drawn with the run's seed; the test set is
a subset of the test split drawn with seed 0, so every seed of a configuration is scored
on the same test samples. Everything that must see the tracker's own samples (the
per-sample dynamics, transfer tasks on another dataset) takes them from here.

Text (windows of token ids, :mod:`phasescope.data.text`): the subsets are seeded uniform draws of
windows, positions in the running text, not class-balanced ones (the labels, next tokens, keep
the text's own frequencies, and a token seen once cannot be stratified).
"""
from __future__ import annotations

import numpy as np

from .base import Splits, stratified_subset

TEST_SEED = 0  # the test subset is the same for every seed


def measurement_indices(data: Splits, fit_samples: int | None, test_samples: int | None,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) of the fit subset of ``data``'s training split and of the test
    subset of its test split (all rows when a size is None or not smaller than the split)."""
    if data.info.get("inputs") == "tokens":
        return _uniform(len(data.y_train), fit_samples, seed), _uniform(len(data.y_test), test_samples, TEST_SEED)
    fit = stratified_subset(data.y_train.numpy(), fit_samples, seed=seed)
    test = stratified_subset(data.y_test.numpy(), test_samples, seed=TEST_SEED)
    return fit, test


def _uniform(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted rows of a seeded uniform subset of ``size`` of ``n`` (all when None or not smaller)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def measurement_sets(data: Splits, fit_samples: int | None, test_samples: int | None,
                     seed: int) -> tuple[tuple, tuple]:
    """``((x_fit, y_fit), (x_test, y_test))``: the subsets of :func:`measurement_indices`."""
    fit, test = measurement_indices(data, fit_samples, test_samples, seed)
    return (data.x_train[fit], data.y_train[fit]), (data.x_test[test], data.y_test[test])
