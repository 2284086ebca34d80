"""Phase detection on the steps a training run happened to save: any increasing set works."""
import numpy as np
import pytest

from phasescope.engine.phases import detect_phases

# log-spaced early, then every 1000 steps: what a loop saving at 2^k and every 1000 writes
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]


def curve(steps, low_at=256, n=400, seed=0):
    """Per-sample errors: flat to step 4, falling to a minimum at ``low_at``, rising after (log time)."""
    rng = np.random.default_rng(seed)
    t = np.log2(np.asarray(steps, dtype=float) + 1)
    lo, flat = np.log2(low_at + 1), np.log2(5)
    mean = np.where(t <= flat, 1.0, np.where(t <= lo, 1.0 - 0.4 * (t - flat) / (lo - flat), 0.6 + 0.08 * (t - lo)))
    return mean[:, None] * (1 + 0.05 * rng.standard_normal((len(steps), n)))


def test_irregular_steps_give_the_phases_at_those_steps():
    r = detect_phases(STEPS, curve(STEPS), n_boot=300)
    assert r.names() == ["constant", "decrease", "increase"]
    assert r.min_iteration == 256 and r.decrease_significant and r.increase_significant
    assert [(p.name, p.start, p.end) for p in r.phases] == [("constant", 0, 4), ("decrease", 4, 256),
                                                             ("increase", 256, 3000)]


def test_sparse_linear_saves_lose_the_early_phases():
    """Saved every 1000 steps only: the same training shows no early constant phase (it lies
    between 0 and 1000) and the minimum moves to the first save after it."""
    steps = [0, 1000, 2000, 3000]
    r = detect_phases(steps, curve(steps), n_boot=300)
    assert [(p.name, p.start, p.end) for p in r.phases] == [("decrease", 0, 1000), ("increase", 1000, 3000)]
    assert r.min_iteration == 1000


def test_steps_must_increase():
    with pytest.raises(ValueError, match="strictly increasing"):
        detect_phases([0, 2, 2], np.ones((3, 5)))
