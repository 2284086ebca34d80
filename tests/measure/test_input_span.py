"""The input-span reduction: decoding inputs of D > n dimensions through their span's r <= n
coordinates gives the full-D decoder's per-sample errors, training error and reconstructions."""
import pytest
import torch

from phasescope.engine.measure.ridge import StreamingRidge
from phasescope.engine.measure.span import InputSpan


def _data(n=50, m=40, D=300, p=10, rank=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    if rank is None:
        X = torch.randn(n + m, D, generator=g, dtype=torch.float64)
    else:  # every input in a rank-dimensional affine subspace (fit inputs rank-deficient)
        X = torch.randn(n + m, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, D, generator=g,
                                                                                     dtype=torch.float64) + 0.3
    A = torch.randn(D, p, generator=g, dtype=torch.float64) / D ** 0.5
    H = torch.tanh(X @ A) + 0.1 * torch.randn(n + m, p, generator=g, dtype=torch.float64)
    return X[:n], H[:n], X[n:], H[n:]


def _fit(ridge, H, targets, dtype, spans=None, batch=16):
    s = StreamingRidge(ridge, dtype=dtype, spans=spans)
    for i in range(0, len(H), batch):
        s.partial_fit(H[i:i + batch], {k: T[i:i + batch] for k, T in targets.items()})
    return s.solve()


@pytest.mark.parametrize("rank", [None, 7], ids=["full-rank", "rank-deficient"])
@pytest.mark.parametrize("ridge", [0.1, 1e-3, "auto"])
def test_span_decoder_equals_the_full_decoder_in_float64(ridge, rank):
    Xf, Hf, Xt, Ht = _data(rank=rank)
    full = _fit(ridge, Hf, {"x": Xf}, torch.float64)
    span = InputSpan(Xf)
    assert span.rank == (49 if rank is None else rank)  # centred: one direction fewer than samples
    red = _fit(ridge, Hf, {"x": span.coords}, torch.float64, spans={"x": span})
    want = full.per_sample_mse(Ht, Xt, "x")
    torch.testing.assert_close(red.per_sample_mse(Ht, span.project(Xt), "x"), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(red.per_sample_mse(Ht, Xt, "x"), want, rtol=1e-6, atol=0)  # projected inside
    assert red.train_mse_["x"] == pytest.approx(full.train_mse_["x"], rel=1e-6)
    assert red.lams_["x"] == pytest.approx(full.lams_["x"], rel=1e-9)  # "auto": GCV chose the same ridge
    torch.testing.assert_close(red.predict(Ht, "x").double(), full.predict(Ht, "x").double(), rtol=0, atol=1e-5)
    for r in (0.0, 10.0, "auto"):  # further ridges from the same statistics (the ridge sweep's path)
        a, b = full.solution("x", r), red.solution("x", r)
        assert b.train_mse == pytest.approx(a.train_mse, rel=1e-6, abs=1e-12)
        torch.testing.assert_close(red.predict_with(Ht, b).double(), full.predict_with(Ht, a).double(),
                                   rtol=0, atol=1e-4)


def test_span_decoder_in_float32_products_within_1e_4():
    """The tracker's path: float32 per-batch products (as the full decoder's); they agree to 1e-4
    relative (both sides carry float32 rounding of the products)."""
    Xf, Hf, Xt, Ht = (t.float() for t in _data(n=200, m=60, D=900, p=20))
    full = _fit(0.1, Hf, {"x": Xf}, torch.float32, batch=64)
    span = InputSpan(Xf)
    red = _fit(0.1, Hf, {"x": span.coords.float()}, torch.float32, spans={"x": span}, batch=64)
    torch.testing.assert_close(red.per_sample_mse(Ht, span.project(Xt), "x"), full.per_sample_mse(Ht, Xt, "x"),
                               rtol=1e-4, atol=0)
    assert red.train_mse_["x"] == pytest.approx(full.train_mse_["x"], rel=1e-4)
    torch.testing.assert_close(red.predict(Ht, "x"), full.predict(Ht, "x"), rtol=0, atol=1e-4)


def test_projection_splits_every_input_exactly():
    Xf, _, Xt, _ = _data(n=30, D=120)
    span = InputSpan(Xf, chunk=50)  # several blocks
    P = span.project(Xt)
    back = span.lift(P.coords, mean=True).double()  # the part of x in the span, plus the mean
    torch.testing.assert_close((Xt - back).square().sum(1), P.residual, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(span.project(Xf).residual, torch.zeros(30, dtype=torch.float64), rtol=0, atol=1e-9)


def test_predict_lifts_rows_or_coefficients_alike():
    Xf, Hf, Xt, Ht = _data(n=50, m=40, D=300, p=10)
    full = _fit(0.1, Hf, {"x": Xf}, torch.float64)
    span = InputSpan(Xf)
    red = _fit(0.1, Hf, {"x": span.coords}, torch.float64, spans={"x": span})
    for rows in (slice(0, 5), slice(None)):  # 5 <= p rows: predictions lifted; 40 > p: coefficients lifted
        torch.testing.assert_close(red.predict(Ht[rows], "x").double(), full.predict(Ht[rows], "x").double(),
                                   rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- the tracker
def _images(n_fit=120, n_test=60, seed=0):
    """Digits upsampled to 16 x 16 (D = 256 > 120 fit samples): the span is used."""
    from phasescope.data import load_dataset

    d = load_dataset("digits")
    up = lambda x: torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return (up(d.x_train[:n_fit]), d.y_train[:n_fit]), (up(d.x_test[:n_test]), d.y_test[:n_test])


def _model():
    return _model_for((1, 16, 16))


def _model_for(shape):
    from phasescope.run.models import build_model

    torch.manual_seed(0)
    return build_model("cnn", tuple(shape), 10, width=0.5)


def _track(input_span, distributed=False, **kw):
    import warnings

    from phasescope import PhaseTracker
    from phasescope.extensions.reconstructions import Reconstructions

    fit, test = _images()
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # more features than fit samples: noted, not the point here
        t = PhaseTracker(model, ["features.2", "features.3"], fit, test, [0, 1], batch_size=50, bootstrap=50,
                         input_span=input_span, distributed=distributed, extensions=[Reconstructions()],
                         max_features=64, **kw)
        for it in (0, 1):
            t.measure(model, it)
    return t


def _same(a, b, rtol):
    import numpy as np
    import pandas as pd

    pd.testing.assert_frame_equal(a.results(), b.results(), check_exact=False, rtol=rtol, atol=1e-9)
    for n in a.layers:
        for it in a.errors[n]:
            np.testing.assert_allclose(a.errors[n][it], b.errors[n][it], rtol=rtol)
    ra, rb = (next(e for e in t.extensions if e.name == "reconstructions") for t in (a, b))
    assert len(ra.images) == 2 and len(ra.protos) == 2
    for x, y in zip(ra.images + ra.protos, rb.images + rb.protos):  # uint8 pixels: at most one level apart
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


@pytest.mark.parametrize("ridge", [0.1, "auto"])
def test_tracker_with_the_span_measures_what_it_measures_without(ridge):
    """float32 products on both sides: rows and per-sample errors agree to 1e-4 relative."""
    on = _track("auto", relative_ridge=ridge)
    assert on.span is not None and on.span.rank <= 119 and on.describe()["input_span_rank"] == on.span.rank
    off = _track("off", relative_ridge=ridge)
    assert off.span is None and "input_span_rank" not in off.describe()
    _same(on, off, rtol=1e-4)


def test_input_span_setting_is_checked():
    from phasescope.config import ConfigError, RunConfig

    with pytest.raises((ConfigError, ValueError), match="input_span"):
        _track("sometimes")
    assert RunConfig().input_span == "auto"
    with pytest.raises(ConfigError, match="input_span"):
        RunConfig(input_span="never").validate()


def test_two_ranks_with_the_span_measure_what_one_process_measures(tmp_path):
    from tests.test_distributed import ok, run_ranks

    one = _track("auto")
    for results, errors in ok(run_ranks(lambda rank: (lambda t: (t.results(), t.errors))(_track("auto", "auto")),
                                        tmp_path)):
        import numpy as np
        import pandas as pd

        pd.testing.assert_frame_equal(one.results(), results, check_exact=False, rtol=1e-5, atol=0)
        for n in one.layers:
            for it in one.errors[n]:
                np.testing.assert_allclose(errors[n][it], one.errors[n][it], rtol=1e-5)


# ---------------------------------------------------------------------- bounded memory
def test_blocks_bounded_in_bytes_give_the_same_span(monkeypatch):
    """Many fit samples: fewer input dimensions per float64 block (BLOCK_BYTES), the same span,
    projections and per-sample errors as one block; the caller's float64 inputs are never changed
    (blocks are centred in place, on copies)."""
    from phasescope.engine.measure import span as span_mod

    Xf, Hf, Xt, Ht = _data(n=60, m=30, D=700, p=8)
    keep_f, keep_t = Xf.clone(), Xt.clone()
    one = InputSpan(Xf)
    assert one.chunk >= 700  # one block
    monkeypatch.setattr(span_mod, "BLOCK_BYTES", 60 * 8 * 256)  # 256 dimensions per block of 60 rows
    many = InputSpan(Xf)
    assert many.chunk == 256
    assert torch.equal(Xf, keep_f)
    torch.testing.assert_close(many.sigma, one.sigma, rtol=1e-10, atol=0)
    Pm, Po = many.project(Xt), one.project(Xt)
    assert torch.equal(Xt, keep_t)
    torch.testing.assert_close(Pm.residual, Po.residual, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(Pm.coords.abs(), Po.coords.abs(), rtol=1e-8, atol=1e-9)  # eigenvector signs may flip
    full = _fit(0.1, Hf, {"x": Xf}, torch.float64)
    red = _fit(0.1, Hf, {"x": many.coords}, torch.float64, spans={"x": many})
    torch.testing.assert_close(red.per_sample_mse(Ht, Pm, "x"), full.per_sample_mse(Ht, Xt, "x"), rtol=1e-6, atol=0)
    torch.testing.assert_close(red.predict(Ht, "x").double(), full.predict(Ht, "x").double(), rtol=0, atol=1e-5)


def test_project_blocks_fit_the_byte_bound(monkeypatch):
    """Projecting more rows than the fit set: the block width is bounded for both (same residuals)."""
    from phasescope.engine.measure import span as span_mod

    Xf, _, Xt, _ = _data(n=20, m=80, D=600)
    want = InputSpan(Xf).project(Xt)
    monkeypatch.setattr(span_mod, "BLOCK_BYTES", 80 * 8 * 300)  # 20 fit rows: one block; 80 projected rows: 300 wide
    s = InputSpan(Xf)
    got = s.project(Xt)
    torch.testing.assert_close(got.residual, want.residual, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.coords.square().sum(1), want.coords.square().sum(1), rtol=1e-9, atol=1e-9)


def test_capped_batches_are_accumulated_in_groups_of_measure_batch_size(monkeypatch):
    """Large inputs are forwarded a few rows at a time (memory); their span coordinates are narrow,
    so the decoder's statistics are accumulated over groups of up to measure_batch_size rows: the
    same values as uncapped batches, with a fraction of the float64 accumulations."""
    from phasescope.engine import tracker as tracker_mod
    from phasescope.engine.measure.ridge import StreamingRidge

    calls = []
    real = StreamingRidge.partial_fit
    monkeypatch.setattr(StreamingRidge, "partial_fit", lambda self, H, T: (calls.append(len(H)), real(self, H, T))[1])
    plain = _track("auto")
    plain_calls, calls[:] = sorted(calls), []
    assert set(plain_calls) == {50, 20}  # batch_size=50, 120 fit samples: 50 + 50 + 20 per layer and checkpoint
    fit, _ = _images()
    monkeypatch.setattr(tracker_mod, "BATCH_INPUT_BYTES", 10 * fit[0][0].numel() * 4)  # 10 rows of input
    capped = _track("auto")
    assert capped.batch_size == 10
    assert sorted(calls) == plain_calls  # 10-row forward batches, accumulated 50 rows at a time
    _same(plain, capped, rtol=1e-5)


@pytest.mark.parametrize("parts", [2, 3])
def test_a_span_formed_in_parts_is_the_span_of_one_process(monkeypatch, parts):
    """Ranks form their own row blocks of the Gram matrix (near-equal shares of the triangle) and
    sum them: the same Gram matrix, hence the same span, as one process."""
    from phasescope.engine.measure import span as span_mod

    monkeypatch.setattr(span_mod, "GRAM_ROWS", 7)
    Xf, _, Xt, _ = _data(n=60, m=30, D=700, p=8)
    blocks = [span_mod.gram_blocks(60, k, parts) for k in range(parts)]
    assert sorted(b for bs in blocks for b in bs) == span_mod.gram_blocks(60)  # each block formed once
    costs = [sum((b - a) * b for a, b in bs) for bs in blocks]  # row block (a, b): b - a rows of b columns
    assert max(costs) <= 1.35 * min(costs)
    grams = []
    for k in range(1, parts):  # the other ranks' parts, then rank 0's completed by their sum
        InputSpan(Xf, part=(k, parts), all_reduce=lambda G: grams.append(G.clone()) or G)
    rank0 = InputSpan(Xf, part=(0, parts), all_reduce=lambda G: G + sum(grams))
    one = InputSpan(Xf)
    assert rank0.rank == one.rank
    torch.testing.assert_close(rank0.coords, one.coords, rtol=0, atol=1e-12)
    torch.testing.assert_close(rank0.project(Xt).coords, one.project(Xt).coords, rtol=0, atol=1e-12)


def test_a_rank_with_no_test_samples_shares_the_span_set_up(tmp_path):
    """Batches of 500 leave rank 1 no test sample of 30: it projects nothing, and both ranks still
    measure what one process measures (before, its empty projection raised and rank 0 waited)."""
    import pandas as pd

    from phasescope import PhaseTracker
    from phasescope.data import load_dataset
    from tests.test_distributed import ok, run_ranks

    d = load_dataset("digits")
    fit, test = (d.x_train[:40], d.y_train[:40]), (d.x_test[:30], d.y_test[:30])  # 64 values > 40 fit samples
    model = _model_for(d.x_train.shape[1:])

    def measured(distributed):
        t = PhaseTracker(model, ["features.3"], fit, test, [0], distributed=distributed, batch_size=500, bootstrap=50)
        t.measure(model, 0)
        assert t._span is not None
        return t.results()

    one = measured(False)
    for results in ok(run_ranks(lambda rank: measured("auto"), tmp_path)):
        pd.testing.assert_frame_equal(one, results, check_exact=False, rtol=1e-5, atol=0)


def test_the_span_of_many_row_blocks_has_the_singular_values_of_the_inputs(monkeypatch):
    """Row blocks of 7 (the lower triangle formed block by block) against an independent SVD."""
    from phasescope.engine.measure import span as span_mod

    monkeypatch.setattr(span_mod, "GRAM_ROWS", 7)
    Xf, _, Xt, _ = _data(n=60, m=30, D=700, p=8)
    sp = InputSpan(Xf)
    want = torch.linalg.svdvals(Xf - Xf.mean(0))
    torch.testing.assert_close(sp.sigma, want[:sp.rank], rtol=1e-10, atol=0)
    proj = sp.project(Xt)
    Xc = Xt - Xf.mean(0)
    torch.testing.assert_close(proj.coords.square().sum(1) + proj.residual, Xc.square().sum(1), rtol=1e-10, atol=0)
    empty = sp.project(Xt[:0])
    assert empty.coords.shape == (0, sp.rank) and empty.residual.shape == (0,)
