"""TransferProbes in the tracker, and transfer options through run_experiment and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.config import ConfigError, RunConfig
from phasescope.data import load_dataset
from phasescope.run.experiment import run_experiment
from phasescope.run.models import build_model
from phasescope.outputs.runs import read_metrics
from phasescope.engine.tracker import METRIC_COLUMNS, PhaseTracker
from phasescope.config import TransferOptions
from phasescope.transfer import TransferProbes, TransferTask, validate_options

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("probe", ["ridge", "logistic"])
def test_a_transfer_task_equal_to_the_label_task_reproduces_the_probe(digits, probe):
    # Same engine: probing the pre-training labels as a "transfer" task gives the probe's numbers.
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, 10, width=0.25)
    fit, test = (digits.x_train[:400], digits.y_train[:400]), (digits.x_test[:200], digits.y_test[:200])
    same = TransferTask("labels", 10, digits.classes, train=fit, test=test)
    colourless = TransferTask("parity", 2, ["even", "odd"], label_fn=lambda x: (x.flatten(1).sum(1) > 0).long())
    ext = TransferProbes([same, colourless], probe=probe, bootstrap=200)
    tracker = PhaseTracker(model, ["features.2"], fit, test, schedule=[0], probe=probe, bootstrap=200,
                           extensions=[ext])
    tracker.measure(model, 0)
    df = tracker.results()
    assert list(df.columns) == METRIC_COLUMNS + ["task"]
    assert df[df.metric.str.startswith("probe")].task.isna().all()
    for split in ("train", "test"):
        for m in ("accuracy", "loss"):
            p = df[(df.metric == f"probe_{m}") & (df.split == split)].iloc[0]
            t = df[(df.metric == f"transfer_{m}") & (df.split == split) & (df.task == "labels")].iloc[0]
            assert t.value == pytest.approx(p.value, abs=1e-6)
            assert (t.ci_low, t.ci_high) == pytest.approx((p.ci_low, p.ci_high), abs=1e-6)
    parity = df[(df.task == "parity") & (df.metric == "transfer_accuracy")]
    assert set(parity.split) == {"train", "test"} and ((parity.ci_low <= parity.value) & (parity.value <= parity.ci_high)).all()
    # Per-sample correctness is kept, and survives a state_dict round trip.
    assert ext.correct["labels"]["features.2"][0].shape == (200,)
    other = TransferProbes([same, colourless], probe=probe)
    other.load_state_dict(ext.state_dict())
    np.testing.assert_array_equal(other.correct["parity"]["features.2"][0], ext.correct["parity"]["features.2"][0])


def test_validate_options():
    validate_options(TransferOptions(tasks=["colour"], keep_best=True, stop_on_increase=True))
    with pytest.raises(ConfigError, match="Unknown transfer task 'colur'"):
        validate_options(TransferOptions(tasks=["colur"]))
    with pytest.raises(ConfigError, match="stop_on_increase needs keep_best"):
        RunConfig.from_dict({"transfer": {"stop_on_increase": True}})


SMALL = dict(dataset="digits", model="mlp", width=0.25, iterations=32, fit_samples=400, test_samples=200,
             bootstrap=200, device="cpu")


def test_run_experiment_with_class_split_and_kept_features(tmp_path):
    cfg = RunConfig(**SMALL, transfer=TransferOptions(tasks=["class-split"], keep_best=True))
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    # The model was pre-trained on the first five classes only.
    assert res.status == "complete"
    conf = json.loads((res.out / "config.json").read_text())
    assert conf["data"]["num_classes"] == 5 and conf["data"]["class_split"]["transfer_classes"] == list("56789")
    assert conf["measurement"]["extensions"]["transfer"]["tasks"]["class-split"]["num_classes"] == 5
    info = json.loads((res.out / "phases.json").read_text())["transfer"]["tasks"]["class-split"]["info"]
    assert 0.2 <= info["majority_test_accuracy"] < 0.3  # five balanced classes
    df = read_metrics(res.out)
    tr = df[df.metric == "transfer_accuracy"]
    assert set(tr.task) == {"class-split"} and set(tr.split) == {"train", "test"}
    assert len(tr) == 2 * len(res.payload["checkpoints"])
    sec = json.loads((res.out / "phases.json").read_text())["transfer"]["tasks"]["class-split"]
    layer = next(iter(sec["layers"].values()))
    assert layer["reconstruction_minimum"]["iteration"] == res.payload["layers"]["features.3"]["min_iteration"]
    # best_features.pt holds the weights at the reconstruction minimum, loadable into the model.
    best = torch.load(res.out / "best_features.pt", weights_only=False)
    assert best["iteration"] == layer["reconstruction_minimum"]["iteration"] == res.payload["best_features"]["best_iteration"]
    model = build_model("mlp", (1, 8, 8), 5, 0.25)
    model.load_state_dict(best["state_dict"])
    assert (res.out / "curves.png").stat().st_size > 0


def test_cli_transfer_flags(tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["run", "--dataset", "digits", "--model", "mlp", "--width", "0.25",
                                 "--iterations", "16", "--fit-samples", "300", "--test-samples", "200",
                                 "--bootstrap", "100", "--device", "cpu", "--transfer", "class-split",
                                 "--stop-on-increase", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "transfer accuracy" in r.output and "best features" in r.output
    section = json.loads((out / "config.json").read_text())["config"]["transfer"]
    assert {k: section[k] for k in ("tasks", "keep_best", "stop_on_increase")} == {
        "tasks": ["class-split"], "keep_best": True, "stop_on_increase": True}
    bad = CliRunner().invoke(app, ["run", "--dataset", "digits", "--transfer", "colour", "--iterations", "2",
                                   "--out", str(tmp_path / "bad"), "-q"])
    assert bad.exit_code == 2 and "needs colour (RGB) images" in bad.output


def test_run_experiment_stops_when_the_keeper_says_so(tmp_path, monkeypatch):
    import phasescope.stopping as keeper_module

    def scripted(iterations, errors, **kw):  # stop at the third checkpoint, best at the second
        its = list(iterations)
        return keeper_module.Decision(len(its) >= 3, "scripted stop", len(its) == 2, its[min(1, len(its) - 1)])

    monkeypatch.setattr(keeper_module, "decide", scripted)
    cfg = RunConfig(**{**SMALL, "iterations": 64}, transfer=TransferOptions(keep_best=True, stop_on_increase=True))
    res = run_experiment(cfg, tmp_path / "stop", progress=False)
    assert res.status == "stopped" and res.payload["checkpoints"] == [0, 1, 2]
    assert res.payload["best_features"]["best_iteration"] == 1
    assert json.loads((res.out / "phases.json").read_text())["status"] == "stopped"
    assert torch.load(res.out / "best_features.pt", weights_only=False)["iteration"] == 1


def test_report_rebuilds_the_transfer_section_from_files(tmp_path):
    from phasescope.outputs.rebuild import rebuild

    cfg = RunConfig(**SMALL, transfer=TransferOptions(tasks=["class-split"]))
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    before = json.loads((res.out / "phases.json").read_text())
    stripped = {k: v for k, v in before.items() if k not in ("transfer", "samples")}
    (res.out / "phases.json").write_text(json.dumps(stripped))
    after = rebuild(res.out)

    def same(a, b):  # metrics.csv keeps 6 significant digits
        if isinstance(a, float) or isinstance(b, float):
            return a == pytest.approx(b, abs=1e-5)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b or isinstance(a, str) and a.split(":")[0] == b.split(":")[0]  # advice: same verdict

    assert same(after["transfer"], before["transfer"])
    assert after["samples"]["n"] == before["samples"]["n"]
