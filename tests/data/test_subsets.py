"""The measurement sets (data.subsets) and the normalisation helpers of data.base."""
from __future__ import annotations

import numpy as np
import torch

from phasescope.config import RunConfig
from phasescope.data import make_splits, measurement_indices, measurement_sets
from phasescope.data.base import normalise, unnormalise
from phasescope.run.experiment import measurement_sets as experiment_measurement_sets


def _splits(shape=(1, 4, 4), n_train=90, n_test=60, classes=3):
    rng = np.random.RandomState(0)
    return make_splits("s", rng.rand(n_train, *shape).astype(np.float32), np.arange(n_train) % classes,
                       rng.rand(n_test, *shape).astype(np.float32), np.arange(n_test) % classes)


def test_measurement_sets_are_the_experiments_and_follow_the_indices():
    data = _splits()
    fit_idx, test_idx = measurement_indices(data, 30, 24, seed=5)
    assert len(fit_idx) == 30 and len(test_idx) == 24
    assert (np.diff(fit_idx) > 0).all() and (np.diff(test_idx) > 0).all()
    assert np.bincount(data.y_train.numpy()[fit_idx]).tolist() == [10, 10, 10]  # class-balanced
    (xf, yf), (xt, yt) = measurement_sets(data, 30, 24, seed=5)
    assert torch.equal(xf, data.x_train[fit_idx]) and torch.equal(yf, data.y_train[fit_idx])
    assert torch.equal(xt, data.x_test[test_idx]) and torch.equal(yt, data.y_test[test_idx])
    (exf, eyf), (ext, eyt) = experiment_measurement_sets(data, RunConfig(fit_samples=30, test_samples=24, seed=5))
    assert torch.equal(exf, xf) and torch.equal(eyf, yf) and torch.equal(ext, xt) and torch.equal(eyt, yt)


def test_the_test_subset_is_the_same_for_every_seed_and_none_takes_all():
    data = _splits()
    a_fit, a_test = measurement_indices(data, 30, 24, seed=0)
    b_fit, b_test = measurement_indices(data, 30, 24, seed=1)
    np.testing.assert_array_equal(a_test, b_test)
    assert not np.array_equal(a_fit, b_fit)
    fit, test = measurement_indices(data, None, None, seed=3)
    np.testing.assert_array_equal(fit, np.arange(90))
    np.testing.assert_array_equal(test, np.arange(60))


def test_unnormalise_inverts_make_splits_and_normalise():
    rng = np.random.RandomState(1)
    for shape in ((3, 5, 5), (7,)):
        raw = rng.rand(20, *shape).astype(np.float32)
        data = make_splits("n", raw, np.arange(20) % 2, raw[:6], np.arange(6) % 2)
        back = unnormalise(data.x_train, data.mean, data.std)
        assert back.dtype == torch.float32 and back.shape == data.x_train.shape
        np.testing.assert_allclose(back.numpy(), raw, atol=1e-4)
        again = normalise(back, data.mean, data.std)
        np.testing.assert_allclose(again.numpy(), data.x_train.numpy(), atol=1e-4)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)  # a float64 input stays float64, with float64 statistics
    assert unnormalise(x, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]).dtype == torch.float64
