"""The data model: sizes, flags, prototypes shared across splits, seeding, validation."""
from __future__ import annotations

import numpy as np
import pytest

from phasescope.theory import DataModel


def test_sizes_flags_and_shapes():
    dm = DataModel(num_classes=4, dim=30, n_train=200, n_test=100, atypical_fraction=0.1)
    X, y, typical = dm.generate(0)
    assert X.shape == (200, 30) and y.shape == (200,) and typical.dtype == bool
    np.testing.assert_array_equal(np.bincount(y), [50] * 4)
    np.testing.assert_array_equal(np.bincount(y[~typical], minlength=4), [5] * 4)
    Xt, yt, tt = dm.generate(0, "test")
    assert Xt.shape == (100, 30) and (~tt).sum() == 4 * 2  # round(0.1 * 25) = 2 per class


def test_typical_samples_are_prototype_plus_noise():
    dm = DataModel(num_classes=3, dim=400, n_train=300, noise=0.0, atypical_fraction=0.2)
    mu = dm.prototypes(1)
    X, y, typical = dm.generate(1)
    np.testing.assert_allclose(X[typical], mu[y[typical]])
    norms = np.linalg.norm(X[~typical], axis=1)  # random patterns with the prototypes' norm
    np.testing.assert_allclose(norms, dm.prototype_strength * np.sqrt(dm.dim))
    assert np.abs(X[~typical] @ mu.T).max() / norms.max() ** 2 < 0.3  # and unrelated to the prototypes


def test_other_kind_uses_another_prototype_and_keeps_the_label():
    dm = DataModel(num_classes=4, dim=50, n_train=80, noise=0.0, atypical_fraction=0.25, atypical_kind="other")
    mu = dm.prototypes(2)
    X, y, typical = dm.generate(2)
    for x, label in zip(X[~typical], y[~typical]):
        match = [k for k in range(4) if np.allclose(x, mu[k])]
        assert len(match) == 1 and match[0] != label


def test_same_seed_same_data_and_prototypes_shared_across_splits():
    dm = DataModel(dim=20, n_train=50, n_test=40)
    a, b = dm.generate(3), dm.generate(3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(dm.generate(4)[0], a[0])
    # Test samples of class k scatter around the same prototype as the training samples.
    dm0 = dm.replace(noise=0.0, atypical_fraction=0.0)
    Xt, yt, _ = dm0.generate(3, "test")
    np.testing.assert_allclose(Xt, dm0.prototypes(3)[yt])


def test_imbalance_ratio():
    sizes = DataModel(num_classes=5, imbalance=10.0).class_sizes(1000)
    assert sizes.sum() == 1000 and sizes[0] / sizes[-1] == pytest.approx(10, rel=0.05)
    assert np.all(np.diff(sizes) < 0)


@pytest.mark.parametrize("changes, match", [
    ({"atypical_fraction": 1.0}, "atypical_fraction"),
    ({"atypical_kind": "odd"}, "random, other"),
    ({"imbalance": 0.5}, "imbalance"),
    ({"num_classes": 1}, "num_classes"),
    ({"n_train": 3}, "leaves a class empty"),
])
def test_validation_names_the_parameter(changes, match):
    with pytest.raises(ValueError, match=match):
        DataModel(**changes).validate()
