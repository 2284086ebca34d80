"""`phasescope run --dataset shakespeare --model gpt`: a run folder with per-block token rows, offline."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app

runner = CliRunner()
BLOCKS = ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


@pytest.mark.slow
def test_run_shakespeare_gpt_writes_token_rows_per_block(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--dataset", "shakespeare", "--model", "gpt", "--iterations", "8",
                              "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "50", "--quiet",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "metrics.csv")
    test = df[df.split == "test"]
    for metric in ("reconstruction_mse", "token_recovery", "probe_accuracy"):
        rows = test[test.metric == metric]
        assert sorted(rows.layer.unique()) == BLOCKS, metric
        assert sorted(rows.iteration.unique()) == [0, 1, 2, 4, 8], metric
    assert test[test.metric == "token_recovery"].value.between(0, 1).all()
    assert (test[test.metric == "reconstruction_mse"].value < 1 / 65).all()  # per entry of the 65-token one-hot
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["optimizer"] == "adamw" and doc["config"]["warmup"] == 100
    assert doc["measurement"]["tokens"] == "last" and doc["measurement"]["target"]["target"] == "tokens"
    windows = doc["data"]["measured_windows"]
    assert len(windows["fit"]) == 200 and len(windows["test"]) == 100  # the seeded positions measured
    assert doc["data"]["vocab_size"] == 65 and doc["data"]["inputs"] == "tokens"
    samples = pd.read_parquet(out / "samples.parquet")  # "the few": per window, with what makes it rare
    assert {"learned_at", "forgotten", "target_frequency", "continuation_probability"} <= set(samples.columns)
    assert len(samples) == 200
    marks = json.loads((out / "phases.json").read_text())["samples"]["marks"]  # learned-at against the marks
    assert set(marks) == {"target_frequency", "continuation_probability"}
    assert "Spearman(learned at, mark): target_frequency" in " ".join(res.output.split())
    # `phasescope report` rebuilds it from the run's files, also for a phases.json written without it
    doc = json.loads((out / "phases.json").read_text())
    del doc["samples"]["marks"]
    (out / "phases.json").write_text(json.dumps(doc))
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    assert json.loads((out / "phases.json").read_text())["samples"]["marks"] == marks


def test_token_options_are_validated(tmp_path):
    res = runner.invoke(app, ["run", "--dataset", "shakespeare", "--model", "gpt", "--context", "8",
                              "--token-window", "9", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "token_window 9 is longer than the context 8" in " ".join(res.output.split())
    res = runner.invoke(app, ["run", "--dataset", "mnist-digits", "--model", "gpt", "--iterations", "2",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "gpt needs token inputs" in " ".join(res.output.split())


def test_layers_lists_the_gpt_blocks():
    res = runner.invoke(app, ["layers", "--model", "gpt", "--dataset", "shakespeare"])
    assert res.exit_code == 0, res.output
    for name in ("embed", *BLOCKS, "ln_f"):
        assert name in res.output
    assert "measured on the last token by default" in " ".join(res.output.split())
