"""The theory's predictions, asserted on seeded instances (docs/theory.md reports the full-size numbers).

A scaled-down instance keeps these tests fast: K=5, d=50, n=250 training and 250 test
samples, plain gradient descent with lr 0.1 for 1,024 steps (the dynamics depend on
lr * t, so this is lr 0.05 for 2,048 steps at half the cost), seeds 0, 1, 2, atypical
fractions 0, 0.05, 0.1, 0.2, 0.3 (random patterns). One sweep serves all predictions.
"""
from __future__ import annotations

import numpy as np
import pytest

from phasescope.theory import DataModel, Training, simulate
from phasescope.theory.sweep import run_sweep

BASE = DataModel(num_classes=5, dim=50, n_train=250, n_test=250, noise=1.0)
TRAIN = Training(iterations=1024, lr=0.1, precision="mixed")
FRACTIONS = [0.0, 0.05, 0.1, 0.2, 0.3]
SEEDS = [0, 1, 2]
NUMERICAL_NOISE = 1e-6  # mixed precision changes the curves by ~1e-9 (test_single_layer)


@pytest.fixture(scope="module")
def table():
    return run_sweep(BASE, TRAIN, "atypical_fraction", FRACTIONS, SEEDS, write=False, bootstrap=200).table


def test_1_with_atypical_samples_the_loss_falls_then_rises(table):
    for _, r in table[table.value >= 0.1].iterrows():
        assert r.decrease_significant and r.relative_decrease > 0.1
        assert r.increase_significant and r.relative_increase_ci_low > 0.03
        assert r.relative_increase_ci_low > 1000 * NUMERICAL_NOISE
        names = [p.split()[0] for p in r.phases.split(", ")]
        assert [p for p in names if p != "constant"] == ["decrease", "increase"], r.phases  # a broad bottom may be constant


def test_2_without_atypical_samples_there_is_no_increase(table):
    for _, r in table[table.value == 0].iterrows():
        assert r.decrease_significant and r.relative_decrease > 0.2
        assert not r.increase_significant
        assert r.relative_increase < 1e-3  # after its minimum the loss stays within 0.1%


def test_3_the_increase_grows_with_the_atypical_fraction(table):
    means = table.groupby("value")["relative_increase"].mean().loc[FRACTIONS].to_numpy()
    assert np.all(np.diff(means) > 0), means
    for s in SEEDS:  # and for every seed on its own
        per_seed = table[table.seed == s].set_index("value")["relative_increase"].loc[FRACTIONS].to_numpy()
        assert np.all(np.diff(per_seed) > 0), (s, per_seed)


def test_4_the_turn_comes_when_typical_samples_are_fit_and_atypical_ones_are_not(table):
    for _, r in table[table.value >= 0.1].iterrows():
        assert r.typical_loss_ratio < 0.15  # typical loss fell to under 15% of its start
        assert r.atypical_loss_ratio > 0.5  # the atypical loss is still above half of its start
        assert r.octaves_min_to_crossing <= 1  # the atypical gradient share passes 1/2 within a factor 2 of the minimum
        assert 0.35 < r.gradient_share_at_min < 0.65


def test_limit_large_atypical_fractions_shrink_the_increase_again(table):
    """Documented limit of prediction 3: once the atypical samples are not a few but most
    of the data, the increase falls again (docs/theory.md, 'Where the predictions fail')."""
    r = simulate(BASE.replace(atypical_fraction=0.7), TRAIN, seed=0, bootstrap=200)
    at_03 = table[(table.value == 0.3) & (table.seed == 0)].relative_increase.iloc[0]
    assert r.phases["logits"].relative_increase.value < 0.8 * at_03


def test_limit_large_initial_weights_delay_the_increase():
    """Documented limit of prediction 1: with large initial weights (init_scale 5) the
    decrease lasts through the whole run and no increase is seen."""
    r = simulate(BASE.replace(atypical_fraction=0.2), Training(iterations=1024, lr=0.1, init_scale=5.0,
                                                               precision="mixed"), seed=0, bootstrap=200)
    assert not r.phases["logits"].increase_significant
