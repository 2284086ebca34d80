"""``phasescope theory``: parses, runs, prints, and fails with a message."""
from __future__ import annotations

import json
import runpy
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope.theory.cli import app

runner = CliRunner()
SMALL = ["-K", "3", "-d", "20", "-n", "90", "--n-test", "60", "-T", "32", "--lr", "0.1", "--bootstrap", "50", "--no-figure"]


def test_single_run(tmp_path):
    res = runner.invoke(app, SMALL + ["--atypical-fraction", "0.2", "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "logits:" in res.output and "softmax:" in res.output and "turn:" in res.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["data_model"]["num_classes"] == 3 and cfg["training"]["iterations"] == 32
    assert (tmp_path / "r" / "phases.json").exists() and not (tmp_path / "r" / "curves.png").exists()


def test_sweep(tmp_path):
    res = runner.invoke(app, SMALL + ["--sweep", "atypical_fraction=0,0.2", "--seeds", "0,1", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "s" / "sweep.csv")) == 4
    assert res.output.count("atypical_fraction=0.2 seed") == 2 and "wrote" in res.output


def test_errors_name_the_parameter(tmp_path):
    res = runner.invoke(app, SMALL + ["--atypical-fraction", "1.5", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "atypical_fraction must be in [0, 1)" in res.output
    res = runner.invoke(app, SMALL + ["--sweep", "noise:1,2", "--out", str(tmp_path / "y")])
    assert res.exit_code != 0 and "PARAM=V1,V2" in res.output
    res = runner.invoke(app, SMALL + ["--sweep", "nosie=1,2", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "Cannot sweep 'nosie'" in res.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    res = runner.invoke(app, SMALL + ["--out", str(tmp_path / "full")])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_module_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python -m phasescope.theory", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("phasescope.theory", run_name="__main__")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--atypical-fraction" in out and "--sweep" in out
