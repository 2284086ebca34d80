"""Token targets with main's sharded measurement and input-span decoder: index-added statistics
summed over torch.distributed ranks equal one process's, a sharded tracker of a GPT measures what
one process measures (token_recovery and per-lag rows included), and the span never applies."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from phasescope import PhaseTracker
from phasescope.engine.measure.ridge import OneHot, StreamingRidge
from tests.test_distributed import ok, run_ranks

VOCAB = 7


def _tokens(n: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, k), generator=g)
    embed = torch.randn(VOCAB, 10, generator=torch.Generator().manual_seed(99))
    H = embed[tokens[:, -1]] + 0.7 * torch.randn(n, 10, generator=g) + 4  # far from zero: shifts matter
    return H, tokens


def test_one_hot_statistics_all_reduced_over_ranks_equal_one_process(tmp_path):
    H, tokens = _tokens(300, 2)
    y = tokens[:, 0]
    one = StreamingRidge(0.1, dtype=torch.float64)
    for i in range(0, 300, 50):
        one.partial_fit(H[i : i + 50], {"x": OneHot(tokens[i : i + 50], VOCAB), "y": OneHot(y[i : i + 50], VOCAB)})
    one.solve()
    shares = {0: slice(0, 100), 1: slice(100, 300), 2: slice(300, 300)}  # rank 2 sees nothing

    def fn(rank):
        s = StreamingRidge(0.1, dtype=torch.float64)
        rows = shares[rank]
        for i in range(rows.start, rows.stop, 50):
            s.partial_fit(H[i : i + 50], {"x": OneHot(tokens[i : i + 50], VOCAB), "y": OneHot(y[i : i + 50], VOCAB)})
        if s.n == 0:
            s.allocate(10, {"x": 2 * VOCAB, "y": VOCAB})
        s.all_reduce().solve()
        return s.n, {k: (s.coef_[k], s.intercept_[k], s.train_mse_[k]) for k in ("x", "y")}

    for n, sol in ok(run_ranks(fn, tmp_path, world=3)):
        assert n == 300
        for k, (coef, intercept, mse) in sol.items():
            torch.testing.assert_close(coef, one.coef_[k], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(intercept, one.intercept_[k], rtol=1e-10, atol=1e-12)
            assert mse == pytest.approx(one.train_mse_[k], rel=1e-10)


def test_a_one_hot_accumulated_around_a_given_shift_equals_the_dense_products():
    """allocate(shifts=...) as a sharded rank does: the index-added sums honour a non-zero shift."""
    H, tokens = _tokens(120, 1)
    target = OneHot(tokens, VOCAB)
    e = torch.linspace(0.1, 0.7, VOCAB, dtype=torch.float64)
    h0 = H[:30].mean(0).double()
    sparse = StreamingRidge(0.1, dtype=torch.float64).allocate(10, {"x": VOCAB}, shifts=(h0, {"x": e}))
    dense = StreamingRidge(0.1, dtype=torch.float64).allocate(10, {"x": VOCAB}, shifts=(h0, {"x": e}))
    for i in range(0, 120, 40):
        sparse.partial_fit(H[i : i + 40], {"x": OneHot(tokens[i : i + 40], VOCAB)})
        dense.partial_fit(H[i : i + 40], {"x": target.dense()[i : i + 40]})
    for a, b in zip(sparse._statistics(), dense._statistics()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-9)
    sparse.solve(), dense.solve()
    torch.testing.assert_close(sparse.coef_["x"], dense.coef_["x"], rtol=1e-9, atol=1e-10)


def _gpt_tracker(distributed, **kw):
    from phasescope.run.gpt import gpt

    torch.manual_seed(0)
    model = gpt((8,), VOCAB, width=0.25)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randint(0, VOCAB, (300, 8), generator=g), torch.randint(0, VOCAB, (300,), generator=g)
    t = PhaseTracker(model, ["blocks.0", "blocks.1"], (x[:200], y[:200]), (x[200:], y[200:]), schedule=[0, 1],
                     target="tokens", bootstrap=50, batch_size=64, distributed=distributed, **kw)
    for it in (0, 1):
        t.measure(model, it)
    return t


@pytest.mark.parametrize("kw", [dict(token_window=2), dict(probe="logistic", token_window=1)],
                         ids=["window2", "logistic"])
def test_two_ranks_measure_a_token_model_as_one_process(kw, tmp_path):
    """Fit shares 128/72 and test shares 64/36 (batches of 64): each rank index-adds its own windows."""
    one = _gpt_tracker(False, **kw)
    metrics = set(one.results().metric)
    assert "token_recovery" in metrics and ("token_recovery@lag=1" in metrics) == (kw["token_window"] == 2)

    def fn(rank):
        t = _gpt_tracker("auto", **kw)
        return t.results(), t.errors

    for results, errors in ok(run_ranks(fn, tmp_path)):
        pd.testing.assert_frame_equal(one.results(), results, check_exact=False, rtol=1e-5, atol=0)
        for n in one.layers:
            for it in one.errors[n]:
                np.testing.assert_allclose(errors[n][it], one.errors[n][it], rtol=1e-5)


def test_the_input_span_never_applies_to_token_targets():
    """Windows of 64 tokens and 40 fit windows: inputs of more values than fit samples, which the
    span would take for images; token targets reconstruct the one-hot and record input_span off."""
    from phasescope.run.gpt import gpt

    torch.manual_seed(0)
    model = gpt((64,), VOCAB, width=0.25)
    x, y = torch.randint(0, VOCAB, (70, 64)), torch.randint(0, VOCAB, (70,))
    runs = {}
    for span in ("auto", "off"):
        t = PhaseTracker(model, ["blocks.0"], (x[:40], y[:40]), (x[40:], y[40:]), schedule=[0], target="tokens",
                         bootstrap=20, input_span=span)
        assert t.describe()["input_span"] == "off" and t._input_span() is None
        t.measure(model, 0)
        runs[span] = t.results()
    pd.testing.assert_frame_equal(runs["auto"], runs["off"])
    with pytest.raises(Exception, match="input_span"):
        PhaseTracker(model, ["blocks.0"], (x[:40], y[:40]), (x[40:], y[40:]), target="tokens", input_span="on")
