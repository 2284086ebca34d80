import numpy as np
import pytest
import torch

from phasescope.engine.measure.ridge import NotFittedError, RidgeDecoder, StreamingRidge


def data(n=400, p=20, d=30, seed=0, offset=5.0):
    g = torch.Generator().manual_seed(seed)
    H = torch.randn(n, p, generator=g) + offset  # large offset: tests the shifted accumulation
    X = H @ torch.randn(p, d, generator=g) + 0.3 * torch.randn(n, d, generator=g) + 2.0
    return H, X


def closed_form(H, X, lam):
    Hc = H.double() - H.double().mean(0)
    Xc = X.double() - X.double().mean(0)
    W = torch.linalg.solve(Hc.T @ Hc + lam * torch.eye(H.shape[1], dtype=torch.float64), Hc.T @ Xc)
    b = X.double().mean(0) - H.double().mean(0) @ W
    return W, b


@pytest.mark.parametrize("batch", [7, 64, 400])
def test_streamed_solution_equals_closed_form_for_any_batching(batch):
    H, X = data()
    dec = RidgeDecoder(ridge=1e-3).fit(H, X, batch_size=batch)
    W, b = closed_form(H, X, dec.solver_.lam_)
    torch.testing.assert_close(dec.solver_.coef_["x"], W, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dec.solver_.intercept_["x"], b, rtol=1e-4, atol=1e-5)


def test_zero_ridge_equals_least_squares():
    H, X = data()
    dec = RidgeDecoder(ridge=0.0).fit(H, X)
    A = np.c_[H.double().numpy(), np.ones(len(H))]
    sol, *_ = np.linalg.lstsq(A, X.double().numpy(), rcond=None)
    np.testing.assert_allclose(dec.predict(H).numpy(), (A @ sol), rtol=1e-4, atol=1e-4)


def test_exact_training_error_matches_residuals():
    H, X = data()
    dec = RidgeDecoder().fit(H, X, batch_size=50)
    direct = float(((X - dec.predict(H)) ** 2).mean())
    assert dec.train_mse_ == pytest.approx(direct, rel=1e-4)
    assert float(dec.per_sample_error(H, X).mean()) == pytest.approx(direct, rel=1e-4)


def test_relative_ridge_is_invariant_to_feature_scale():
    H, X = data()
    a = RidgeDecoder(ridge=1e-2).fit(H, X).per_sample_error(H, X)
    b = RidgeDecoder(ridge=1e-2).fit(H * 1000, X).per_sample_error(H * 1000, X)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_several_targets_share_one_gram():
    H, X = data()
    Y = torch.nn.functional.one_hot(torch.arange(len(H)) % 3, 3).float()
    s = StreamingRidge(1e-3).partial_fit(H, {"x": X, "y": Y}).solve()
    alone = StreamingRidge(1e-3).partial_fit(H, {"y": Y}).solve()
    torch.testing.assert_close(s.coef_["y"], alone.coef_["y"])


def test_unfitted_and_unknown_target_errors():
    with pytest.raises(NotFittedError):
        RidgeDecoder().predict(torch.zeros(2, 3))
    H, X = data()
    s = StreamingRidge().partial_fit(H, {"x": X}).solve()
    with pytest.raises(KeyError, match="fitted targets"):
        s.predict(H, "y")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_raise_a_clear_error_never_reach_lstsq(bad):
    from phasescope.errors import NonFiniteInput

    H, X = data()
    H[17, 3] = bad
    with pytest.raises(NonFiniteInput, match="not\\s+finite"):
        RidgeDecoder(ridge=0.1).fit(H, X)
    with pytest.raises(NonFiniteInput):
        RidgeDecoder(ridge=0.0).fit(H, X)


def test_float32_overflow_of_the_products_is_caught():
    from phasescope.errors import NonFiniteInput

    H, X = data()
    H[5] = 1e30  # finite, but its square overflows float32
    with pytest.raises(NonFiniteInput):
        RidgeDecoder(ridge=0.1).fit(H, X)


def test_zero_ridge_with_collinear_features_is_the_minimum_norm_least_squares_solution():
    H, X = data(p=10)
    H = torch.cat([H, H[:, :4], 2 * H[:, :2]], 1)  # 6 exactly duplicated directions: rank 10 of 16
    dec = RidgeDecoder(ridge=0.0).fit(H, X)
    Hc = H.double() - H.double().mean(0)
    Xc = X.double() - X.double().mean(0)
    W = torch.linalg.pinv(Hc, rtol=1e-8) @ Xc  # minimum-norm least squares
    assert dec.solver_.rank_ == 10
    torch.testing.assert_close(dec.solver_.coef_["x"], W, rtol=1e-3, atol=1e-4)
    assert torch.isfinite(dec.predict(H)).all()


def test_constant_features_predict_the_mean():
    _, X = data()
    H = torch.full((len(X), 8), 3.0)  # dead layer: every feature constant
    for ridge in (0.0, 0.1):
        pred = RidgeDecoder(ridge=ridge).fit(H, X).predict(H)
        torch.testing.assert_close(pred, X.mean(0, keepdim=True).expand_as(X), rtol=1e-4, atol=1e-4)


def test_products_ignore_a_callers_reduced_precision_setting():
    H, X = data()
    ref = RidgeDecoder(ridge=0.1).fit(H, X).solver_.coef_["x"]
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = RidgeDecoder(ridge=0.1).fit(H, X).solver_.coef_["x"]
        assert torch.get_float32_matmul_precision() == "medium"  # the caller's setting is restored
    finally:
        torch.set_float32_matmul_precision(before)
    torch.testing.assert_close(got, ref)


def _explicit_gcv_and_loo(H, X, lam):
    """GCV from the explicit hat matrix, and leave-one-out error by refitting n times."""
    Hc = H.double() - H.double().mean(0)
    Xc = X.double() - X.double().mean(0)
    n, p = Hc.shape
    A = Hc.T @ Hc + lam * torch.eye(p, dtype=torch.float64)
    hat = Hc @ torch.linalg.solve(A, Hc.T) + 1.0 / n  # with the intercept
    resid = X.double() - (hat @ X.double())
    gcv = float((resid ** 2).sum() / n / (1 - torch.trace(hat) / n) ** 2)
    loo = 0.0
    for i in range(n):
        keep = torch.arange(n) != i
        Hi, Xi = H.double()[keep], X.double()[keep]
        mh, mx = Hi.mean(0), Xi.mean(0)
        W = torch.linalg.solve((Hi - mh).T @ (Hi - mh) + lam * torch.eye(p, dtype=torch.float64), (Hi - mh).T @ (Xi - mx))
        loo += float(((X.double()[i] - (mx + (H.double()[i] - mh) @ W)) ** 2).sum())
    return gcv, loo / n


def test_gcv_from_the_eigendecomposition_equals_the_hat_matrix_formula_and_tracks_leave_one_out():
    from phasescope.engine.measure.ridge import GCV_GRID, gcv_curve

    H, X = data(n=60, p=12, d=4, offset=0.0)
    X = X + 3.0 * torch.randn(60, 4, generator=torch.Generator().manual_seed(1))  # noisy targets: ridge matters
    s = StreamingRidge("auto").partial_fit(H, {"x": X}).solve()
    Hc = H.double() - H.double().mean(0)
    Xc = X.double() - X.double().mean(0)
    ev, V = torch.linalg.eigh(Hc.T @ Hc)
    b2 = (V.T @ (Hc.T @ Xc)).pow(2).sum(1)
    scale = float(ev.sum()) / 12
    lams = np.array([1e-3, 1e-1, 1.0, 10.0]) * scale
    gcv, dof = gcv_curve(ev, b2, float((Xc ** 2).sum()), 60, lams)
    explicit = [_explicit_gcv_and_loo(H, X, float(l)) for l in lams]
    np.testing.assert_allclose(gcv, [e[0] for e in explicit], rtol=1e-6)
    # The chosen ridge is near the brute-force leave-one-out optimum (within half a decade).
    grid = GCV_GRID[(GCV_GRID > 1e-3) & (GCV_GRID < 1e2)][::5]
    loo = [_explicit_gcv_and_loo(H, X, float(r * scale))[1] for r in grid]
    best_loo = grid[int(np.argmin(loo))]
    chosen = s.lams_["x"] / scale
    assert abs(np.log10(chosen) - np.log10(best_loo)) <= 0.5
    assert 0 < s.dof_["x"] < 12


def test_auto_ridge_is_a_valid_solution_for_every_target():
    H, X = data()
    s = StreamingRidge("auto").partial_fit(H, {"x": X, "y": X[:, :3] * 2}).solve()
    assert set(s.lams_) == {"x", "y"} and all(v > 0 for v in s.lams_.values())
    W, b = closed_form(H, X, s.lams_["x"])
    torch.testing.assert_close(s.coef_["x"], W, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="auto"):
        StreamingRidge("gcv")


def test_inverse_solve_equals_cholesky_solve_and_the_float64_per_sample_errors(monkeypatch):
    """Well-conditioned systems are solved through (C + lam I)^-1 (one product per target), others by
    cholesky_solve: the same solution; per-sample errors summed in float32 equal float64 sums."""
    import phasescope.engine.measure.ridge as ridge

    H, X = data(n=600, p=40, d=50)
    fast = RidgeDecoder(ridge=0.1).fit(H, X, batch_size=100)
    monkeypatch.setattr(ridge, "MAX_INVERSE_COND", 0.0)  # every system through cholesky_solve
    slow = RidgeDecoder(ridge=0.1).fit(H, X, batch_size=100)
    torch.testing.assert_close(fast.solver_.coef_["x"], slow.solver_.coef_["x"], rtol=1e-10, atol=1e-12)
    assert fast.train_mse_ == pytest.approx(slow.train_mse_, rel=1e-10)
    W, b = closed_form(H, X, fast.solver_.lam_)
    torch.testing.assert_close(fast.solver_.coef_["x"], W, rtol=1e-4, atol=1e-6)
    want = ((fast.predict(H).double() - X.double()) ** 2).mean(1)
    torch.testing.assert_close(fast.per_sample_error(H, X), want, rtol=1e-6, atol=0)
