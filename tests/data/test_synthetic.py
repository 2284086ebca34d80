"""The ``synthetic`` dataset: the theory's data model as Splits for ``phasescope run``."""
from __future__ import annotations

import numpy as np
import pytest

from phasescope.data import DATASETS, DataError, load_dataset
from phasescope.data.synthetic import load_synthetic
from phasescope.theory import DataModel
from phasescope.data.datamodel import normalise


def test_registered_and_loadable_with_defaults():
    assert "synthetic" in DATASETS
    s = load_dataset("synthetic", seed=1)
    assert s.input_shape == (100,) and s.num_classes == 5 and len(s.y_train) == 500
    assert s.train_meta["typical"].dtype == bool and (~s.train_meta["typical"]).sum() == 50


def test_same_numbers_as_the_theory():
    params = {"num_classes": 3, "dim": 12, "n_test": 30, "atypical_fraction": 0.2, "noise": 0.5}
    s = load_synthetic(train_size=60, seed=4, **params)
    dm = DataModel(n_train=60, **params)
    X, y, typ = dm.generate(4)
    Xt, yt, typ_t = dm.generate(4, "test")
    Xn, Xtn, mean, std = normalise(X, Xt)
    np.testing.assert_allclose(s.x_train.numpy(), Xn, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.x_test.numpy(), Xtn, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(s.y_train.numpy(), y)
    np.testing.assert_array_equal(s.train_meta["typical"], typ)
    np.testing.assert_array_equal(s.test_meta["typical"], typ_t)
    assert s.info["data_model"]["n_train"] == 60 and s.mean == [pytest.approx(mean, abs=1e-6)]
    assert abs(float(s.x_train.mean())) < 1e-5 and float(s.x_train.numpy().std()) == pytest.approx(1, rel=1e-4)


def test_data_seed_fixes_the_instance_across_run_seeds():
    a = load_synthetic(seed=0, data_seed=7, dim=10, n_train=50, n_test=20)
    b = load_synthetic(seed=1, data_seed=7, dim=10, n_train=50, n_test=20)
    np.testing.assert_array_equal(a.x_train.numpy(), b.x_train.numpy())


def test_unknown_or_bad_options_are_data_errors():
    with pytest.raises(DataError, match="Unknown synthetic data option.*'nosie'.*Valid: .*noise"):
        load_synthetic(nosie=1.0)
    with pytest.raises(DataError, match="atypical_kind"):
        load_synthetic(atypical_kind="odd")
