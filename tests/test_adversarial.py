"""Adversarial inputs found to misbehave by hand and fixed: NaN/inf numeric options, a huge --seeds
range, --threads below 1, the same run folder given twice to `compare`, --set on a sweep's grid
axis, NaN synthetic-data knobs, and a PhaseTracker given an empty or odd schedule or a state that
is not a dict. Each test asserts what the user sees (exit code, the one-line message, the files);
the CLI option parsers also get hypothesis property tests (never a traceback, never a silent default)."""
from __future__ import annotations

import math

import pytest
import torch
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from phasescope import RunConfig
from phasescope.interfaces.cli import _parse_knobs, _parse_ridge, _parse_seeds, app
from phasescope.config import ConfigError

runner = CliRunner()
RUN = ["run", "--dataset", "digits", "--width", "0.5", "--batch-size", "32", "--iterations", "4",
       "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "20", "--no-samples", "--no-reconstructions",
       "--quiet"]


def error_line(output: str) -> str:
    errors = [l for l in output.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return " ".join(output[output.index("error:"):].split())


# ---------------------------------------------------------------------- numbers that are not numbers
@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--lr", "inf"), ("--width", "nan"),
                                           ("--momentum", "nan"), ("--weight-decay", "inf"),
                                           ("--min-effect", "nan"), ("--min-effect", "-0.1")])
def test_nan_or_inf_options_are_bad_input_not_a_diverged_run(tmp_path, option, value):
    # --lr nan used to train, diverge at once and exit 3 ("Lower --lr"), leaving a run folder behind
    out = tmp_path / "run"
    res = runner.invoke(app, RUN + [option, value, "--out", str(out)])
    assert res.exit_code == 2, res.output
    name = option[2:].replace("-", "_")
    assert f"error: {name} must be" in error_line(res.output) and value in res.output
    assert not out.exists()


@pytest.mark.parametrize("ridge", [float("nan"), float("inf"), [0.1, float("inf")]])
def test_a_nan_or_infinite_ridge_is_refused(ridge):
    with pytest.raises(ConfigError, match="relative_ridge must be a number >= 0"):
        RunConfig(relative_ridge=ridge).validate()


def test_a_sweep_grid_of_nan_and_inf_is_refused_in_the_dry_run(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\niterations = 4\n[grid]\nlr = [0.1, nan, inf]\n')
    res = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and "lr must be positive and finite; got nan" in error_line(res.output)


def test_synthetic_knobs_that_are_nan_are_named(tmp_path):
    # noise=nan used to end in "50000 train input value(s) are NaN ... replace or drop those samples"
    res = runner.invoke(app, ["run", "--dataset", "synthetic", "--synthetic", "noise=nan", "--iterations", "4",
                              "--quiet", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "noise must be a finite number; got nan" in error_line(res.output)


# ---------------------------------------------------------------------- --seeds and --threads
def test_a_huge_seed_range_is_refused_at_once():
    # 0-100000000 used to build a list of 10^8 seeds (minutes, gigabytes) before anything else
    res = runner.invoke(app, RUN + ["--seeds", "0-100000000", "--out", "x"])
    assert res.exit_code == 2, res.output
    assert "asks for 100,000,001 runs, more than 10,000" in error_line(res.output) and "phasescope sweep" in res.output


@pytest.mark.parametrize("threads", ["0", "-3"])
def test_threads_below_one_is_bad_input(tmp_path, threads):
    res = runner.invoke(app, RUN + ["--threads", threads, "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert f"--threads must be at least 1; got {threads}" in error_line(res.output)
    assert not (tmp_path / "run").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789-, x.", max_size=20))
def test_parse_seeds_gives_distinct_non_negative_seeds_or_a_clean_error(text):
    try:
        seeds = _parse_seeds(text)
    except typer.Exit:
        return
    assert seeds and all(isinstance(s, int) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789.,e-+autonaif ", max_size=20))
def test_parse_ridge_never_raises_anything_but_a_clean_exit(text):
    try:
        value = _parse_ridge(text)
    except typer.Exit:
        return
    values = value if isinstance(value, list) else [value]
    assert all(v == "auto" or isinstance(v, float) for v in values)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_parse_knobs_gives_a_dict_or_a_clean_exit(text):
    try:
        knobs = _parse_knobs(text)
    except typer.Exit:
        return
    assert isinstance(knobs, dict) and all(isinstance(k, str) for k in knobs)


# ---------------------------------------------------------------------- compare: one folder given twice
def test_compare_counts_a_folder_given_twice_once(tmp_path, monkeypatch):
    from phasescope import run_experiment

    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=4, batch_size=32, lr=0.05, fit_samples=200,
                    test_samples=100, bootstrap=20, device="cpu")
    run = run_experiment(cfg, tmp_path / "r1", progress=False).out
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["compare", "r1", "./r1/", str(run), "--out", "cmp"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "r1 is given more than once; it is compared once" in text
    assert f"{run} is the same folder as r1; it is compared once" in text
    import pandas as pd

    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(table) == len(table.drop_duplicates(["run", "layer"])) == len(table[table.path == "r1"]) >= 1


# ---------------------------------------------------------------------- sweep --set on a grid axis
@pytest.mark.parametrize("where", ["[grid]\nseed = [0, 1]\n", '[[runs]]\nname = "a"\n[runs.grid]\nseed = [0, 1]\n'])
def test_set_on_a_grid_axis_says_so(tmp_path, where):
    # it used to say that runs 1 and 2 have the same name and to rename [[runs]] entries
    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\niterations = 4\n' + where)
    res = runner.invoke(app, ["sweep", str(path), "--dry-run", "--set", "seed=5"])
    assert res.exit_code == 2, res.output
    line = error_line(res.output)
    assert "--set seed=5: seed is a grid axis of" in line and "Drop the --set" in line
    res = runner.invoke(app, ["sweep", str(path), "--dry-run", "--set", "lr=0.01"])  # another key: fine
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------------- PhaseTracker: schedule and state
def _tracker(**kw):
    from torch import nn

    from phasescope import PhaseTracker

    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(30, 1, 4, 4), torch.arange(30) % 3
    return PhaseTracker(m, ["2"], (x, y), (x, y), **kw)


@pytest.mark.parametrize("schedule", [[], [-5, 3], [1.5, 2], ["a"], [True, 2]])
def test_an_empty_or_odd_schedule_is_refused(schedule):
    # an empty schedule used to build a tracker that silently never measured
    with pytest.raises(ValueError, match=r"schedule must be a non-empty list of iterations \(integers >= 0\)"):
        _tracker(schedule=schedule)


def test_a_schedule_of_numpy_integers_or_unsorted_repeats_is_accepted():
    import numpy as np

    assert _tracker(schedule=np.array([4, 0, 2, 2])).schedule == [0, 2, 4]


@pytest.mark.parametrize("state", [None, [1, 2], "state.pt"])
def test_load_state_dict_of_something_else_is_a_type_error(state):
    with pytest.raises(TypeError, match="load_state_dict needs the dict returned by PhaseTracker.state_dict"):
        _tracker(schedule=[0, 1]).load_state_dict(state)


def test_finite_checks_keep_ordinary_values():
    cfg = RunConfig(lr=1e-3, momentum=0.0, weight_decay=0.0, min_effect=0.0, relative_ridge=[0.0, 1e6, "auto"])
    assert cfg.validate() is cfg and math.isfinite(cfg.lr)


# ---------------------------------------------------------------------- sweep resources
@pytest.mark.parametrize("option, value, message", [
    ("--cpus-per-run", "nan", "--cpus-per-run must be a positive number; got nan"),
    ("--gpus-per-run", "nan", "--gpus-per-run must be a number >= 0; got nan"),
    ("--gpus-per-run", "inf", "--gpus-per-run must be a number >= 0; got inf"),
    ("--num-cpus", "0", "--num-cpus must be at least 1; got 0")])
def test_sweep_resources_that_are_not_numbers_are_refused_before_anything_is_written(tmp_path, option, value,
                                                                                       message):
    # NaN passed the `<= 0` checks; --num-cpus 0 silently meant all cores
    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\niterations = 4\n[grid]\nseed = [0]\n')
    out = tmp_path / "sw"
    res = runner.invoke(app, ["sweep", str(path), "--backend", "local", "--out", str(out), option, value, "--quiet"])
    assert res.exit_code == 2, res.output
    assert message in error_line(res.output) and not out.exists()
