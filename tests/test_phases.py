import numpy as np
import pytest

from phasescope import detect_phases, log_schedule
from phasescope.engine.phases import mean_ci

ITS = log_schedule(4096)
T = np.log2(np.asarray(ITS) + 1.0)


def per_sample(curve, n=1000, noise=0.02, seed=0):
    """Per-sample errors whose mean follows ``curve``: a fixed per-sample difficulty times the
    curve, plus independent noise at every checkpoint."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(4.0, 0.25, size=n)  # mean 1
    return base[None] * np.asarray(curve)[:, None] + rng.normal(0, noise, size=(len(curve), n))


def three_phase():
    return np.where(T < 3, 0.40, np.where(T < 7, 0.40 - 0.1 * (T - 3) / 4, 0.30 + 0.07 * (T - 7) / 6))


def test_three_phases_found_in_order_with_intervals():
    r = detect_phases(ITS, per_sample(three_phase()))
    assert r.names() == ["constant", "decrease", "increase"]
    assert r.phases[0].start == 0 and r.phases[-1].end == 4096
    assert 32 <= r.min_iteration <= 128
    assert r.relative_decrease.ci_low < 0.25 < r.relative_decrease.ci_high or abs(r.relative_decrease.value - 0.25) < 0.02
    assert r.relative_increase.ci_low > 0
    # phases are contiguous
    for a, b in zip(r.phases, r.phases[1:]):
        assert a.end == b.start


@pytest.mark.parametrize("seed", range(10))
def test_pure_noise_has_no_decrease_or_increase(seed):
    r = detect_phases(ITS, per_sample(np.full(len(ITS), 0.4), noise=0.05, seed=seed), seed=seed)
    assert r.names() == ["constant"]
    assert not r.decrease_significant and not r.increase_significant


@pytest.mark.parametrize("seed", range(5))
def test_monotone_decrease_has_no_increase(seed):
    curve = 0.5 - 0.15 * T / T.max()
    r = detect_phases(ITS, per_sample(curve, seed=seed), seed=seed)
    assert r.has("decrease") and not r.has("increase")
    assert r.min_iteration == 4096


def test_monotone_increase_has_no_decrease():
    curve = 0.3 + 0.1 * T / T.max()
    r = detect_phases(ITS, per_sample(curve))
    assert r.has("increase") and not r.has("decrease")


def test_plateau_after_decrease_is_constant_not_increase():
    curve = np.where(T < 6, 0.5 - 0.2 * T / 6, 0.3)
    r = detect_phases(ITS, per_sample(curve, noise=0.01))
    # falls from the first step, so there is no initial constant phase; the plateau is a trailing one
    assert r.names() == ["decrease", "constant"]


def test_small_but_significant_change_below_min_effect_is_no_phase():
    curve = 0.4 - 0.004 * (T > 6)  # 1% drop, measured with very little noise
    r = detect_phases(ITS, per_sample(curve, noise=0.0005), min_effect=0.02)
    assert not r.has("decrease")


def test_validation_errors():
    with pytest.raises(ValueError):
        detect_phases([0, 1], np.zeros((3, 5)))
    with pytest.raises(ValueError):
        detect_phases([1, 0], np.zeros((2, 5)))


def test_mean_ci_covers_the_mean():
    v = np.random.default_rng(0).normal(1.0, 1.0, size=2000)
    e = mean_ci(v)
    assert e.ci_low < v.mean() < e.ci_high
    assert e.ci_high - e.ci_low == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.2)
