"""Per-sample dynamics (phasescope.samples): closed forms, hand-made sequences, resume."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from phasescope.config import ConfigError, RunConfig, SamplesOptions
from phasescope.run.models import Classifier, mlp
from phasescope.samples import (
    SampleDynamics, class_distance, effective_fraction, first_crossing, forgetting_counts,
    gradient_concentration, last_layer_grad_norm, learned_at, top_share,
    typicality_correlation,
)
from phasescope.engine.tracker import PhaseTracker


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is faster on a shared machine and the results are the same."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _autograd_norms(model: nn.Module, head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample gradient norms of the loss w.r.t. ``head``'s parameters, one backward each."""
    params = [p for p in (head.weight, head.bias) if p is not None]
    out = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        out.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    return torch.stack(out)


@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_grad_norm_equals_autograd(bias):
    torch.manual_seed(0)
    head = nn.Linear(16, 5, bias=bias)
    model = Classifier(nn.Sequential(nn.Linear(8, 16), nn.Tanh()), nn.Sequential(nn.Flatten(), head)).double()
    x, y = torch.randn(20, 8, dtype=torch.float64), torch.randint(0, 5, (20,))
    with torch.no_grad():
        a = model.features(x)
        logits = model(x)
    closed = last_layer_grad_norm(logits, y, a, bias=bias)
    torch.testing.assert_close(closed, _autograd_norms(model, head, x, y), rtol=1e-10, atol=1e-12)


def _toy(n: int = 60, d: int = 12, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, d, generator=g) * 2
    x = centres[y] + torch.randn(n, d, generator=g)
    return x, y


def _trajectory(steps=(0, 1, 2, 4, 8, 16)):
    """A small MLP's state_dicts at ``steps`` of full-batch SGD on toy data (no BatchNorm)."""
    torch.manual_seed(0)
    x, y = _toy()
    model = mlp((12,), 3, width=0.125, depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    states = {}
    for t in range(max(steps) + 1):
        if t in steps:
            states[t] = {k: v.clone() for k, v in model.state_dict().items()}
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y, states


def _tracker(model, x, y, ext, steps):
    return PhaseTracker(model, ["features.2"], (x, y), (x[:30], y[:30]), schedule=list(steps), bootstrap=20,
                        extensions=[ext], device="cpu")


def test_tracker_captures_head_input_in_its_pass_and_norms_match_autograd():
    model, x, y, states = _trajectory((0, 4))
    ext = SampleDynamics()
    tracker = _tracker(model, x, y, ext, (0, 4))
    model.load_state_dict(states[4])
    rows = tracker.measure(model, 4)
    assert tracker.module_inputs == {"<head>": "head"}
    model.eval()
    torch.testing.assert_close(torch.as_tensor(ext.matrix("grad_norm")[0], dtype=torch.float64),
                               _autograd_norms(model, model.head, x, y), rtol=1e-4, atol=1e-6)
    metrics = {r["metric"]: r for r in rows if r["layer"] == "model" and r["split"] == "train"}
    assert {"grad_share_top1", "grad_share_top10", "grad_effective_fraction", "misclassified_fraction"} <= set(metrics)
    acc = next(r["value"] for r in rows if r["metric"] == "accuracy" and r["split"] == "train")
    assert metrics["misclassified_fraction"]["value"] == pytest.approx(1 - acc)


def test_own_data_forward_gives_the_same_as_the_tracker_pass():
    model, x, y, states = _trajectory((0, 2))
    a, b = SampleDynamics(), SampleDynamics(data=(x, y), name="samples-own-data")
    tracker = PhaseTracker(model, ["features.2"], (x, y), (x[:30], y[:30]), schedule=[0, 2], bootstrap=20,
                           extensions=[a, b], device="cpu")
    for t in (0, 2):
        model.load_state_dict(states[t])
        tracker.measure(model, t)
    for key in ("correct", "loss", "margin", "grad_norm"):
        np.testing.assert_allclose(a.matrix(key), b.matrix(key), rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(a.samples(), b.samples())


# ------------------------------------------------------------------ learned-at and forgetting
ITERATIONS = [0, 1, 2, 4, 8]
SEQUENCES = {  # name: (correctness per checkpoint, learned_at, forgotten)
    "always": ([1, 1, 1, 1, 1], 0, 0),
    "never": ([0, 0, 0, 0, 0], None, 0),
    "learned at 2": ([0, 0, 1, 1, 1], 2, 0),
    "learned, forgotten, relearned": ([0, 1, 0, 1, 1], 4, 1),
    "forgotten at the end": ([1, 1, 1, 1, 0], None, 1),
    "twice forgotten": ([1, 0, 1, 0, 1], 8, 2),
    "learned at the last checkpoint": ([0, 0, 0, 0, 1], 8, 0),
}


def test_learned_at_and_forgetting_on_hand_made_sequences():
    correct = np.array([s for s, _, _ in SEQUENCES.values()], dtype=bool).T  # (K, n)
    got = learned_at(correct, ITERATIONS)
    for (name, (_, want, forgot)), g, f in zip(SEQUENCES.items(), got, forgetting_counts(correct)):
        assert (np.isnan(g) if want is None else g == want), name
        assert f == forgot, name


def test_learned_at_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="K = len"):
        learned_at(np.ones((3, 4), dtype=bool), [0, 1])


def test_samples_table_marks_never_learned_as_missing_not_a_number():
    ext = SampleDynamics(index=[10, 11, 12, 13, 14, 15, 16])
    ext.iterations = list(ITERATIONS)
    ext.rows_, ext.labels_ = np.arange(7), np.arange(7) % 2
    correct = np.array([s for s, _, _ in SEQUENCES.values()], dtype=bool).T
    for k in range(len(ITERATIONS)):
        ext.history["correct"].append(correct[k])
        for key in ("loss", "margin", "grad_norm"):
            ext.history[key].append(np.full(7, float(k), dtype=np.float32))
    df = ext.samples()
    assert df.learned_at.dtype == "Int64"
    assert df.learned_at.isna().tolist() == [want is None for _, want, _ in SEQUENCES.values()]
    assert df["index"].tolist() == [10, 11, 12, 13, 14, 15, 16]
    assert df.forgotten.tolist() == [f for _, _, f in SEQUENCES.values()]


# ------------------------------------------------------------------ concentration summaries
def test_uniform_norms_give_top10_share_one_tenth_and_effective_fraction_one():
    c = gradient_concentration(np.full(1000, 0.37))
    assert c["grad_share_top10"] == pytest.approx(0.1)
    assert c["grad_share_top1"] == pytest.approx(0.01)
    assert c["grad_effective_fraction"] == pytest.approx(1.0)


def test_one_dominant_sample_carries_almost_everything():
    g = np.ones(1000)
    g[123] = 1e7
    c = gradient_concentration(g)
    assert c["grad_share_top1"] == pytest.approx(1.0, abs=1e-3)
    assert c["grad_effective_fraction"] == pytest.approx(1 / 1000, rel=1e-2)


def test_top_share_takes_at_least_one_sample_and_handles_zero():
    assert top_share(np.array([3.0, 1.0, 1.0]), 0.01) == pytest.approx(0.6)
    assert np.isnan(top_share(np.zeros(5), 0.1)) and np.isnan(effective_fraction(np.zeros(5)))


def test_first_crossing_brackets_the_checkpoint():
    assert first_crossing([0, 1, 2, 4], [0.1, 0.3, 0.6, 0.7]) == (1, 2)
    assert first_crossing([0, 1], [0.6, 0.7]) == (None, 0)
    assert first_crossing([0, 1], [0.1, 0.2]) == (None, None)


# ------------------------------------------------------------------ typicality
def test_class_distance_z_scores_and_ranks_are_within_class():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    h = rng.normal(size=(100, 4)) * np.where(y == 0, 1.0, 10.0)[:, None]
    d, z, r = class_distance(h, y)
    for c in (0, 1):
        m = y == c
        assert z[m].mean() == pytest.approx(0, abs=1e-12) and z[m].std() == pytest.approx(1)
        assert r[m].min() == 0 and r[m].max() == 1 and r[m][np.argmin(d[m])] == 0
    assert d[y == 1].mean() > 5 * d[y == 0].mean()


def test_typicality_correlation_handles_never_learned_explicitly():
    learned = np.array([0, 1, 2, 3, np.nan, np.nan])
    dist = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 4.0])
    t = typicality_correlation(learned, dist)
    assert t["learned_only"]["rho"] == pytest.approx(1.0) and t["learned_only"]["n"] == 4
    assert t["never_as_latest"]["n"] == 6 and t["never_as_latest"]["rho"] > 0.9
    assert t["never_vs_learned"] == {"never_mean": 4.5, "learned_mean": 1.5, "n_never": 2}
    none = typicality_correlation(np.full(4, np.nan), np.arange(4.0))
    assert none["learned_only"]["rho"] is None and none["never_vs_learned"]["learned_mean"] is None


# ------------------------------------------------------------------ resume and re-measuring
def test_resume_round_trip_via_state_dict():
    steps = (0, 1, 2, 4, 8, 16)
    model, x, y, states = _trajectory(steps)
    whole = SampleDynamics(max_samples=40, seed=3)
    t_whole = _tracker(model, x, y, whole, steps)
    for t in steps:
        model.load_state_dict(states[t])
        t_whole.measure(model, t)

    first = SampleDynamics(max_samples=40, seed=3)
    t_first = _tracker(model, x, y, first, steps)
    for t in steps[:3]:
        model.load_state_dict(states[t])
        t_first.measure(model, t)
    buffer = io.BytesIO()
    torch.save(t_first.state_dict(), buffer)
    buffer.seek(0)
    second = SampleDynamics(max_samples=40, seed=3)
    t_second = _tracker(model, x, y, second, steps)
    t_second.load_state_dict(torch.load(buffer, weights_only=False))
    for t in steps[3:]:
        model.load_state_dict(states[t])
        t_second.measure(model, t)

    assert second.iterations == list(steps)
    pd.testing.assert_frame_equal(second.samples(), whole.samples())
    a, b = second.summary(), whole.summary()
    a.pop("seconds_per_checkpoint"), b.pop("seconds_per_checkpoint")
    assert a == b and a["n"] == 40


def test_measuring_an_iteration_again_replaces_it():
    model, x, y, states = _trajectory((0, 2))
    ext = SampleDynamics()
    tracker = _tracker(model, x, y, ext, (0, 2))
    model.load_state_dict(states[2])
    tracker.measure(model, 2)
    model.load_state_dict(states[0])
    tracker.measure(model, 0)
    tracker.measure(model, 0)
    assert ext.iterations == [0, 2] and ext.matrix("loss").shape == (2, len(x))


def test_a_final_linear_that_is_not_the_logits_is_refused():
    class Doubled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp((12,), 3, width=0.125, depth=1)

        def forward(self, x):
            return 2 * self.net(x)

    x, y = _toy()
    model = Doubled()
    tracker = PhaseTracker(model, ["net.features.1"], (x, y), (x, y), schedule=[0], bootstrap=20,
                           extensions=[SampleDynamics()], device="cpu")
    with pytest.raises(ValueError, match="does not compute the logits"):
        tracker.measure(model, 0)


# ------------------------------------------------------------------ options and the run folder
def test_samples_options_validate():
    assert SamplesOptions.from_dict({}).to_dict() == {"enabled": True, "max_samples": None, "seed": 0}
    with pytest.raises(ConfigError, match="max_samples"):
        RunConfig.from_dict({"samples": {"max_samples": 0}})
    with pytest.raises(ConfigError, match="Unknown samples option"):
        RunConfig.from_dict({"samples": {"max": 5}})


def test_run_writes_the_sample_files_and_summary(tmp_path):
    from phasescope.run.experiment import run_experiment
    from phasescope.samples import read_samples_table

    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=8, fit_samples=200, test_samples=100,
                    bootstrap=50, device="cpu", samples=SamplesOptions(max_samples=150))
    result = run_experiment(cfg, tmp_path / "run", progress=False)
    out = result.out
    for name in ("samples.parquet", "samples.npz", "samples.png", "few.png"):
        assert (out / name).exists(), name
    table = read_samples_table(out)
    assert len(table) == 150 and table["index"].is_unique
    from phasescope.data import load_dataset

    data = load_dataset("digits")
    np.testing.assert_array_equal(table.label.to_numpy(), data.y_train.numpy()[table["index"].to_numpy()])
    payload = json.loads((out / "phases.json").read_text())
    s = payload["samples"]
    assert s["n"] == 150 and s["checkpoints"] == [0, 1, 2, 4, 8] and "features.3" in s["reconstruction"]
    assert json.loads((out / "config.json").read_text())["config"]["samples"]["max_samples"] == 150
    m = result.metrics
    assert set(m[(m.layer == "model") & (m.metric.str.startswith("grad_"))].iteration) == {0, 1, 2, 4, 8}

    # `phasescope report` rebuilds the samples key and samples.png from the files alone
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    (out / "samples.png").unlink()
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0, r.output
    rebuilt = json.loads((out / "phases.json").read_text())["samples"]
    assert (out / "samples.png").exists()
    for key in ("n", "source", "layer", "checkpoints", "top10_half_iteration", "never_learned", "typicality"):
        assert rebuilt[key] == s[key], key
    assert rebuilt["final"] == pytest.approx(s["final"], rel=1e-5)


def test_cli_no_samples_turns_it_off(tmp_path):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    r = CliRunner().invoke(app, ["run", "--dataset", "digits", "--width", "0.5", "--iterations", "2", "--fit-samples",
                                 "100", "--test-samples", "50", "--bootstrap", "20", "--device", "cpu", "--no-samples",
                                 "--out", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "run" / "samples.parquet").exists()
    assert "samples (" not in r.output
