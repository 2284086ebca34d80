"""Closed forms and invariants of the single-layer measurements, and the training loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.theory import DataModel, LinearReconstruction, Training, gradient_shares, simulate
from phasescope.theory.single_layer import _descend, cross_entropy, softmax


def _problem(seed=0, n=120, d=15, K=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))  # correlated inputs
    W, b = rng.standard_normal((K, d)), rng.standard_normal(K)
    y = rng.integers(0, K, n)
    return X, y, W, b


def test_reconstruction_equals_brute_force_least_squares():
    X, _, W, b = _problem()
    Xt, _, _, _ = _problem(seed=1)
    Z, Zt = X @ W.T + b, Xt @ W.T + b
    A = np.hstack([Z, np.ones((len(Z), 1))])
    coef, *_ = np.linalg.lstsq(A, X, rcond=None)
    dec = LinearReconstruction().fit(Z, X)
    np.testing.assert_allclose(dec.per_sample_error(Z, X), ((X - A @ coef) ** 2).mean(1), rtol=1e-9)
    At = np.hstack([Zt, np.ones((len(Zt), 1))])
    np.testing.assert_allclose(dec.per_sample_error(Zt, Xt), ((Xt - At @ coef) ** 2).mean(1), rtol=1e-9)
    assert dec.rank_ == 4


@pytest.mark.parametrize("transform", ["scale_down", "scale_up", "mix"])
def test_reconstruction_is_invariant_to_invertible_maps_of_the_outputs(transform):
    X, _, W, b = _problem()
    Xt, _, _, _ = _problem(seed=1)
    Z, Zt = X @ W.T + b, Xt @ W.T + b
    M = {"scale_down": 1e-6 * np.eye(4), "scale_up": 1e6 * np.eye(4),
         "mix": np.random.default_rng(2).standard_normal((4, 4))}[transform]
    ref = LinearReconstruction().fit(Z, X)
    new = LinearReconstruction().fit(Z @ M + 3.0, X)
    np.testing.assert_allclose(new.per_sample_error(Z @ M + 3.0, X), ref.per_sample_error(Z, X), rtol=1e-8)
    np.testing.assert_allclose(new.per_sample_error(Zt @ M + 3.0, Xt), ref.per_sample_error(Zt, Xt), rtol=1e-8)


def test_reconstruction_from_softmax_handles_the_lost_rank():
    X, _, W, b = _problem()
    P = softmax(X @ W.T + b)  # rows sum to one: centred rank K-1
    dec = LinearReconstruction().fit(P, X)
    assert dec.rank_ == 3
    A = np.hstack([P[:, :-1], np.ones((len(P), 1))])  # dropping one column loses nothing
    coef, *_ = np.linalg.lstsq(A, X, rcond=None)
    np.testing.assert_allclose(dec.per_sample_error(P, X), ((X - A @ coef) ** 2).mean(1), rtol=1e-8)


def test_reconstruction_is_bounded_by_pca():
    X, _, W, b = _problem()
    err = LinearReconstruction().fit(X @ W.T + b, X).per_sample_error(X @ W.T + b, X).mean()
    ev = np.linalg.eigvalsh(np.cov(X.T, bias=True))  # ascending
    assert err >= ev[:-4].sum() / X.shape[1] - 1e-12  # Eckart-Young: K outputs keep at most the top K
    Vk = np.linalg.eigh(np.cov(X.T, bias=True))[1][:, -4:]
    pca = LinearReconstruction().fit(X @ Vk, X).per_sample_error(X @ Vk, X).mean()
    assert pca == pytest.approx(ev[:-4].sum() / X.shape[1], rel=1e-9)


def _per_sample_grads(X, y, W, b):
    """(n, K*d + K) per-sample gradients of the cross-entropy, one autograd call per sample."""
    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    rows = []
    for x, t in zip(torch.tensor(X), torch.tensor(y)):
        loss = torch.nn.functional.cross_entropy((x @ Wt.T + bt)[None], t[None])
        gW, gb = torch.autograd.grad(loss, (Wt, bt))
        rows.append(torch.cat([gW.flatten(), gb]))
    return torch.stack(rows).numpy()


def test_gradient_shares_equal_per_sample_autograd_gradients():
    X, y, W, b = _problem(n=60)
    atyp = np.zeros(len(y), bool)
    atyp[::7] = True
    g = _per_sample_grads(X, y, W, b)
    n = len(y)
    GA, GT = g[atyp].sum(0) / n, g[~atyp].sum(0) / n
    norms = np.linalg.norm(g, axis=1)
    got = gradient_shares(X, y, W, b, atyp)
    assert got["gradient_share_atypical"] == pytest.approx(np.linalg.norm(GA) / (np.linalg.norm(GA) + np.linalg.norm(GT)), rel=1e-9)
    assert got["gradient_share_atypical_per_sample"] == pytest.approx(norms[atyp].sum() / norms.sum(), rel=1e-9)
    assert got["gradient_norm"] == pytest.approx(np.linalg.norm(g.mean(0)), rel=1e-9)


def test_cross_entropy_matches_torch():
    X, y, W, b = _problem()
    Z = X @ W.T + b
    ref = torch.nn.functional.cross_entropy(torch.tensor(Z), torch.tensor(y), reduction="none").numpy()
    np.testing.assert_allclose(cross_entropy(Z, y), ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("precision, tol", [("float64", 1e-10), ("mixed", 1e-5)])
def test_full_batch_descent_equals_autograd_descent(precision, tol):
    X, y, W, b = _problem(n=80)
    X = X / X.std()
    W, b = 0.1 * W, 0.1 * b
    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    ref = {}
    for t in range(21):  # plain gradient descent with autograd (torch.optim.SGD without momentum)
        ref[t] = (Wt.detach().numpy().copy(), bt.detach().numpy().copy())
        loss = torch.nn.functional.cross_entropy(torch.tensor(X) @ Wt.T + bt, torch.tensor(y))
        gW, gb = torch.autograd.grad(loss, (Wt, bt))
        with torch.no_grad():
            Wt -= 0.3 * gW
            bt -= 0.3 * gb
    got = {}
    _descend(X, y, W, b, Training(iterations=20, lr=0.3, precision=precision), [0, 5, 20], 0,
             lambda t, W_, b_: got.__setitem__(t, (W_, b_)))
    for t in (0, 5, 20):
        np.testing.assert_allclose(got[t][0], ref[t][0], rtol=tol, atol=tol)
        np.testing.assert_allclose(got[t][1], ref[t][1], rtol=tol, atol=tol)


def test_mini_batches_are_seeded_and_differ_from_full_batch():
    dm = DataModel(num_classes=3, dim=20, n_train=90, n_test=60)
    tr = Training(iterations=64, lr=0.1, batch_size=16)
    a, b = simulate(dm, tr, seed=0, bootstrap=20), simulate(dm, tr, seed=0, bootstrap=20)
    pd_equal = a.metrics.equals(b.metrics)
    assert pd_equal
    full = simulate(dm, Training(iterations=64, lr=0.1), seed=0, bootstrap=20)
    assert not np.allclose(full.curve("weight_norm").values, a.curve("weight_norm").values)


def test_simulate_reports_every_metric_on_the_schedule():
    dm = DataModel(num_classes=3, dim=20, n_train=90, n_test=60, atypical_fraction=0.2)
    r = simulate(dm, Training(iterations=32, lr=0.1), seed=0, bootstrap=50)
    assert r.iterations == [0, 1, 2, 4, 8, 16, 32]
    assert set(r.errors) == {"logits", "softmax"} and r.errors["logits"].shape == (7, 60)
    for metric in ("loss_typical", "loss_atypical", "accuracy_typical", "accuracy_atypical", "gradient_share_atypical",
                   "prototype_angle", "prototype_angle_class2"):
        assert len(r.curve(metric)) == 7
    te = r.metrics[(r.metrics.layer == "logits") & (r.metrics.split == "test") & (r.metrics.metric == "reconstruction_mse")]
    assert (te.ci_low <= te.value).all() and (te.value <= te.ci_high).all()
    np.testing.assert_allclose(te.value, r.errors["logits"].mean(1))
    with pytest.raises(KeyError, match="available"):
        r.curve("nope")


def test_divergence_is_reported():
    dm = DataModel(num_classes=3, dim=20, n_train=90, n_test=60)
    with pytest.raises(FloatingPointError, match="smaller lr"):
        simulate(dm, Training(iterations=64, lr=1e6), seed=0, bootstrap=20)


def test_the_decoder_is_the_shared_ridge_solver_with_ridge_0_auto_or_a_number():
    from phasescope.engine.measure.ridge import StreamingRidge

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20))
    Z = X[:, :4] @ rng.standard_normal((4, 5)) + 0.5 * rng.standard_normal((300, 5))
    exact = LinearReconstruction().fit(Z, X)
    assert exact.lam_ == 0 and exact.dof_ == pytest.approx(5) and exact.rank_ == 5
    auto = LinearReconstruction("auto").fit(Z, X)
    ref = StreamingRidge("auto", dtype=torch.float64).partial_fit(torch.from_numpy(Z), {"x": torch.from_numpy(X)}).solve()
    np.testing.assert_allclose(auto.coef_, ref.coef_["x"].numpy(), rtol=1e-10, atol=1e-12)
    assert auto.lam_ == pytest.approx(ref.lams_["x"]) and 0 < auto.dof_ <= 5
    strong = LinearReconstruction(10.0).fit(Z, X)
    assert strong.dof_ < auto.dof_ + 1e-9 and strong.train_mse_ >= exact.train_mse_
    with pytest.raises(ValueError, match="auto"):
        Training(decoder_ridge="gcv").validate()
