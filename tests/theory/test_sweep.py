"""Sweep parameters, the sweep folder, and the single-run folder."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phasescope.outputs.runs import read_errors
from phasescope.theory import DataModel, Training
from phasescope.theory.experiment import run_theory
from phasescope.theory.sweep import configure, run_sweep, summarise, sweep_values

SMALL = DataModel(num_classes=3, dim=20, n_train=90, n_test=60, atypical_fraction=0.2)
FAST = Training(iterations=64, lr=0.1)


def test_sweep_values_take_the_type_of_the_field():
    assert sweep_values("atypical_fraction", ["0", "0.05"]) == [0.0, 0.05]
    assert sweep_values("dim", ["10", "2e1"]) == [10, 20]
    assert sweep_values("batch_size", ["full", "32"]) == [None, 32]
    assert sweep_values("atypical_kind", ["random", "other"]) == ["random", "other"]
    with pytest.raises(ValueError, match="Cannot sweep 'dims'; choose one of"):
        sweep_values("dims", ["1"])
    with pytest.raises(ValueError, match="dim='1.5' is not a valid int"):
        sweep_values("dim", ["1.5"])


def test_configure_validates_the_swept_value():
    dm, tr = configure(SMALL, FAST, "lr", 0.5)
    assert tr.lr == 0.5 and dm == SMALL
    with pytest.raises(ValueError, match="atypical_fraction"):
        configure(SMALL, FAST, "atypical_fraction", 1.5)


def test_sweep_folder(tmp_path):
    res = run_sweep(SMALL, FAST, "atypical_fraction", [0.0, 0.2], [0, 1], tmp_path / "s", bootstrap=50)
    table = pd.read_csv(tmp_path / "s" / "sweep.csv")
    assert len(table) == 4 and {"relative_increase_ci_low", "min_iteration", "share_crossing_iteration"} <= set(table.columns)
    assert (tmp_path / "s" / "sweep.png").stat().st_size > 10_000
    metrics = pd.read_csv(tmp_path / "s" / "metrics.csv")
    assert set(metrics.seed) == {0, 1} and set(metrics.atypical_fraction) == {0.0, 0.2}
    rec = metrics[(metrics.metric == "reconstruction_mse") & (metrics.layer == "logits") & (metrics.split == "test")]
    assert len(rec) == 4 * 8 and rec.value.between(0.05, 1.5).all()  # the measurements, not the swept values
    last = rec[(rec.iteration == 64) & (rec.seed == 1) & (rec.atypical_fraction == 0.2)].value.iloc[0]
    row = table[(table.seed == 1) & (table.value == 0.2)].iloc[0]
    assert last == pytest.approx(row.test_loss_final, rel=1e-5)
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["parameter"] == "atypical_fraction" and cfg["seeds"] == [0, 1]
    s = summarise(res.table)
    assert list(s["value"]) == [0.0, 0.2] and list(s["seeds"]) == [2, 2]


def test_run_folder(tmp_path):
    run = run_theory(SMALL, FAST, seed=0, out=tmp_path / "r", bootstrap=50)
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.json", "metrics.csv", "errors.npz", "phases.json", "curves.png"} <= files
    phases = json.loads((tmp_path / "r" / "phases.json").read_text())
    assert set(phases["layers"]) == {"logits", "softmax"} and "typical_loss_ratio" in phases["turn"]["logits"]
    errors = read_errors(tmp_path / "r")
    its, E = errors["logits"]
    assert its == run.result.iterations
    np.testing.assert_allclose(E, run.result.errors["logits"], rtol=1e-6)  # stored as float32
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["data_model"]["atypical_fraction"] == 0.2 and cfg["training"]["lr"] == 0.1
