import numpy as np
import pytest
import torch

from phasescope.engine.phases import detect_phases, mean_ci
from phasescope.engine.stats import Bootstrap, bootstrap_weights, percentile_interval


def _old_weights(n, n_boot, seed):  # the resampling every interval is built on (one implementation)
    return bootstrap_weights(n, n_boot, seed)


def _old_interval(means, confidence):
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


@pytest.fixture
def values():
    return np.random.default_rng(1).gamma(2.0, size=137)


def test_weights_are_seeded_multinomial_resamples_and_are_cached():
    b = Bootstrap(200, 0.9, seed=7)
    w = b.weights(50)
    np.testing.assert_array_equal(w, bootstrap_weights(50, 200, 7))  # the seed decides
    assert not np.array_equal(w, bootstrap_weights(50, 200, 8))
    assert b.weights(50) is w  # drawn once per sample size
    assert w.shape == (200, 50)
    np.testing.assert_allclose(w.sum(1), 1.0)  # counts / n: each row is a resample's weights
    np.testing.assert_array_equal(w * 50, np.round(w * 50))  # whole counts


@pytest.mark.parametrize("n", [7, 50, 3000])
def test_weights_have_the_multinomial_moments(n):
    """Counts of n draws with replacement: mean 1, variance 1 - 1/n, covariance -1/n, whatever
    the block the rows are drawn in (3,000 samples: several blocks)."""
    counts = bootstrap_weights(n, 4000, 3) * n
    assert abs(counts.mean() - 1) < 1e-12  # every row holds exactly n draws
    assert counts.var(axis=0).mean() == pytest.approx(1 - 1 / n, rel=0.03)
    c = np.cov(counts[:, :2].T)[0, 1]
    assert abs(c + 1 / n) < 0.05


def test_estimate_gives_the_old_numbers(values):
    m, lo, hi = Bootstrap(300, 0.95, seed=3).estimate(values)
    old_lo, old_hi = _old_interval(_old_weights(values.size, 300, 3) @ values, 0.95)
    assert (m, lo, hi) == (float(values.mean()), old_lo, old_hi)
    assert lo < m < hi


def test_estimate_takes_tensors_and_lists(values):
    b = Bootstrap(100, 0.9, seed=0)
    expected = b.estimate(values)
    assert b.estimate(torch.from_numpy(values)) == expected
    assert b.estimate(list(values)) == expected
    assert b.estimate(values.reshape(1, -1)) == expected  # flattened


def test_fewer_than_two_samples_give_no_interval():
    b = Bootstrap(100)
    m, lo, hi = b.estimate(np.array([2.5]))
    assert m == 2.5 and np.isnan(lo) and np.isnan(hi)
    assert all(np.isnan(b.estimate(np.array([]))))


def test_same_seed_same_interval_other_seed_other_interval(values):
    assert Bootstrap(100, seed=5).estimate(values) == Bootstrap(100, seed=5).estimate(values)
    assert Bootstrap(100, seed=5).estimate(values) != Bootstrap(100, seed=6).estimate(values)


def test_estimate_many_matches_the_old_batched_rows_and_the_one_vector_path(values):
    rng = np.random.default_rng(2)
    M = rng.normal(size=(6, values.size))
    b = Bootstrap(250, 0.9, seed=4)
    mean, lo, hi = b.estimate_many(M)
    # the old batched computation of the theory's rows, bit for bit
    old_lo, old_hi = np.quantile(M @ _old_weights(values.size, 250, 4).T, [(1 - 0.9) / 2, (1 + 0.9) / 2], axis=1)
    np.testing.assert_array_equal(lo, old_lo)
    np.testing.assert_array_equal(hi, old_hi)
    np.testing.assert_array_equal(mean, M.mean(1))
    # and the same statistic as one row at a time (matrix and vector products may round differently)
    for k in range(len(M)):
        np.testing.assert_allclose(b.estimate(M[k]), (mean[k], lo[k], hi[k]), rtol=1e-12, atol=1e-12)
    m1, l1, h1 = b.estimate_many(M[:, :1])
    np.testing.assert_array_equal(m1, M[:, 0])
    assert np.isnan(l1).all() and np.isnan(h1).all()
    with pytest.raises(ValueError, match="matrix"):
        b.estimate_many(values)


def test_difference_is_paired(values):
    b = Bootstrap(400, 0.95, seed=0)
    other = values + 0.01 + np.random.default_rng(9).normal(scale=1e-3, size=values.size)
    d, lo, hi = b.difference(other, values)
    old_lo, old_hi = _old_interval(_old_weights(values.size, 400, 0) @ (other - values), 0.95)
    assert (lo, hi) == (old_lo, old_hi)
    assert d == pytest.approx(0.01, abs=1e-3)
    assert 0 < lo < hi  # paired: a shift far smaller than the spread of the values is still significant
    _, ulo, uhi = b.estimate(other)
    assert uhi - ulo > 10 * (hi - lo)
    with pytest.raises(ValueError, match="same samples"):
        b.difference(values, values[:-1])


def test_interval_level_and_validation():
    s = np.arange(1001, dtype=float)
    assert percentile_interval(s, 0.9) == pytest.approx((50.0, 950.0))
    assert Bootstrap(10, 0.8).interval(s) == pytest.approx((100.0, 900.0))
    assert Bootstrap(10, 0.8).interval(s, 0.9) == pytest.approx((50.0, 950.0))
    lo, hi = percentile_interval(np.stack([s, 2 * s]), 0.9, axis=1)
    np.testing.assert_allclose(lo, [50.0, 100.0])
    np.testing.assert_allclose(hi, [950.0, 1900.0])
    with pytest.raises(ValueError):
        Bootstrap(0)
    with pytest.raises(ValueError):
        Bootstrap(10, confidence=1.0)


def test_mean_ci_and_detect_phases_use_the_same_resampling(values):
    e = mean_ci(values, confidence=0.9, n_boot=150, seed=2)
    assert (e.value, e.ci_low, e.ci_high) == Bootstrap(150, 0.9, seed=2).estimate(values)
    # the interval of the minimum in detect_phases: the old (K, n) @ (n, B) product
    E = np.stack([values + 1.0, values, values + 0.5])
    r = detect_phases([0, 1, 2], E, n_boot=150, seed=2)
    boot = E @ _old_weights(values.size, 150, 2).T
    assert (r.min_value.ci_low, r.min_value.ci_high) == _old_interval(boot[1], 0.95)


def test_estimate_all_equals_the_one_vector_loop_for_the_same_seed():
    """The tracker's intervals: one bootstrap product per sample size, the same (mean, lo, hi) as the
    loop of estimate() it replaced (matrix and vector products may round differently: 1e-12)."""
    rng = np.random.default_rng(5)
    vectors = [rng.normal(size=300), (rng.random(300) < 0.4).astype(float), rng.normal(size=120),
               torch.from_numpy(rng.gamma(2.0, size=300)), rng.normal(size=1), np.zeros(0), list(rng.normal(size=120))]
    b = Bootstrap(400, 0.95, seed=3)
    got = b.estimate_all(vectors)
    assert len(got) == len(vectors)
    for v, g in zip(vectors, got):
        want = Bootstrap(400, 0.95, seed=3).estimate(v)
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert b.estimate_all([]) == []
