"""Diverging runs end one of two ways, whatever the CPU's floating-point path:
exit 3 with the "diverged" message and every earlier checkpoint on disk, or a
completed run whose summary and phases.json warn that it did not learn."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.engine.diagnostics import run_warnings

runner = CliRunner()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dataset", ["digits", "mnist-digits"])
@pytest.mark.parametrize("model", ["cnn", "mlp", "vgg8"])
def test_divergence_matrix(tmp_path, model, dataset, seed):
    out = tmp_path / "run"
    res = runner.invoke(app, [
        "run", "--model", model, "--dataset", dataset, "--width", "0.25", "--seed", str(seed),
        "--lr", "1e6", "--momentum", "0", "--iterations", "16", "--batch-size", "32",
        "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "50", "--no-samples", "--quiet",
        "--out", str(out)])
    assert res.exit_code in (0, 3), res.output
    metrics = pd.read_csv(out / "metrics.csv")
    assert 0 in set(metrics.iteration)  # the checkpoint before the blow-up is on disk
    if res.exit_code == 3:
        assert "diverged" in res.output
    else:
        warnings = json.loads((out / "phases.json").read_text())["warnings"]
        assert warnings and any("chance" in w or "ln(" in w for w in warnings)
        assert "warning:" in res.output


def _model_rows(its, acc, loss, ci=0.01):
    rows = []
    for it, a, l in zip(its, acc, loss):
        rows += [{"iteration": it, "layer": "model", "split": "train", "metric": "accuracy", "value": a,
                  "ci_low": a - ci, "ci_high": a + ci},
                 {"iteration": it, "layer": "model", "split": "train", "metric": "loss", "value": l,
                  "ci_low": l - ci, "ci_high": l + ci}]
    return pd.DataFrame(rows)


def test_warnings_for_chance_accuracy_and_a_stuck_loss():
    import math

    its = [0, 1, 2, 4, 8]
    stuck = _model_rows(its, [0.1, 0.1, 0.1, 0.1, 0.1], [2.4, math.log(10)] + [math.log(10) * 1.001] * 3)
    w = run_warnings(stuck, 10)
    assert len(w) == 2 and "chance" in w[0] and "ln(10)" in w[1]


def test_no_warning_for_a_run_that_learned():
    learned = _model_rows([0, 1, 2, 4, 8], [0.1, 0.3, 0.6, 0.9, 0.99], [2.3, 1.9, 1.0, 0.3, 0.05])
    assert run_warnings(learned, 10) == []
    assert run_warnings(learned.iloc[:2], 10) == []  # iteration 0 alone says nothing
    assert run_warnings(learned, None) == []
