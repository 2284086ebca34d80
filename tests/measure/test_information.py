"""Information-plane estimators against exact and analytic values."""
import math

import numpy as np
import pytest
import torch

from phasescope.engine.measure.information import (
    bin_activations, binning_mi, conditional_entropy, discrete_entropy, discrete_mutual_information,
    gaussian_channel_mi, kde_mi, pattern_ids, reduce_units, relative_sigma, subsample)


def h2(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


# ---------------------------------------------------------------------- discrete, exact
def test_pattern_ids_equal_rows_equal_ids():
    codes = np.array([[1, 2], [3, 4], [1, 2], [1, 3], [3, 4]])
    ids = pattern_ids(codes)
    assert ids[0] == ids[2] and ids[1] == ids[4]
    assert len(set(ids.tolist())) == 3
    assert pattern_ids(np.array([5, 5, 7])).tolist() == [0, 0, 1]


def test_discrete_entropies_exact():
    x = np.repeat(np.arange(8), 3)  # uniform over 8 values
    assert discrete_entropy(x) == pytest.approx(3.0)
    assert discrete_entropy(x % 4) == pytest.approx(2.0)
    assert discrete_entropy(np.zeros(10)) == 0.0
    # deterministic functions: I(X; f(X)) = H(f(X))
    assert discrete_mutual_information(x, x % 4) == pytest.approx(2.0)
    # T = X mod 4 and Y = X // 4 are independent under the uniform X
    assert discrete_mutual_information(x % 4, x // 4) == pytest.approx(0.0, abs=1e-12)
    assert conditional_entropy(x, x // 4) == pytest.approx(2.0)


def test_discrete_mutual_information_of_a_known_joint_table():
    # joint counts [[3, 1], [1, 3]]: I = 1 - H2(0.75)
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    assert discrete_mutual_information(a, b) == pytest.approx(1 - h2(0.75), abs=1e-12)
    assert discrete_mutual_information(b, a) == pytest.approx(1 - h2(0.75), abs=1e-12)


def test_binning_mi_exact_on_discrete_layer():
    """A layer whose units take two values: with 2 bins the codes are the values, so
    I(X;T) = H(T) and I(T;Y) are the exact discrete quantities."""
    x = np.repeat(np.arange(8), 4)  # 32 distinct inputs would be the same; 8 patterns, 4 copies each
    bits = np.stack([(x >> k) & 1 for k in range(3)], 1).astype(float)  # T = the 3 bits of x
    y = x // 4  # the top bit
    r = binning_mi(bits, y, bins=2)
    assert r["mi_input"] == pytest.approx(3.0)
    assert r["mi_label"] == pytest.approx(1.0)  # Y is a function of T
    r = binning_mi(bits[:, :2], y, bins=2)  # the two low bits say nothing about the top one
    assert r["mi_input"] == pytest.approx(2.0)
    assert r["mi_label"] == pytest.approx(0.0, abs=1e-12)
    assert r["bins"] == 2 and r["mode"] == "equal" and r["patterns"] == 4


def test_equal_width_bins_over_observed_range():
    h = np.array([[0.0], [0.1], [0.5], [0.99], [1.0]])
    assert bin_activations(h, bins=2)[:, 0].tolist() == [0, 0, 1, 1, 1]
    assert bin_activations(h * 7 + 3, bins=2)[:, 0].tolist() == [0, 0, 1, 1, 1]  # range follows the data
    assert (bin_activations(np.ones((4, 3)), bins=30) == 0).all()  # constant layer: one bin
    # layer scope: one range for all units; unit scope: one per unit
    two = np.array([[0.0, 0.0], [1.0, 10.0]])
    assert bin_activations(two, bins=10, scope="layer")[1].tolist() == [1, 9]
    assert bin_activations(two, bins=10, scope="unit")[1].tolist() == [9, 9]


def test_quantile_bins_equal_mass_and_ties_share_a_bin():
    rng = np.random.default_rng(0)
    u = rng.exponential(size=(1000, 1))
    codes = bin_activations(u, bins=4, mode="quantile")[:, 0]
    np.testing.assert_allclose(np.bincount(codes) / 1000, 0.25, atol=0.01)
    relu = np.maximum(rng.standard_normal((1000, 1)), 0)  # half zeros
    c = bin_activations(relu, bins=10, mode="quantile")[:, 0]
    assert len(set(c[relu[:, 0] == 0].tolist())) == 1
    assert (np.bincount(c)[c[relu[:, 0] == 0][0]]) == (relu == 0).sum()


@pytest.mark.parametrize("mode,scope", [("equal", "layer"), ("equal", "unit"), ("quantile", "layer")])
def test_binned_mi_invariant_to_a_permutation_of_units(mode, scope):
    rng = np.random.default_rng(1)
    h = np.tanh(rng.standard_normal((400, 6)) * 2)
    y = rng.integers(0, 4, 400)
    perm = rng.permutation(6)
    a, b = binning_mi(h, y, bins=3, mode=mode, scope=scope), binning_mi(h[:, perm], y, bins=3, mode=mode, scope=scope)
    assert a["mi_input"] == pytest.approx(b["mi_input"], abs=1e-12)
    assert a["mi_label"] == pytest.approx(b["mi_label"], abs=1e-12)
    assert 0 < a["mi_input"] < math.log2(400)


def test_label_information_never_exceeds_label_entropy():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 300)
    hy = discrete_entropy(y)
    for h in (rng.standard_normal((300, 4)), np.eye(5)[y] * 10 + rng.standard_normal((300, 5)) * 0.01):
        for mode in ("equal", "quantile"):
            assert binning_mi(h, y, bins=10, mode=mode)["mi_label"] <= hy + 1e-12
        r = kde_mi(h, y)
        assert r["mi_label"] <= hy + 1e-9 and r["mi_label_lower"] <= hy + 1e-9
    # well separated classes and small noise: the label is fully recovered
    h = np.eye(5)[y] * 10 + rng.standard_normal((300, 5)) * 0.01
    assert kde_mi(h, y, sigma=0.1)["mi_label"] == pytest.approx(hy, abs=1e-5)
    assert binning_mi(h, y, bins=2)["mi_label"] == pytest.approx(hy, abs=1e-12)


def test_binning_saturates_at_log2_n_with_many_units():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 256)
    r = binning_mi(rng.standard_normal((256, 64)), y)
    assert r["mi_input"] == pytest.approx(8.0) and r["saturation"] == pytest.approx(1.0)
    assert r["mi_label"] == pytest.approx(discrete_entropy(y))


# ---------------------------------------------------------------------- KDE, analytic
@pytest.mark.parametrize("d", [1, 2])
def test_kde_bounds_sandwich_the_gaussian_channel(d):
    """X ~ N(0, I_d), T' = X + N(0, s2 I_d): I(X;T') = d/2 log2(1 + 1/s2). The pairwise
    bounds on the empirical mixture of 2000 points bracket it (sampling tolerance 0.05 bit),
    and the upper bound tightens relative to the truth as the noise shrinks (while the
    truth stays well below the log2 N ceiling)."""
    x = np.random.default_rng(4).standard_normal((2000, d))
    y = (x[:, 0] > 0).astype(int)
    gaps = []
    for s2 in (1.0, 0.25, 0.0625):
        r = kde_mi(x, y, sigma=math.sqrt(s2))
        true = gaussian_channel_mi(1.0, s2, d)
        assert r["mi_input_lower"] - 0.05 <= true <= r["mi_input"] + 0.05
        gaps.append(r["mi_input"] / true - 1)
        assert r["sigma_mode"] == "absolute" and r["sigma"] == pytest.approx(math.sqrt(s2))
    assert gaps[0] > gaps[1] > gaps[2] > 0


def test_kde_limits_and_ceiling():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 3))
    y = rng.integers(0, 3, 300)
    assert kde_mi(x, y, sigma=1e3)["mi_input"] == pytest.approx(0.0, abs=1e-3)
    r = kde_mi(x, y, sigma=1e-3)
    assert r["mi_input"] == pytest.approx(math.log2(300), abs=1e-6) and r["max_bits"] == pytest.approx(math.log2(300))
    assert kde_mi(np.ones((50, 4)), y[:50])["mi_input"] == 0.0  # constant layer


def test_kde_relative_noise_is_scale_invariant_and_blocks_do_not_matter():
    rng = np.random.default_rng(6)
    h = np.maximum(rng.standard_normal((500, 16)) + rng.integers(0, 4, (500, 1)), 0)
    y = rng.integers(0, 4, 500)
    a = kde_mi(h, y)
    b = kde_mi(h * 37.0, y)
    c = kde_mi(h, y, block=64)
    assert a["sigma"] == pytest.approx(relative_sigma(h, 0.1))
    for k in ("mi_input", "mi_label", "mi_input_lower", "mi_label_lower"):
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-4)
        assert a[k] == pytest.approx(c[k], rel=1e-5, abs=1e-5)
    assert a["mi_input_lower"] <= a["mi_input"]
    perm = rng.permutation(16)
    assert kde_mi(h[:, perm], y)["mi_input"] == pytest.approx(a["mi_input"], rel=1e-5)


def test_kde_is_deterministic_and_accepts_tensors():
    rng = np.random.default_rng(7)
    h = rng.standard_normal((200, 5)).astype(np.float32)
    y = rng.integers(0, 2, 200)
    assert kde_mi(h, y) == kde_mi(torch.from_numpy(h), torch.from_numpy(y))


def test_estimators_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="labels"):
        binning_mi(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        kde_mi(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="mode"):
        bin_activations(np.zeros((5, 2)), mode="kmeans")


# ---------------------------------------------------------------------- budgets
def test_reduce_units_pools_spatial_maps_then_subsets_channels():
    h = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4 * 8 * 8)
    out, info = reduce_units(h, 64, shape=(4, 8, 8))
    assert out.shape == (2, 64) and info["grid"] == 4 and info["kept"] == 64 and "average-pooled" in info["method"]
    ref = torch.nn.functional.adaptive_avg_pool2d(h.reshape(2, 4, 8, 8), 4).reshape(2, -1)
    assert torch.equal(out, ref)
    out, info = reduce_units(h, 3, shape=(4, 8, 8), seed=1, key="a")
    assert out.shape == (2, 3) and "random 3 of 4 channels" in info["method"]
    out2, _ = reduce_units(h, 3, shape=(4, 8, 8), seed=1, key="a")
    assert torch.equal(out, out2)  # seeded


def test_reduce_units_subsets_flat_layers_and_keeps_small_ones():
    h = torch.randn(10, 300)
    out, info = reduce_units(h, 256, seed=0, key="x")
    assert out.shape == (10, 256) and info["method"] == "random 256 of 300 units"
    cols = [int(torch.nonzero((h == out[:, [j]]).all(0))[0]) for j in range(256)]
    assert cols == sorted(cols) and len(set(cols)) == 256  # a subset of the original columns
    same, info = reduce_units(h, 512)
    assert torch.equal(same, h) and info["method"] == "none"
    assert torch.equal(reduce_units(h, None)[0], h)


def test_subsample_is_seeded_and_sorted():
    a = subsample(1000, 100, seed=3)
    assert len(a) == 100 and (np.diff(a) > 0).all() and np.array_equal(a, subsample(1000, 100, seed=3))
    assert not np.array_equal(a, subsample(1000, 100, seed=4))
    assert np.array_equal(subsample(50, 100), np.arange(50)) and np.array_equal(subsample(50, None), np.arange(50))
