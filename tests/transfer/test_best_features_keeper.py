"""BestFeaturesKeeper: the pure decision, and the hook on a scripted loss sequence."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from phasescope.transfer import BestFeaturesKeeper, Decision, decide

ITS = [0, 1, 2, 4, 8, 16, 32, 64]
# Flat, falls to a minimum at 16, then rises by ~30%: the three phases.
CURVE = [1.00, 1.00, 0.99, 0.90, 0.70, 0.60, 0.70, 0.80]


def scripted_errors(curve, n=400, noise=0.05, seed=0):
    """(K, n) per-sample errors with the given means: fixed per-sample offsets plus small noise."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(4.0, 0.25, size=n)  # per-sample difficulty, mean 1
    return np.stack([c * base + noise * rng.standard_normal(n) for c in curve])


def test_decide_marks_new_minima():
    E = scripted_errors(CURVE)
    for k in range(1, len(ITS) + 1):
        d = decide(ITS[:k], E[:k])
        assert d.new_best == (k - 1 == int(np.argmin(E[:k].mean(1))))
        assert not d.stop  # stop_on_increase is off
    assert decide(ITS[:6], E[:6]).best_iteration == 16 and decide(ITS, E).best_iteration == 16


def test_decide_stops_once_the_increase_is_significant():
    E = scripted_errors(CURVE)
    stops = [decide(ITS[:k], E[:k], stop_on_increase=True).stop for k in range(1, len(ITS) + 1)]
    first = stops.index(True)
    assert ITS[first] in (32, 64) and all(stops[first:])
    d = decide(ITS, E, stop_on_increase=True)
    assert d.reason.startswith("stop:") and "above the minimum at iteration 16" in d.reason


def test_decide_does_not_stop_on_noise_or_a_tiny_rise():
    flat = scripted_errors([1.0, 0.8, 0.7, 0.7005, 0.701], noise=0.05)
    assert not decide(ITS[:5], flat, stop_on_increase=True).stop


def test_decide_needs_a_decrease_before_the_increase_unless_told_otherwise():
    rising = scripted_errors([1.0, 1.0, 1.2, 1.4, 1.6])
    d = decide(ITS[:5], rising, stop_on_increase=True)
    assert not d.stop and "no significant decrease" in d.reason
    assert decide(ITS[:5], rising, stop_on_increase=True, require_decrease=False).stop


def test_decide_on_a_curve_of_means():
    d = decide(ITS, np.array(CURVE), stop_on_increase=True)
    assert d.stop and d.best_iteration == 16


class ScriptedTracker:
    """The part of PhaseTracker the keeper uses, replaying per-sample errors."""

    def __init__(self, its, errors, layer="features.3"):
        self.layers = [layer]
        self.script = dict(zip(its, errors))
        self.errors: dict[int, np.ndarray] = {}
        self.confidence, self.bootstrap, self.min_effect, self.seed = 0.95, 500, 0.02, 0

    def maybe_measure(self, model, it):
        if it in self.script and it not in self.errors:
            self.errors[it] = self.script[it]

    def error_matrix(self, layer):
        its = sorted(self.errors)
        return its, np.stack([self.errors[i] for i in its]) if its else np.zeros((0, 400))


def net_at(it: int) -> nn.Module:
    torch.manual_seed(it)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def run_scripted(keeper, model, last=64):
    decisions = {}
    for it in range(last + 1):
        model.load_state_dict(net_at(it).state_dict())  # "training" changes every weight each step
        with torch.no_grad():
            model[1].running_mean.fill_(float(it))  # and the buffers
        decisions[it] = keeper.update(model, it)
        if decisions[it].stop:
            break
    return decisions


def test_keeper_keeps_the_weights_at_the_minimum_and_restores_them_exactly():
    tracker = ScriptedTracker(ITS, scripted_errors(CURVE))
    keeper = BestFeaturesKeeper(tracker)
    model = net_at(0)
    decisions = run_scripted(keeper, model)
    assert keeper.best_iteration == 16 and not any(d.stop for d in decisions.values())
    assert decisions[16].new_best and not decisions[32].new_best
    assert decisions[17] is decisions[16]  # iterations without a measurement repeat the last decision
    keeper.restore(model)
    expected = net_at(16).state_dict()
    for k, v in model.state_dict().items():
        if k == "1.running_mean":
            assert torch.equal(v, torch.full_like(v, 16.0))
        else:
            assert torch.equal(v, expected[k]), k


def test_keeper_copy_is_not_aliased_to_the_live_weights():
    tracker = ScriptedTracker(ITS, scripted_errors(CURVE))
    keeper = BestFeaturesKeeper(tracker)
    model = net_at(0)
    keeper.update(model, 0)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    keeper.restore(model)
    assert torch.equal(model[0].weight, net_at(0)[0].weight)


def test_keeper_stops_and_keeps_the_minimum():
    tracker = ScriptedTracker(ITS, scripted_errors(CURVE))
    keeper = BestFeaturesKeeper(tracker, "features.3", stop_on_increase=True)
    decisions = run_scripted(keeper, net_at(0))
    last = max(decisions)
    assert decisions[last].stop and last in (32, 64) and keeper.best_iteration == 16


def test_keeper_state_dict_round_trip():
    tracker = ScriptedTracker(ITS, scripted_errors(CURVE))
    keeper = BestFeaturesKeeper(tracker, stop_on_increase=True)
    run_scripted(keeper, net_at(0), last=20)
    state = keeper.state_dict()
    other = BestFeaturesKeeper(tracker, stop_on_increase=True)
    other.load_state_dict(state)
    assert other.best_iteration == 16 and other.last_iteration == 16 and other.decision == keeper.decision
    a, b = net_at(1), net_at(2)
    keeper.restore(a)
    other.restore(b)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    # Resumed keepers go on identically.
    m1, m2 = net_at(0), net_at(0)
    for it in range(21, 65):
        for m in (m1, m2):
            m.load_state_dict(net_at(it).state_dict())
        d1, d2 = keeper.update(m1, it), other.update(m2, it)
        assert d1 == d2


def test_keeper_errors():
    tracker = ScriptedTracker(ITS, scripted_errors(CURVE))
    with pytest.raises(ValueError, match="not tracked; choose one of: features.3"):
        BestFeaturesKeeper(tracker, "features.9")
    with pytest.raises(RuntimeError, match="kept no weights yet"):
        BestFeaturesKeeper(tracker).restore(net_at(0))
    assert isinstance(BestFeaturesKeeper(tracker).update(net_at(0), 3), Decision)
