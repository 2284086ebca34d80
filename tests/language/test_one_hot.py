"""The token target: index-added statistics equal the dense products, and the one-hot decoder's
per-sample errors and token recovery equal a dense ridge solution on a small vocabulary."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.engine.measure.ridge import OneHot, StreamingRidge
from phasescope.engine.measure.targets import one_hot_errors

VOCAB = 7


def data(n: int, p: int = 10, k: int = 1, seed: int = 0):
    embed = torch.randn(VOCAB, p, generator=torch.Generator().manual_seed(99))  # the same for every sample
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, k), generator=g)
    # features that carry the last token (so the decoder recovers some) plus noise
    H = embed[tokens[:, -1]] + 0.7 * torch.randn(n, p, generator=g)
    return H, tokens


def fitted(H, target, batch: int = 37, dtype=torch.float64) -> StreamingRidge:
    s = StreamingRidge(0.1, dtype=dtype)
    for i in range(0, len(H), batch):
        t = OneHot(target.index[i : i + batch], target.num_classes) if isinstance(target, OneHot) else target[i : i + batch]
        s.partial_fit(H[i : i + batch], {"x": t})
    return s.solve()


@pytest.mark.parametrize("k", [1, 3])
def test_index_add_accumulation_equals_the_dense_products(k):
    H, tokens = data(200, k=k)
    sparse = fitted(H, OneHot(tokens, VOCAB))
    dense = OneHot(tokens, VOCAB).dense().double()
    assert dense.shape == (200, k * VOCAB) and torch.equal(dense.sum(1), torch.full((200,), float(k), dtype=torch.float64))
    Hc = H.double() - sparse._shift_h.double()  # the accumulator's shifted features
    assert torch.allclose(sparse._s_ht["x"], Hc.T @ dense, atol=1e-9)  # H^T X by index-adding
    assert torch.allclose(sparse._s_t["x"], dense.sum(0)) and torch.allclose(sparse._s_tt["x"], (dense ** 2).sum(0))
    reference = fitted(H, dense)  # the same solver fed the dense one-hot
    assert torch.allclose(sparse.coef_["x"], reference.coef_["x"], atol=1e-9)
    assert torch.allclose(sparse.intercept_["x"], reference.intercept_["x"], atol=1e-9)
    assert sparse.train_mse_["x"] == pytest.approx(reference.train_mse_["x"], rel=1e-9)


def dense_ridge(H: np.ndarray, X: np.ndarray, ridge: float):
    """Ridge with a bias, solved directly: W = (Hc^T Hc + lam I)^-1 Hc^T Xc, lam = ridge * tr(Hc^T Hc) / p."""
    mh, mx = H.mean(0), X.mean(0)
    Hc, Xc = H - mh, X - mx
    C = Hc.T @ Hc
    lam = ridge * np.trace(C) / C.shape[0]
    W = np.linalg.solve(C + lam * np.eye(C.shape[0]), Hc.T @ Xc)
    return W, mx - mh @ W


@pytest.mark.parametrize("k", [1, 2])
def test_one_hot_decoder_equals_the_dense_ridge_solution(k):
    H, tokens = data(300, k=k)
    H_test, tokens_test = data(120, k=k, seed=1)
    solver = fitted(H, OneHot(tokens, VOCAB))
    err, recovered = one_hot_errors(solver, H_test.double(), OneHot(tokens_test, VOCAB), "x")
    W, b = dense_ridge(H.double().numpy(), OneHot(tokens, VOCAB).dense().double().numpy(), 0.1)
    pred = H_test.double().numpy() @ W + b
    X_test = OneHot(tokens_test, VOCAB).dense().double().numpy()
    assert np.allclose(err.numpy(), ((pred - X_test) ** 2).mean(1), atol=1e-6)  # over the k * vocab entries
    argmax = pred.reshape(len(pred), k, VOCAB).argmax(2)
    assert np.array_equal(recovered.numpy(), (argmax == tokens_test.numpy()).mean(1))
    assert 0.3 < recovered.mean() < 1  # a real test: the features carry some tokens, not all


def test_errors_are_scored_in_chunks_with_the_same_result(monkeypatch):
    from phasescope.engine.measure import targets

    H, tokens = data(100)
    solver = fitted(H, OneHot(tokens, VOCAB))
    whole = one_hot_errors(solver, H, OneHot(tokens, VOCAB), "x")
    monkeypatch.setattr(targets, "CHUNK_ENTRIES", 3 * VOCAB)  # three rows at a time
    chunked = one_hot_errors(solver, H, OneHot(tokens, VOCAB), "x")
    assert all(torch.allclose(a, b) for a, b in zip(whole, chunked))


def test_the_tracker_never_forms_a_dense_one_hot_of_tokens(monkeypatch):
    """Token inputs: decoder and probe targets are index-added; a vocabulary of 50,000 would not fit."""
    from phasescope import PhaseTracker
    from phasescope.run.gpt import gpt

    torch.manual_seed(0)
    model = gpt((8,), VOCAB, width=0.25)
    x, y = torch.randint(0, VOCAB, (120, 8)), torch.randint(0, VOCAB, (120,))

    def refuse(*a, **k):
        raise AssertionError("a dense one-hot was formed")

    monkeypatch.setattr(torch.nn.functional, "one_hot", refuse)
    monkeypatch.setattr(OneHot, "dense", refuse)
    monkeypatch.setattr(np, "eye", refuse)  # nor of the probe's labels (next tokens)
    t = PhaseTracker(model, ["blocks.1"], (x[:80], y[:80]), (x[80:], y[80:]), schedule=[0], target="tokens",
                     bootstrap=20)
    t.measure(model, 0)
    got = t.results().query("split == 'test'").set_index("metric").value
    assert {"reconstruction_mse", "token_recovery", "probe_accuracy"} <= set(got.index)


@pytest.mark.parametrize("window", [1, 3])
def test_tracker_rows_equal_a_dense_ridge_on_its_own_features(window):
    """End to end: the token rows of a checkpoint are the dense ridge decoder's on the features of the
    last position (errors averaged over the window's one-hots; recovery = the argmax is the token)."""
    from phasescope import PhaseTracker
    from phasescope.run.gpt import gpt

    torch.manual_seed(0)
    model = gpt((8,), VOCAB, width=0.25)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randint(0, VOCAB, (160, 8), generator=g), torch.randint(0, VOCAB, (160,), generator=g)
    t = PhaseTracker(model, ["blocks.0"], (x[:100], y[:100]), (x[100:], y[100:]), schedule=[0], target="tokens",
                     bootstrap=20, token_window=window)
    assert t.describe()["tokens"] == "last" and t.describe()["target"]["vocab_size"] == VOCAB
    assert t.describe()["target"]["token_window"] == window
    t.measure(model, 0)
    frozen = model.eval()
    _, fit = t.features(frozen, x[:100])
    _, test = t.features(frozen, x[100:])

    def one_hot(rows):  # the last `window` tokens side by side
        return np.concatenate([np.eye(VOCAB)[x[rows, j].numpy()] for j in range(8 - window, 8)], 1)

    W, b = dense_ridge(fit["blocks.0"].double().numpy(), one_hot(slice(0, 100)), 0.1)
    pred = test["blocks.0"].double().numpy() @ W + b
    err = ((pred - one_hot(slice(100, 160))) ** 2).mean(1)
    assert np.allclose(t.errors["blocks.0"][0], err, atol=1e-6)
    rows = t.results().query("split == 'test' and layer == 'blocks.0'").set_index("metric").value
    assert rows["reconstruction_mse"] == pytest.approx(err.mean(), abs=1e-6)
    hits = pred.reshape(60, window, VOCAB).argmax(2) == x[100:, 8 - window:].numpy()
    assert rows["token_recovery"] == pytest.approx(hits.mean())
    if window > 1:  # each position on its own: lag 0 (the last token) is the window-1 measurement
        per_lag = ((pred - one_hot(slice(100, 160))) ** 2).reshape(60, window, VOCAB).mean(2)
        for j in range(window):
            assert rows[f"token_recovery@lag={j}"] == pytest.approx(hits[:, -1 - j].mean())
            assert rows[f"reconstruction_mse@lag={j}"] == pytest.approx(per_lag[:, -1 - j].mean(), abs=1e-6)
    else:
        assert not any("@lag" in m for m in rows.index)


def test_token_inputs_are_checked_against_the_vocabulary():
    from phasescope import PhaseTracker
    from phasescope.run.gpt import gpt

    model = gpt((8,), VOCAB, width=0.25)
    x, y = torch.randint(0, VOCAB, (40, 8)), torch.randint(0, VOCAB, (40,))
    with pytest.raises(TypeError, match="integer token ids"):
        PhaseTracker(model, ["blocks.0"], (x.float(), y), (x, y), target="tokens")
    with pytest.raises(ValueError, match="vocabulary has 5 tokens"):
        PhaseTracker(model, ["blocks.0"], (x, y), (x, y), target="tokens", vocab_size=5)
    with pytest.raises(ValueError, match="shorter than the 9 tokens"):
        PhaseTracker(model, ["blocks.0"], (x, y), (x, y), target="tokens", token_window=9)
