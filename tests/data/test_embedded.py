"""The embedded datasets (no files needed) and the dataset registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.data import DATASETS, DataError, load_dataset


@pytest.fixture(scope="module")
def digits28():
    return load_dataset("mnist-digits")


def test_mnist_digits_shapes_and_split(digits28):
    s = digits28
    assert s.name == "mnist-digits" and s.classes == [str(i) for i in range(10)]
    assert tuple(s.x_train.shape) == (4000, 1, 28, 28) and tuple(s.x_test.shape) == (1000, 1, 28, 28)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert np.bincount(s.y_train.numpy()).tolist() == [400] * 10
    assert np.bincount(s.y_test.numpy()).tolist() == [100] * 10
    # normalised with the training split's statistics
    assert abs(float(s.x_train.mean())) < 1e-4 and abs(float(s.x_train.std()) - 1) < 1e-3
    assert 0.05 < s.mean[0] < 0.3


def test_mnist_digits_split_is_the_same_across_seeds(digits28):
    other = load_dataset("mnist-digits", seed=7)
    assert torch.equal(digits28.x_test, other.x_test) and torch.equal(digits28.y_test, other.y_test)
    assert torch.equal(digits28.x_train, other.x_train)


def test_mnist_digits_train_size_subset_is_balanced(digits28):
    a = load_dataset("mnist-digits", train_size=500, seed=1)
    b = load_dataset("mnist-digits", train_size=500, seed=2)
    assert len(a.y_train) == 500 and a.info["train_size"] == 500
    assert np.bincount(a.y_train.numpy()).tolist() == [50] * 10
    assert not torch.equal(a.x_train, b.x_train)  # the subset follows the seed ...
    assert torch.equal(a.y_test, digits28.y_test)  # ... the test split does not
    assert torch.equal(load_dataset("mnist-digits", train_size=500, seed=1).x_train, a.x_train)


def test_sklearn_digits():
    s = load_dataset("digits")
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    assert len(s.y_train) + len(s.y_test) == 1797
    assert len(s.y_test) == 360
    assert set(np.unique(s.y_test.numpy())) == set(range(10))
    assert torch.equal(s.x_test, load_dataset("digits", seed=3).x_test)
    t = load_dataset("digits", train_size=100)
    assert len(t.y_train) == 100 and np.bincount(t.y_train.numpy()).min() >= 9


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="Unknown dataset 'imagenet'") as e:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(e.value)
    assert "cifar10" in str(e.value) and "mnist-digits" in str(e.value)
