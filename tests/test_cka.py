"""Linear CKA over training (phasescope.extensions.cka): the estimator against a direct numpy
implementation (Kornblith et al.'s unbiased centring), its invariances, its resamples, and a
seconds-long run on scikit-learn's 8x8 digits (rows, figure, report section, summary, resume)."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.extensions.cka import LinearCKA, cka
from phasescope.engine.stats import Bootstrap

runner = CliRunner()
TINY = ["--dataset", "digits", "--iterations", "8", "--fit-samples", "200", "--test-samples", "100",
        "--bootstrap", "50", "--no-samples", "--no-reconstructions"]


# ---------------------------------------------------------------------- a direct implementation
def centred_unbiased(gram: np.ndarray) -> np.ndarray:
    """Kornblith et al.'s center_gram(unbiased=True): zero diagonal, U-centring, zero diagonal."""
    g = np.array(gram, dtype=np.float64)
    n = len(g)
    np.fill_diagonal(g, 0)
    means = g.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    g -= means[:, None]
    g -= means[None, :]
    np.fill_diagonal(g, 0)
    return g


def direct_cka(K: np.ndarray, L: np.ndarray) -> float:
    k, l = centred_unbiased(K), centred_unbiased(L)
    return float((k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum()))


def linear(X):
    X = np.asarray(X, dtype=np.float64)
    return X @ X.T


def related(rng, n=80, p=6, q=9, noise=0.7):
    X = rng.normal(size=(n, p))
    return X, X @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q))


# ---------------------------------------------------------------------- the estimator
def test_matches_the_direct_unbiased_linear_cka_whole_and_in_row_blocks():
    rng = np.random.default_rng(0)
    X, Y = related(rng)
    Z = rng.normal(size=(80, 4)) + 3.0  # an offset: centring removes it
    want = [direct_cka(linear(X), linear(Y)), direct_cka(linear(X), linear(Z))]
    for block in (10 ** 9, 7 * 80, 80):  # whole Gram matrices, blocks of 7 rows, one row at a time
        est, res = cka(X, [Y, Z], block_elements=block)
        np.testing.assert_allclose(est, want, rtol=0, atol=1e-12)
        assert res.shape == (2, 0)


def test_orthogonal_transforms_and_isotropic_scaling_give_one():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))  # correlated features
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    est, _ = cka(X, [X @ Q, 3.7 * X, 0.01 * X @ Q, X])
    np.testing.assert_allclose(est, 1.0, rtol=0, atol=1e-6)


def test_independent_random_features_give_nearly_zero():
    rng = np.random.default_rng(2)
    est, _ = cka(rng.normal(size=(500, 20)), [rng.normal(size=(500, 20))])
    assert abs(est[0]) < 0.05


def test_constant_features_give_nan_not_an_error():
    rng = np.random.default_rng(3)
    est, res = cka(rng.normal(size=(30, 4)), [np.ones((30, 5))], Bootstrap(5, seed=0).weights(30) * 30)
    assert np.isnan(est[0]) and np.isnan(res).all()


def weighted_u_numerator(K: np.ndarray, L: np.ndarray, w: np.ndarray) -> float:
    """Σ over 4-tuples (t, u, v, s) of distinct samples of w_t w_u w_v w_s (K_tu L_tu + K_tu L_vs - 2 K_tu L_tv):
    Song et al.'s U-statistic of HSIC (up to a constant) with each sample weighted, by brute force."""
    n = len(w)
    t, u, v, s = np.array(list(itertools.permutations(range(n), 4))).T
    weight = w[t] * w[u] * w[v] * w[s]
    return float((weight * (K[t, u] * L[t, u] + K[t, u] * L[v, s] - 2 * K[t, u] * L[t, v])).sum())


def test_resamples_are_the_u_statistic_over_their_distinct_samples():
    """A resample's value is the U-statistic over 4-tuples of distinct samples, each weighted by how
    often the resample holds them: tuples pairing a sample with its copy are left out."""
    rng = np.random.default_rng(4)
    X, Y = related(rng, n=9)
    counts = Bootstrap(4, seed=11).weights(9) * 9
    _, res = cka(X, [Y], counts, block_elements=9 * 2 * 5 // 3)  # row blocks of 3
    K, L = linear(X), linear(Y)
    for b, c in enumerate(counts):
        want = weighted_u_numerator(K, L, c) / np.sqrt(weighted_u_numerator(K, K, c) * weighted_u_numerator(L, L, c))
        assert res[0, b] == pytest.approx(want, abs=1e-12)


def test_a_resample_without_repeats_is_the_unbiased_cka_of_the_samples_it_holds():
    rng = np.random.default_rng(6)
    X, Y = related(rng, n=50)
    held = np.zeros((3, 50))
    for b, size in enumerate((10, 30, 50)):
        held[b, rng.choice(50, size, replace=False)] = 1
    _, res = cka(X, [Y], held)
    for b in range(3):
        m = held[b] > 0
        assert res[0, b] == pytest.approx(direct_cka(linear(X[m]), linear(Y[m])), abs=1e-12)


def test_resampled_values_carry_no_bias_from_repeated_samples():
    """With many features per sample the biased (V-statistic) CKA of independent features is far
    above 0; resamples that counted pairs of copies would carry that bias and their interval would
    miss the estimate. Here the resamples centre on it."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(100, 200)), rng.normal(size=(100, 200))
    counts = Bootstrap(200, seed=0).weights(100) * 100
    est, res = cka(X, [Y], counts)
    lo, hi = np.quantile(res[0], [0.025, 0.975])
    assert abs(res[0].mean() - est[0]) < 0.02 and lo < est[0] < hi


# ---------------------------------------------------------------------- the extension in a run
def test_a_tiny_run_writes_cka_rows_figure_report_section_and_summary(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", *TINY, "--extension", "cka", "--layers", "features.1,features.3",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "metrics.csv")
    rows = df[df.metric.isin(["cka_init", "cka_previous"])]
    assert set(rows.split) == {"test"} and set(rows.layer) == {"features.1", "features.3"}
    its = sorted(df.iteration.unique())  # 0, 1, 2, 4, 8
    first = rows[rows.iteration == its[0]]
    assert list(first.metric) == ["cka_init", "cka_init"]  # no previous checkpoint yet
    np.testing.assert_allclose(first[["value", "ci_low", "ci_high"]].to_numpy(), 1.0, atol=1e-9)
    later = rows[rows.iteration > its[0]]
    assert len(later) == 2 * 2 * (len(its) - 1) and later.ci_low.notna().all()
    assert ((later.ci_low <= later.value + 1e-9) & (later.value <= later.ci_high + 1e-9)).all()
    assert (later.value <= 1 + 1e-9).all()
    # at the second checkpoint the previous one is the initial one
    second = rows[rows.iteration == its[1]].pivot(index="layer", columns="metric", values="value")
    np.testing.assert_allclose(second.cka_init, second.cka_previous)

    assert (out / "cka.png").stat().st_size > 10_000
    report = (out / "report.html").read_text()
    assert '<section id="cka">' in report and 'href="#cka"' in report and 'data-figure="cka.png"' in report
    assert "linear CKA" in report
    payload = json.loads((out / "phases.json").read_text())
    section = payload["cka"]
    assert section["init_iteration"] == 0 and set(section["layers"]) == {"features.1", "features.3"}
    end = section["layers"]["features.3"]["end"]
    assert end["iteration"] == its[-1] and end["cka_init"] == pytest.approx(
        rows.query("iteration == @its[-1] and metric == 'cka_init' and layer == 'features.3'").value.iloc[0], abs=1e-6)
    settings = json.loads((out / "config.json").read_text())["measurement"]["extensions"]["cka"]
    assert settings["samples"] == 100 and settings["bootstrap"] == 50
    assert settings["reference_bytes"] == {"features.1": 2 * 100 * 128 * 4, "features.3": 2 * 100 * 64 * 4}
    assert "linear CKA with initialisation at iteration 8" in " ".join(res.output.split())

    # `phasescope report` recomputes the section and redraws the figure from metrics.csv
    (out / "cka.png").unlink()
    del payload["cka"]["layers"]
    (out / "phases.json").write_text(json.dumps(payload))
    res = runner.invoke(app, ["report", str(out), "--html"])
    assert res.exit_code == 0, res.output
    assert (out / "cka.png").exists()
    again = json.loads((out / "phases.json").read_text())["cka"]["layers"]["features.3"]["end"]
    assert again["iteration"] == end["iteration"] and again["cka_init"] == pytest.approx(end["cka_init"], rel=1e-5)
    assert again["ci"] == pytest.approx(end["ci"], rel=1e-5)  # metrics.csv keeps 6 significant digits


def test_off_by_default_on_with_its_flag_and_max_samples_subsamples(tmp_path):
    out = tmp_path / "off"
    assert runner.invoke(app, ["run", *TINY, "--iterations", "1", "--out", str(out)]).exit_code == 0
    assert not pd.read_csv(out / "metrics.csv").metric.str.startswith("cka").any()
    assert not (out / "cka.png").exists()
    out = tmp_path / "on"
    res = runner.invoke(app, ["run", *TINY, "--iterations", "2", "--cka", "--cka-max-samples", "40", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(out / "metrics.csv").metric.eq("cka_previous").sum() == 2  # iterations 1 and 2
    assert json.loads((out / "phases.json").read_text())["cka"]["settings"]["samples"] == 40
    res = runner.invoke(app, ["run", *TINY, "--extension", "cka:max_samples=2", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "cka max_samples must be >= 4" in res.output and "Traceback" not in res.output


def test_resume_keeps_the_reference_features(tmp_path):
    """An interrupted run resumed from its state compares with the same initial and previous
    features: its CKA rows are those of the uninterrupted run."""
    from phasescope import RunConfig, run_experiment

    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=8, batch_size=32, lr=0.05, fit_samples=200,
                    test_samples=100, bootstrap=50, extensions=["cka"])
    cfg.samples.enabled = False
    cfg.reconstructions.enabled = False
    full = run_experiment(cfg, tmp_path / "full", progress=False)

    def interrupt(t, tracker):
        if t == 2:
            raise KeyboardInterrupt

    part = run_experiment(cfg, tmp_path / "part", progress=False, on_checkpoint=interrupt)
    assert part.status == "interrupted"
    resumed = run_experiment(cfg, tmp_path / "part", resume=True, progress=False)
    pick = lambda df: df[df.metric.str.startswith("cka")].reset_index(drop=True)  # noqa: E731
    assert len(pick(full.metrics)) == 9  # cka_init at 0, 1, 2, 4, 8; cka_previous at 1, 2, 4, 8
    pd.testing.assert_frame_equal(pick(full.metrics), pick(resumed.metrics))


def test_state_dict_round_trip_keeps_the_references():
    from phasescope import PhaseTracker
    from phasescope.data import load_dataset
    from phasescope.run.models import build_model

    digits = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=0.5)
    sets = (digits.x_train[:200], digits.y_train[:200]), (digits.x_test[:60], digits.y_test[:60])
    tracker = PhaseTracker(model, ["features.3"], *sets, schedule=[0, 1], bootstrap=20, extensions=["cka"])
    tracker.measure(model, 0)
    state = tracker.state_dict()
    again = PhaseTracker(model, ["features.3"], *sets, schedule=[0, 1], bootstrap=20, extensions=["cka"])
    again.load_state_dict(state)
    ext, before = again.extensions[0], tracker.extensions[0]
    assert isinstance(ext, LinearCKA) and ext.init_iteration == 0
    assert torch.equal(ext.init_["features.3"], before.init_["features.3"])
    with torch.no_grad():
        next(model.parameters()).mul_(-1.5)  # a changed first layer
    a, b = tracker.measure(model, 1), again.measure(model, 1)
    pick = lambda rows: [(r["metric"], r["value"], r["ci_low"]) for r in rows if r["metric"].startswith("cka")]  # noqa: E731
    assert pick(a) == pick(b) and len(pick(a)) == 2


def test_two_ranks_measure_the_cka_one_process_measures(tmp_path):
    """Under torch.distributed (two forked gloo ranks, uneven shares) every rank gets the gathered
    test features and writes the rows one process writes."""
    from phasescope import PhaseTracker
    from phasescope.data import load_dataset
    from phasescope.run.models import build_model
    from tests.test_distributed import ok, run_ranks

    digits = load_dataset("digits")

    def measure(distributed):
        torch.manual_seed(0)
        model = build_model("cnn", (1, 8, 8), 10, width=0.5)
        tracker = PhaseTracker(model, ["features.2", "features.3"], (digits.x_train[:200], digits.y_train[:200]),
                               (digits.x_test[:100], digits.y_test[:100]), [0, 1, 2], batch_size=64, bootstrap=50,
                               extensions=["cka"], distributed=distributed)
        for it in (0, 1, 2):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.3 * torch.sin(torch.arange(p.numel(), dtype=p.dtype) + it).reshape(p.shape))
            tracker.measure(model, it)
        df = tracker.results()
        return df[df.metric.str.startswith("cka")].reset_index(drop=True)

    one = measure(False)
    assert len(one) == 2 * 5 and (one.value < 0.999).sum() >= 6  # the layers moved
    for df in ok(run_ranks(lambda rank: measure("auto"), tmp_path)):
        pd.testing.assert_frame_equal(one, df, check_exact=False, rtol=1e-5, atol=1e-7)
