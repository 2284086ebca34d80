"""Fixes in data.base: exact subset sizes."""
from __future__ import annotations

import numpy as np
import pytest

from phasescope.data.base import DataError, make_splits, stratified_subset


@pytest.mark.parametrize("size", [41, 57, 69, 70, 91, 95, 99])
def test_stratified_subset_has_exactly_the_size_asked(size):
    # 1 - size/n as a float used to round to one sample fewer (41 -> 40), and sizes that
    # leave out fewer samples than there are classes (91..99) raised sklearn's ValueError.
    y = np.arange(100) % 10
    idx = stratified_subset(y, size, seed=0)
    assert len(idx) == size and len(np.unique(idx)) == size
    counts = np.bincount(y[idx], minlength=10)
    assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(idx, stratified_subset(y, size, seed=0))


def test_stratified_subset_errors_are_data_errors():
    with pytest.raises(DataError, match="smaller than the number of classes"):
        stratified_subset(np.arange(20) % 10, 5, seed=0)
    y = np.array([0] * 10 + [1] * 10 + [2])  # a class with one sample
    with pytest.raises(DataError, match="class-balanced subset of 10"):
        stratified_subset(y, 10, seed=0)


def test_make_splits_train_size_is_exact():
    rng = np.random.RandomState(0)
    s = make_splits("t", rng.rand(100, 4, 4), np.arange(100) % 10, rng.rand(10, 4, 4), np.arange(10), train_size=41)
    assert len(s.y_train) == 41 and s.info["train_size"] == 41
